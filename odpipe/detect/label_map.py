"""The label map: class names to the integer ids the OD API trains on (ids start at 1)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from google.protobuf import text_format
from object_detection.protos import string_int_label_map_pb2


def class_ids(classes: Sequence[str]) -> dict[str, int]:
    """Ids in the configured order, from 1: id 0 is the OD API's implicit background."""
    if len(set(classes)) != len(classes):
        raise ValueError(f"dataset.classes has duplicates: {list(classes)}")
    return {name: index for index, name in enumerate(classes, start=1)}


def write_label_map(classes: Sequence[str], path: Path) -> None:
    """Write ``label_map.pbtxt`` through the OD API's own proto, so its reader accepts it."""
    label_map = string_int_label_map_pb2.StringIntLabelMap()
    for name, index in class_ids(classes).items():
        item = label_map.item.add()
        item.id = index
        item.name = name
        item.display_name = name
    path.write_text(text_format.MessageToString(label_map))


def read_label_map(path: Path) -> dict[int, str]:
    """Ids to names, as the evaluation and inference code needs them."""
    label_map = string_int_label_map_pb2.StringIntLabelMap()
    text_format.Parse(path.read_text(), label_map)
    return {item.id: item.name for item in label_map.item}
