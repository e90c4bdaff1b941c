from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pytest

from odpipe.annotations import Annotation, Box
from odpipe.cleaning import Sample
from odpipe.files import read_jsonl
from odpipe.split_files import SplitFiles
from odpipe.splitting import (
    SPLITS,
    group_key,
    group_pattern_matches,
    missing_classes,
    pins_from_lists,
    split_images,
)

RATIOS = {"train": 0.7, "val": 0.15, "test": 0.15}


def _hashes(n: int, prefix: str = "img") -> dict[str, str]:
    return {f"{prefix}_{i}.jpg": hashlib.sha256(f"{prefix}{i}".encode()).hexdigest() for i in range(n)}


def _video_frames(videos: int, frames: int, folder: str = "") -> dict[str, str]:
    return {
        f"{folder}video{v}_frame{f:03d}.jpg": hashlib.sha256(f"{v}{f}".encode()).hexdigest()
        for v in range(videos)
        for f in range(frames)
    }


def _where(splits: dict[str, list[str]]) -> dict[str, str]:
    return {n: s for s, names in splits.items() for n in names}


def test_split_is_deterministic_and_near_the_ratios() -> None:
    first = split_images(_hashes(1000), {}, RATIOS, seed=1)
    assert first == split_images(_hashes(1000), {}, RATIOS, seed=1)
    assert first != split_images(_hashes(1000), {}, RATIOS, seed=2)
    assert sorted(sum(first.values(), [])) == sorted(_hashes(1000))
    for name in SPLITS:
        assert abs(len(first[name]) / 1000 - RATIOS[name]) < 0.05


def test_adding_images_never_moves_an_existing_one() -> None:
    before = split_images(_hashes(200), {}, RATIOS, seed=0)
    after = split_images({**_hashes(200), **_hashes(100, "new")}, {}, RATIOS, seed=0)
    for name in SPLITS:
        assert set(before[name]) <= set(after[name])


def test_identical_content_lands_in_the_same_split() -> None:
    hashes = _hashes(50)
    hashes["copy_of_img_7.jpg"] = hashes["img_7.jpg"]
    where = _where(split_images(hashes, {}, RATIOS, seed=0))
    assert where["copy_of_img_7.jpg"] == where["img_7.jpg"]


def test_groups_never_straddle_splits() -> None:
    hashes = _video_frames(12, 20)
    where = _where(split_images(hashes, {}, RATIOS, seed=0, group_pattern=r"^(video\d+)_"))
    for v in range(12):
        assert len({where[f"video{v}_frame{f:03d}.jpg"] for f in range(20)}) == 1
    assert len(set(where.values())) == 3


def test_group_pattern_is_matched_against_the_file_name_not_the_folder() -> None:
    hashes = _video_frames(12, 20, folder="JPEGImages/")
    assert group_key("JPEGImages/video3_frame001.jpg", "abc", r"^(video\d+)_") == "name:video3"
    where = _where(split_images(hashes, {}, RATIOS, seed=0, group_pattern=r"^(video\d+)_"))
    for v in range(12):
        assert len({where[f"JPEGImages/video{v}_frame{f:03d}.jpg"] for f in range(20)}) == 1


def test_group_pattern_matches_counts_file_names() -> None:
    names = ["JPEGImages/video1_0001.jpg", "JPEGImages/video1_0002.jpg", "JPEGImages/still.jpg"]
    assert group_pattern_matches(names, r"^(video\d+)_") == 2
    assert group_pattern_matches(names, None) == 0
    assert group_pattern_matches([], r"^(video\d+)_") == 0


def test_a_group_pattern_that_matches_nothing_is_a_clear_error() -> None:
    hashes = _video_frames(3, 5, folder="JPEGImages/")
    with pytest.raises(ValueError) as error:
        split_images(hashes, {}, RATIOS, seed=0, group_pattern=r"^clip(\d+)_")
    message = str(error.value)
    assert "'^clip(\\d+)_'" in message and "15 images" in message
    assert "file names" in message and "'video0_frame000.jpg'" in message
    with pytest.raises(ValueError, match="not a valid regex"):
        group_pattern_matches(hashes, "video(")


def test_labels_never_move_an_image_and_missing_classes_are_reported() -> None:
    hashes = _hashes(40)
    labels = {name: ["common"] for name in hashes}
    labels["img_1.jpg"] = ["common", "rare"]
    splits = split_images(hashes, labels, RATIOS, seed=0)
    assert splits == split_images(hashes, {}, RATIOS, seed=0)
    rare_split = _where(splits)["img_1.jpg"]
    assert missing_classes(*_counts(splits, labels)) == {s: ["rare"] for s in SPLITS if s != rare_split}
    assert missing_classes(*_counts(splits, {name: ["common"] for name in hashes})) == {}


