"""Whatever the input boxes, what reaches the CSV is inside the image and non-empty, and what
reaches the TFRecord is normalised into [0, 1]; whatever the images, splits keep groups whole,
are deterministic, and never move an image when others are added."""

from __future__ import annotations

import hashlib

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from odpipe.core.boxes import Box
from odpipe.data.annotations import Annotation
from odpipe.data.splitting import SPLITS, group_key, pins_from_lists, split_images
from odpipe.detect.clean import ClassRules, clean_boxes, fit_to_image
from odpipe.detect.records import ImageBoxes, make_example

coordinate = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False)
boxes = st.lists(st.tuples(coordinate, coordinate, coordinate, coordinate), max_size=8)
sides = st.integers(min_value=1, max_value=4096)
RULES = ClassRules(["thing"])
TINY_JPEG = bytes.fromhex("ffd8ffe000104a46494600010100000100010000ffd9")


@given(boxes=boxes, width=sides, height=sides, claimed=st.one_of(st.integers(1, 4), st.tuples(sides, sides)))
def test_cleaned_boxes_are_inside_and_non_empty(boxes, width, height, claimed) -> None:
    """``claimed``: the annotation's size, a multiple of the real one (made on a resized copy) or any."""
    size = (width * claimed, height * claimed) if isinstance(claimed, int) else claimed
    annotation = Annotation("x.jpg", *size, tuple(Box("thing", *b) for b in boxes))
    fitted, _ = fit_to_image(annotation, width, height)
    assume(fitted is not None)  # aspect ratios differ: the image is dropped, nothing reaches the CSV
    cleaned, _ = clean_boxes(fitted, RULES, drop_difficult=False)
    assert (cleaned.width, cleaned.height) == (width, height)
    for box in cleaned.boxes:
        assert 0 <= box.xmin < box.xmax <= width
        assert 0 <= box.ymin < box.ymax <= height


@given(boxes=boxes, width=sides, height=sides)
def test_tfrecord_coordinates_are_normalised(boxes, width, height) -> None:
    annotation = Annotation("x.jpg", width, height, tuple(Box("thing", *b) for b in boxes))
    cleaned, _ = clean_boxes(annotation, RULES, drop_difficult=False)
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


PATTERN = r"^(video\d+)_"
RATIOS = st.sampled_from(
    [
        {"train": 0.7, "val": 0.15, "test": 0.15},
        {"train": 0.5, "val": 0.25, "test": 0.25},
        {"train": 0.8, "val": 0.2, "test": 0.0},
    ]
)
LISTED = st.sampled_from([None, None, "test", "trainval"])


@st.composite
def images(draw, start: int, videos: int, contents: int, classes: tuple[str, ...], min_size: int = 0):
    """Image names, content hashes and labels in a VOC layout: frames
    ``JPEGImages/video{v}_{i}.jpg`` (grouped by PATTERN) and stills ``JPEGImages/img{i}.jpg``
    whose content may repeat (grouped by content); numbering from ``start`` keeps names new."""
    labels = st.lists(st.sampled_from(classes), max_size=3)
    frames = draw(st.lists(st.tuples(st.integers(0, videos - 1), labels), min_size=min_size, max_size=25))
    stills = draw(st.lists(st.tuples(st.integers(0, contents - 1), labels), min_size=min_size, max_size=25))
    hashes: dict[str, str] = {}
    image_labels: dict[str, list[str]] = {}
    for i, (video, classes_) in enumerate(frames, start):
        name = f"JPEGImages/video{video}_{i:04d}.jpg"
        hashes[name], image_labels[name] = hashlib.sha256(name.encode()).hexdigest(), classes_
    for i, (content, classes_) in enumerate(stills, start):
        name = f"JPEGImages/img{i}.jpg"
        hashes[name], image_labels[name] = hashlib.sha256(f"still {content}".encode()).hexdigest(), classes_
    return hashes, image_labels


@st.composite
def growing_datasets(draw):
    """A dataset with some groups listed in VOC ImageSets, and unlisted images added to it
    later: frames of old and new videos, copies of old stills and new ones, and a new class."""
    hashes, labels = draw(images(0, videos=6, contents=20, classes=("car", "dog", "person"), min_size=8))
    listed_groups = {}
    for name in sorted(hashes):
        key = group_key(name, hashes[name], PATTERN)
        listed_groups.setdefault(key, draw(LISTED))
    lists = {n: listed_groups[group_key(n, h, PATTERN)] for n, h in hashes.items()}
    added = draw(images(1000, videos=10, contents=30, classes=("car", "dog", "person", "bicycle")))
    return hashes, labels, {n: s for n, s in lists.items() if s}, added


def _split(hashes, labels, lists, ratios, seed):
    """The stage's split, or a rejected example when a split comes out empty (too few groups)."""
    pins = pins_from_lists(lists, hashes, ratios, seed, PATTERN)
    try:
        return split_images(hashes, labels, ratios, seed, PATTERN, pins)
    except ValueError as error:
        assume("came out empty" not in str(error))
        raise


@settings(max_examples=150, deadline=None)
@given(data=growing_datasets(), ratios=RATIOS, seed=st.integers(0, 2**32))
def test_splits_keep_groups_whole_and_never_move_an_image_when_others_are_added(data, ratios, seed) -> None:
    hashes, labels, lists, (new_hashes, new_labels) = data
    all_hashes = {**hashes, **new_hashes}
    before = _split(hashes, labels, lists, ratios, seed)
    after = _split(all_hashes, {**labels, **new_labels}, lists, ratios, seed)
    where_before = {n: s for s, names in before.items() for n in names}
    where_after = {n: s for s, names in after.items() for n in names}
    assert sorted(where_before) == sorted(hashes)
    assert {n: where_after[n] for n in hashes} == where_before
    group_splits: dict[str, set[str]] = {}
    for name, split in where_after.items():
        group_splits.setdefault(group_key(name, all_hashes[name], PATTERN), set()).add(split)
    assert all(len(splits) == 1 for splits in group_splits.values())
    assert all(where_before[n] == s for n, s in lists.items() if s != "trainval")


@settings(max_examples=100, deadline=None)
@given(data=images(0, videos=6, contents=20, classes=("car", "dog"), min_size=8), seed=st.integers(0, 2**32))
def test_splits_are_deterministic_whatever_the_order_of_the_images(data, seed) -> None:
    hashes, labels = data
    ratios = {"train": 0.7, "val": 0.15, "test": 0.15}
    first = _split(hashes, labels, {}, ratios, seed)
    assert first == _split(dict(reversed(hashes.items())), labels, {}, ratios, seed)
    assert sorted(n for s in SPLITS for n in first[s]) == sorted(hashes)
