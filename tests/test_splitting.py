from __future__ import annotations

import hashlib

import pytest

from odpipe.splitting import SPLITS, pins_from_lists, split_images

RATIOS = {"train": 0.7, "val": 0.15, "test": 0.15}


def _hashes(n: int, prefix: str = "img") -> dict[str, str]:
    return {f"{prefix}_{i}.jpg": hashlib.sha256(f"{prefix}{i}".encode()).hexdigest() for i in range(n)}


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
    hashes = {
        f"video{v}_frame{f:03d}.jpg": hashlib.sha256(f"{v}{f}".encode()).hexdigest()
        for v in range(12)
        for f in range(20)
    }
    where = _where(split_images(hashes, {}, RATIOS, seed=0, group_pattern=r"^(video\d+)_"))
    for v in range(12):
        assert len({where[f"video{v}_frame{f:03d}.jpg"] for f in range(20)}) == 1
    assert len(set(where.values())) == 3


def test_every_class_reaches_every_split_where_the_data_allows() -> None:
    hashes = _hashes(40)
    labels = {name: ["common"] for name in hashes}
    rare = ["img_1.jpg", "img_2.jpg", "img_3.jpg"]
    for name in rare:
        labels[name] = ["common", "rare"]
    splits = split_images(hashes, labels, RATIOS, seed=0)
    for split in SPLITS:
        assert any(n in splits[split] for n in rare), f"no 'rare' image in {split}"
    assert splits == split_images(hashes, labels, RATIOS, seed=0)


def test_predefined_lists_pin_images_and_trainval_is_divided() -> None:
    hashes = _hashes(100)
    lists = {n: ("test" if i < 20 else "trainval") for i, n in enumerate(sorted(hashes))}
    pins = pins_from_lists(lists, hashes, RATIOS, seed=0)
    splits = split_images(hashes, {}, RATIOS, seed=0, fixed=pins)
    assert set(splits["test"]) == {n for n, s in lists.items() if s == "test"}
    assert splits["train"] and splits["val"]


def test_bad_ratios_and_empty_splits_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="ratios"):
        split_images(_hashes(10), {}, {"train": 1.0, "val": -0.1, "test": 0.1}, seed=0)
    with pytest.raises(ValueError, match="came out empty"):
        split_images(_hashes(2), {}, RATIOS, seed=0)
