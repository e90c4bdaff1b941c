"""Annotation records, the Pascal VOC XML format that LabelImg reads and writes, and COCO JSON.

Every source format parses into :class:`Annotation`, so the later stages (CSV, TFRecord,
evaluation) only ever see one shape of data.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from xml.etree import ElementTree as ET

from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeET

from odpipe.core.boxes import Box


class AnnotationError(ValueError):
    """An annotation file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Annotation:
    """All the boxes of one image, with the image size the annotation claims."""

    filename: str
    width: int
    height: int
    boxes: tuple[Box, ...] = field(default_factory=tuple)


def _text(element: ET.Element, tag: str, source: Path) -> str:
    found = element.find(tag)
    if found is None or found.text is None or not found.text.strip():
        raise AnnotationError(f"{source}: missing <{tag}>")
    return found.text.strip()


def _number(element: ET.Element, tag: str, source: Path) -> float:
    raw = _text(element, tag, source)
    try:
        return float(raw)
    except ValueError as err:
        raise AnnotationError(f"{source}: <{tag}> is not a number: {raw!r}") from err


def _flag(element: ET.Element, tag: str) -> bool:
    found = element.find(tag)
    return found is not None and (found.text or "").strip() in {"1", "true", "True"}


def _size(size: ET.Element | None, tag: str, source: Path) -> int:
    """A side of ``<size>``; 0 (unknown) when LabelImg left it out or empty."""
    if size is None or not (size.findtext(tag) or "").strip():
        return 0
    return int(_number(size, tag, source))


def read_voc(path: Path) -> Annotation:
    """Parse one Pascal VOC XML file.

    VOC numbers pixels from 1 (the devkit's convention, kept by LabelImg, which never writes a
    0): ``xmin``/``ymin`` are shifted by one to odpipe's 0-based pixel edges, ``xmax``/``ymax``
    are the right and bottom edges already. A missing ``<size>`` (or 0x0) gives size 0: the
    image's own size is used. An object with an empty ``<name>`` keeps an empty label, for
    cleaning to drop and report. defusedxml refuses entity expansion and external entities, so a hostile or broken file
    fails with an :class:`AnnotationError` instead of exhausting memory.
    """
    try:
        root = SafeET.parse(path).getroot()
    except (ET.ParseError, DefusedXmlException, OSError) as err:
        raise AnnotationError(f"{path}: not a readable VOC XML file ({err})") from err
    size = root.find("size")
    boxes = []
    for obj in root.iter("object"):
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise AnnotationError(f"{path}: <object> without <bndbox>")
        boxes.append(
            Box(
                label=(obj.findtext("name") or "").strip(),
                xmin=_number(bndbox, "xmin", path) - 1,
                ymin=_number(bndbox, "ymin", path) - 1,
                xmax=_number(bndbox, "xmax", path),
                ymax=_number(bndbox, "ymax", path),
                difficult=_flag(obj, "difficult"),
                truncated=_flag(obj, "truncated"),
            )
        )
    return Annotation(
        filename=_text(root, "filename", path),
        width=_size(size, "width", path),
        height=_size(size, "height", path),
        boxes=tuple(boxes),
    )


def write_voc(annotation: Annotation, path: Path) -> None:
    """Write an annotation the way LabelImg saves it (1-based, see :func:`read_voc`), so users
    can open it there."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = path.parent.name
    ET.SubElement(root, "filename").text = annotation.filename
    ET.SubElement(root, "path").text = annotation.filename
    ET.SubElement(ET.SubElement(root, "source"), "database").text = "Unknown"
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(annotation.width)
    ET.SubElement(size, "height").text = str(annotation.height)
    ET.SubElement(size, "depth").text = "3"
    ET.SubElement(root, "segmented").text = "0"
    for box in annotation.boxes:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = box.label
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = str(int(box.truncated))
        ET.SubElement(obj, "difficult").text = str(int(box.difficult))
        bndbox = ET.SubElement(obj, "bndbox")
        for tag, one_based in (("xmin", 1), ("ymin", 1), ("xmax", 0), ("ymax", 0)):
            ET.SubElement(bndbox, tag).text = str(round(getattr(box, tag)) + one_based)
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=False)


def write_coco(
    annotations: Sequence[Annotation],
    categories: Mapping[int, str],
    path: Path,
    scores: Sequence[Sequence[float]] | None = None,
) -> None:
    """One COCO detection JSON for the images (``file_name`` relative to ``path``'s folder,
    ``bbox`` x, y, width, height in 0-based pixels), with the label map's ids as category ids
    so a model's class ids survive the round trip. ``scores`` (one per box, for predictions)
    are written as each annotation's ``score``, which COCO tools read as a confidence."""
    ids = {name: class_id for class_id, name in categories.items()}
    images, boxes = [], []
    for image_id, annotation in enumerate(annotations, start=1):
        images.append(
            {"id": image_id, "file_name": annotation.filename, "width": annotation.width, "height": annotation.height}
        )
        for k, box in enumerate(annotation.boxes):
            width, height = box.xmax - box.xmin, box.ymax - box.ymin
            entry = {
                "id": len(boxes) + 1,
                "image_id": image_id,
                "category_id": ids[box.label],
                "bbox": [box.xmin, box.ymin, width, height],
                "area": width * height,
                "iscrowd": int(box.crowd),
            }
            boxes.append(entry | ({"score": scores[image_id - 1][k]} if scores is not None else {}))
    document = {
        "images": images,
        "annotations": boxes,
        "categories": [{"id": i, "name": name} for i, name in sorted(categories.items())],
    }
    path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")


CSV_COLUMNS = (
    "filename",
    "width",
    "height",
    "xmin",
    "ymin",
    "xmax",
    "ymax",
    "class",
    "class_id",
    "difficult",
    "truncated",
    "iscrowd",
)


def to_csv_rows(annotations: Iterable[Annotation], ids: dict[str, int]) -> Iterator[dict]:
    """One row per box, the layout the OD API tutorials' CSV-to-TFRecord scripts expect (plus
    VOC's difficult and truncated flags). An image without boxes (a negative) gets one row
    with the box columns empty, so it still reaches the TFRecords. Rows are produced one at a
    time, so a large split is never held whole."""
    for ann in annotations:
        image = {"filename": ann.filename, "width": ann.width, "height": ann.height}
        if not ann.boxes:
            yield image
        for box in ann.boxes:
            yield (
                {
                    **image,
                    "xmin": box.xmin,
                    "ymin": box.ymin,
                    "xmax": box.xmax,
                    "ymax": box.ymax,
                    "class": box.label,
                    "class_id": ids[box.label],
                    "difficult": int(box.difficult),
                    "truncated": int(box.truncated),
                    "iscrowd": int(box.crowd),
                }
            )


def trainable(annotation: Annotation) -> Annotation:
    """The boxes a model learns from: a crowd region is not one object to detect (COCO trains
    without them); evaluation keeps them, as regions to ignore."""
    return replace(annotation, boxes=tuple(b for b in annotation.boxes if not b.crowd))


def annotation_to_dict(annotation: Annotation) -> dict:
    return asdict(annotation)


def annotation_from_dict(data: dict) -> Annotation:
    return Annotation(
        filename=data["filename"],
        width=int(data["width"]),
        height=int(data["height"]),
        boxes=tuple(Box(**box) for box in data["boxes"]),
    )
