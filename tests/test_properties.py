"""Whatever the input boxes, what reaches the CSV is inside the image and non-empty, and what
reaches the TFRecord is normalised into [0, 1]."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from odpipe.annotations import Annotation, Box
from odpipe.cleaning import ClassRules, clean_boxes
from odpipe.tfrecord import ImageBoxes, make_example

coordinate = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False)
boxes = st.lists(st.tuples(coordinate, coordinate, coordinate, coordinate), max_size=8)
sides = st.integers(min_value=1, max_value=4096)
RULES = ClassRules(["thing"])
TINY_JPEG = bytes.fromhex("ffd8ffe000104a46494600010100000100010000ffd9")


@given(boxes=boxes, width=sides, height=sides, claimed=st.tuples(sides, sides))
def test_cleaned_boxes_are_inside_and_non_empty(boxes, width, height, claimed) -> None:
    annotation = Annotation("x.jpg", *claimed, tuple(Box("thing", *b) for b in boxes))
    cleaned, _ = clean_boxes(annotation, width, height, RULES, drop_difficult=False)
    assert (cleaned.width, cleaned.height) == (width, height)
    for box in cleaned.boxes:
        assert 0 <= box.xmin < box.xmax <= width
        assert 0 <= box.ymin < box.ymax <= height


@given(boxes=boxes, width=sides, height=sides)
def test_tfrecord_coordinates_are_normalised(boxes, width, height) -> None:
    annotation = Annotation("x.jpg", width, height, tuple(Box("thing", *b) for b in boxes))
    cleaned, _ = clean_boxes(annotation, width, height, RULES, drop_difficult=False)
    record = ImageBoxes(
        "x.jpg",
        width,
        height,
        tuple((b.xmin, b.ymin, b.xmax, b.ymax) for b in cleaned.boxes),
        tuple(1 for _ in cleaned.boxes),
        tuple("thing" for _ in cleaned.boxes),
    )
    feature = make_example(record, TINY_JPEG).features.feature
    for key in ("xmin", "ymin", "xmax", "ymax"):
        values = feature[f"image/object/bbox/{key}"].float_list.value
        assert len(values) == len(cleaned.boxes)
        assert all(0.0 <= v <= 1.0 for v in values)
