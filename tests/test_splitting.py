from __future__ import annotations

import hashlib

import pytest

from odpipe.splitting import SPLITS, split_by_hash

RATIOS = {"train": 0.7, "val": 0.15, "test": 0.15}


def _hashes(n: int) -> dict[str, str]:
    return {f"img_{i}.jpg": hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)}


def test_split_is_deterministic_and_near_the_ratios() -> None:
    first = split_by_hash(_hashes(1000), RATIOS, seed=1)
    assert first == split_by_hash(_hashes(1000), RATIOS, seed=1)
    assert first != split_by_hash(_hashes(1000), RATIOS, seed=2)
    assert sorted(sum(first.values(), [])) == sorted(_hashes(1000))
    for name in SPLITS:
        assert abs(len(first[name]) / 1000 - RATIOS[name]) < 0.05


def test_adding_images_never_moves_an_existing_one() -> None:
    before = split_by_hash(_hashes(200), RATIOS, seed=0)
    after = split_by_hash(_hashes(300), RATIOS, seed=0)
    for name in SPLITS:
        assert set(before[name]) <= set(after[name])


def test_identical_content_lands_in_the_same_split() -> None:
    hashes = _hashes(50)
    hashes["copy_of_img_7.jpg"] = hashes["img_7.jpg"]
    splits = split_by_hash(hashes, RATIOS, seed=0)
    where = {n: s for s, names in splits.items() for n in names}
    assert where["copy_of_img_7.jpg"] == where["img_7.jpg"]


def test_bad_ratios_and_empty_splits_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="ratios"):
        split_by_hash(_hashes(10), {"train": 1.0, "val": -0.1, "test": 0.1}, seed=0)
    with pytest.raises(ValueError, match="came out empty"):
        split_by_hash(_hashes(2), RATIOS, seed=0)