def test_missing_classes_ignores_empty_splits() -> None:
    splits = {"train": ["a.jpg", "b.jpg"], "val": ["c.jpg"], "test": []}
    labels = {"a.jpg": ["cat"], "b.jpg": ["dog"], "c.jpg": ["cat"]}
    assert missing_classes(*_counts(splits, labels)) == {"val": ["dog"]}


def _counts(splits: dict[str, list[str]], labels: dict[str, list[str]]) -> tuple[dict, dict]:
    """Boxes per class and images of each split, as the report tallies them."""
    per_class = {s: Counter(c for n in names for c in labels[n]) for s, names in splits.items()}
    return per_class, {s: len(names) for s, names in splits.items()}


def test_predefined_lists_pin_images_and_trainval_is_divided() -> None:
    hashes = _hashes(100)
    lists = {n: ("test" if i < 20 else "trainval") for i, n in enumerate(sorted(hashes))}
    pins = pins_from_lists(lists, hashes, RATIOS, seed=0)
    splits = split_images(hashes, {}, RATIOS, seed=0, fixed=pins)
    assert set(splits["test"]) == {n for n, s in lists.items() if s == "test"}
    assert splits["train"] and splits["val"]


def test_a_video_listed_in_trainval_is_pinned_whole() -> None:
    hashes = _video_frames(12, 20, folder="JPEGImages/")
    ratios = {"train": 0.8, "val": 0.2, "test": 0.0}
    pins = pins_from_lists(dict.fromkeys(hashes, "trainval"), hashes, ratios, seed=0, group_pattern=r"^(video\d+)_")
    where = _where(split_images(hashes, {}, ratios, seed=0, group_pattern=r"^(video\d+)_", fixed=pins))
    for v in range(12):
        assert len({where[f"JPEGImages/video{v}_frame{f:03d}.jpg"] for f in range(20)}) == 1
    assert set(where.values()) == {"train", "val"}


def test_bad_ratios_and_empty_splits_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="ratios"):
        split_images(_hashes(10), {}, {"train": 1.0, "val": -0.1, "test": 0.1}, seed=0)
    with pytest.raises(ValueError, match="came out empty"):
        split_images(_hashes(2), {}, RATIOS, seed=0)


@pytest.mark.parametrize("pattern", [None, r"^(video\d+)_"])
def test_split_files_write_what_split_images_decides(tmp_path: Path, pattern: str | None) -> None:
    """Samples added one at a time (in any order) land where ``split_images`` puts them, each
    file in name order, including groups pinned by a list through a frame added last."""
    hashes = {**_video_frames(12, 5), **_hashes(30)}
    lists = {f"video{v}_frame004.jpg": ("test" if v % 3 == 0 else "trainval") for v in range(12) if v % 3 != 2}
    lists |= {f"img_{i}.jpg": "val" for i in range(5)}
    files = SplitFiles(lists, RATIOS, 7, pattern)
    for name in sorted(hashes, reverse=True):
        files.add(Sample(name, Annotation(name, 10, 10, (Box("cat", 1, 1, 5, 5),)), hashes[name], name))
    tally = files.write(tmp_path)
    expected = split_images(hashes, {}, RATIOS, 7, pattern, pins_from_lists(lists, hashes, RATIOS, 7, pattern))
    for split, names in expected.items():
        assert [row["filename"] for row in read_jsonl(tmp_path / f"{split}.jsonl")] == names
        assert tally.images[split] == len(names) == tally.boxes_per_class[split]["cat"]
    assert tally.group_pattern_matches == (60 if pattern else 0)
    assert [a.filename for a in files.first(2)] == sorted(hashes, reverse=True)[:2]


def test_split_files_refuse_a_group_pinned_to_two_splits(tmp_path: Path) -> None:
    hashes = _video_frames(2, 3)
    files = SplitFiles({"video1_frame000.jpg": "test", "video1_frame002.jpg": "val"}, RATIOS, 0, r"^(video\d+)_")
    for name in hashes:
        files.add(Sample(name, Annotation(name, 10, 10), hashes[name], name))
    with pytest.raises(ValueError, match=r"group name:video1 are pinned to different splits \['test', 'val'\]"):
        files.write(tmp_path)
