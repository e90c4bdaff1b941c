"""The segment task's clean_split engine over one small VOC folder holding every kind of pair:
each image ends up in one split's CSV or dropped with one reason, the written masks are the
source ids (unknown values void), the report counts what was written, and the outputs are the
same bytes for any number of workers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from odpipe.data.index_masks import VOID, decode_png
from odpipe.data.splitting import SPLITS
from odpipe.segment.clean import (
    MaskCleanResult,
    Row,
    clean_masks,
    mask_name,
    read_rows,
    report,
    split_rows,
    write_splits,
)
from odpipe.segment.formats import read_mask_dataset
from tests.helpers.masks import palette_mask, save

W, H = 24, 16
NAMES = ("background", "cat", "dog", "bird")
OPTIONS = {"classes": list(NAMES)}
RATIOS = {"train": 0.6, "val": 0.2, "test": 0.2}
SEED = 0
SCENES = r"^(s\d+)_"  # s03_a.jpg and s03_b.jpg: two frames of scene s03
IMAGES, MASKS = "VOC2012/JPEGImages", "VOC2012/SegmentationClass"
UNKNOWN = 9  # a palette index that none of NAMES has
EXIF_ORIENTATION, TURNED_90 = 0x0112, 6
FRAMES = 12
DROPPED = {
    f"{IMAGES}/s01_a_copy.jpg": "duplicate",  # sorts after s01_a.jpg, whose bytes it holds
    f"{IMAGES}/lonely.jpg": "mask_missing",
    f"{IMAGES}/narrow.jpg": "size_mismatch",
}
ORPHAN = f"{MASKS}/ghost.png"


def frame(i: int) -> str:
    return f"{IMAGES}/s{i // 2:02d}_{'ab'[i % 2]}.jpg"


def scene_ids(i: int) -> np.ndarray:
    """Background with one or two class rectangles (which ones varies, so that the split has
    strata to keep) and, on every third mask, a void column."""
    ids = np.zeros((H, W), np.uint8)
    ids[2:10, 3:12] = 1 + i % 3
    if i % 2:
        ids[8:15, 12:22] = 1 + (i + 1) % 3
    if i % 3 == 0:
        ids[:, 0] = VOID
    return ids


def write_image(path: Path, seed: int, size: tuple[int, int] = (W, H)) -> None:
    """Noise of its own seed, so that no two images share content by accident."""
    save(Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)), path)


def write_pair(root: Path, image: str, ids: np.ndarray, seed: int) -> None:
    write_image(root / image, seed)
    save(palette_mask(ids), root / MASKS / f"{Path(image).stem}.png")


def write_dataset(root: Path) -> dict[str, np.ndarray]:
    """Twelve good frames and one of each problem; returns the ids each kept image's mask must
    have once cleaned."""
    kept = {}
    for i in range(FRAMES):
        write_pair(root, frame(i), scene_ids(i), i)
        kept[frame(i)] = scene_ids(i)
    (root / f"{IMAGES}/s01_a_copy.jpg").write_bytes((root / frame(2)).read_bytes())
    save(palette_mask(scene_ids(2)), root / f"{MASKS}/s01_a_copy.png")
    write_image(root / f"{IMAGES}/lonely.jpg", 100)
    save(palette_mask(scene_ids(1)), root / ORPHAN)
    write_image(root / f"{IMAGES}/narrow.jpg", 101)
    save(palette_mask(scene_ids(1)[:, :20]), root / f"{MASKS}/narrow.png")
    odd = scene_ids(4)
    odd[12:16, 0:6] = UNKNOWN
    write_pair(root, f"{IMAGES}/odd.jpg", odd, 102)
    kept[f"{IMAGES}/odd.jpg"] = np.where(odd == UNKNOWN, VOID, odd)
    write_pair(root, f"{IMAGES}/void.jpg", np.full((H, W), VOID, np.uint8), 103)
    kept[f"{IMAGES}/void.jpg"] = np.full((H, W), VOID, np.uint8)
    return kept


def clean(root: Path, out: Path, workers: int) -> tuple[MaskCleanResult, dict[str, list[int]]]:
    """clean_split as the stage runs it, without pinned splits or groups."""
    dataset = read_mask_dataset(root, "voc", OPTIONS)
    result = clean_masks(
        root, out / "images", out / "masks", dataset=dataset, options=OPTIONS, max_pixels=None, workers=workers
    )
    by_split = split_rows(result, {}, RATIOS, SEED, None)
    write_splits(result, by_split, out / "splits")
    return result, by_split


@dataclass(frozen=True)
class Cleaned:
    """The dataset, what one worker made of it, and the ids each kept mask must hold."""

    root: Path
    out: Path
    expected: dict[str, np.ndarray]
    result: MaskCleanResult
    by_split: dict[str, list[int]]

    def rows(self, split: str) -> list[Row]:
        return read_rows(self.out / "splits" / f"{split}.csv")

    def mask(self, row: Row) -> np.ndarray:
        return decode_png((self.out / "masks" / row.mask).read_bytes())


@pytest.fixture(scope="module")
def cleaned(tmp_path_factory: pytest.TempPathFactory) -> Cleaned:
    root = tmp_path_factory.mktemp("voc")
    expected = write_dataset(root)
    out = tmp_path_factory.mktemp("w1")
    return Cleaned(root, out, expected, *clean(root, out, 1))


def test_every_image_is_in_one_split_or_dropped_once(cleaned: Cleaned) -> None:
    images_in = sorted(p.relative_to(cleaned.root).as_posix() for p in (cleaned.root / IMAGES).iterdir())
    listed = [row.image for split in SPLITS for row in cleaned.rows(split)]
    dropped = [(issue.file, issue.reason) for issue in cleaned.result.dropped]
    with_image = dict(d for d in dropped if d[1] != "image_missing")
    assert sorted(listed) == sorted(cleaned.expected)
    assert len(set(listed)) == len(listed)
    assert with_image == DROPPED and len(with_image) == len(dropped) - 1
    assert sorted([*listed, *with_image]) == images_in
    (orphan,) = [issue for issue in cleaned.result.dropped if issue.reason == "image_missing"]
    assert ORPHAN in orphan.detail
    duplicate = next(issue for issue in cleaned.result.dropped if issue.reason == "duplicate")
    assert frame(2) in duplicate.detail


def test_orphan_mask_is_filed_under_its_path(cleaned: Cleaned) -> None:
    """As detection files an annotation without its image under the annotation's path."""
    (orphan,) = [issue for issue in cleaned.result.dropped if issue.reason == "image_missing"]
    assert orphan.file == ORPHAN


def test_kept_pairs_are_written_as_listed(cleaned: Cleaned) -> None:
    """Each split's CSV holds its rows in input order; each image is copied as it is and its
    mask written as the source ids, an unknown value void."""
    for split in SPLITS:
        rows = cleaned.rows(split)
        assert rows == [cleaned.result.rows[i] for i in cleaned.by_split[split]]
        assert cleaned.by_split[split] == sorted(cleaned.by_split[split])
        for row in rows:
            ids = cleaned.expected[row.image]
            classes = tuple(int(c) for c in np.unique(ids) if c != VOID)
            assert row == Row(row.image, mask_name(row.image), W, H, classes)
            assert (cleaned.out / "images" / row.image).read_bytes() == (cleaned.root / row.image).read_bytes()
            np.testing.assert_array_equal(cleaned.mask(row), ids)


def test_unknown_value_is_void_and_noted(cleaned: Cleaned) -> None:
    notes = {issue.file: issue for issue in cleaned.result.notes}
    assert {file: issue.reason for file, issue in notes.items()} == {
        f"{IMAGES}/odd.jpg": "unknown_mask_values",
        f"{IMAGES}/void.jpg": "empty_mask",
    }
    assert f"{UNKNOWN}: 24 px" in notes[f"{IMAGES}/odd.jpg"].detail
    odd = next(row for row in cleaned.result.rows if row.image == f"{IMAGES}/odd.jpg")
    assert (cleaned.mask(odd)[12:16, 0:6] == VOID).all() and UNKNOWN not in odd.classes
    void = next(row for row in cleaned.result.rows if row.image == f"{IMAGES}/void.jpg")
    assert void.classes == ()


def test_report_counts_what_was_written(cleaned: Cleaned) -> None:
    summary = report(cleaned.result, cleaned.by_split, NAMES, "voc")
    kept = len(cleaned.expected)
    assert (summary["images_in"], summary["kept"], summary["dropped"]) == (kept + len(DROPPED), kept, 4)
    assert summary["dropped_by_reason"] == {
        "duplicate": 1,
        "image_missing": 1,
        "mask_missing": 1,
        "size_mismatch": 1,
    }
    assert summary["notes_by_reason"] == {"empty_mask": 1, "unknown_mask_values": 1}
    total = 0
    for split in SPLITS:
        rows = cleaned.rows(split)
        counts = sum((np.bincount(cleaned.mask(r).ravel(), minlength=VOID + 1) for r in rows), np.zeros(VOID + 1))
        counted = summary["splits"][split]
        assert counted["images"] == len(rows) > 0
        assert counted["pixels"] == {name: int(counts[i]) for i, name in enumerate(NAMES)}
        assert counted["void_pixels"] == int(counts[VOID])
        assert counted["images_with"] == {name: sum(i in r.classes for r in rows) for i, name in enumerate(NAMES)}
        total += sum(counted["pixels"].values()) + counted["void_pixels"]
        lacking = [name for name, images in counted["images_with"].items() if not images]
        assert summary["classes_missing"].get(split, []) == lacking
    assert total == kept * W * H


def test_outputs_are_the_same_bytes_with_two_workers(cleaned: Cleaned, tmp_path: Path) -> None:
    result, by_split = clean(cleaned.root, tmp_path, 2)
    assert (result, by_split) == (cleaned.result, cleaned.by_split)
    assert files(tmp_path) == files(cleaned.out)


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def split_of(result: MaskCleanResult, by_split: dict[str, list[int]]) -> dict[str, str]:
    return {result.rows[i].image: split for split, indices in by_split.items() for i in indices}


def elsewhere(split: str) -> str:
    return SPLITS[(SPLITS.index(split) + 1) % len(SPLITS)]


def test_pinned_images_go_to_their_split(cleaned: Cleaned) -> None:
    free = split_of(cleaned.result, cleaned.by_split)
    pinned = {image: elsewhere(free[image]) for image in (frame(0), f"{IMAGES}/odd.jpg")}
    placed = split_of(cleaned.result, split_rows(cleaned.result, pinned, RATIOS, SEED, None))
    assert {image: placed[image] for image in pinned} == pinned
    assert sorted(placed) == sorted(free)


def test_group_pattern_keeps_frames_of_a_scene_together(cleaned: Cleaned) -> None:
    scenes = [(frame(i), frame(i + 1)) for i in range(0, FRAMES, 2)]
    free = split_of(cleaned.result, cleaned.by_split)
    assert any(free[a] != free[b] for a, b in scenes), "ungrouped, some scene must straddle splits"
    grouped = split_of(cleaned.result, split_rows(cleaned.result, {}, RATIOS, SEED, SCENES))
    assert all(grouped[a] == grouped[b] for a, b in scenes)
    a, b = scenes[1]
    pinned = split_of(cleaned.result, split_rows(cleaned.result, {a: elsewhere(grouped[a])}, RATIOS, SEED, SCENES))
    assert pinned[a] == pinned[b] == elsewhere(grouped[a])


def write_turned(root: Path) -> None:
    """A phone photo: 24x16 pixels shown turned (EXIF orientation 6), labelled as shown (16x24)."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = TURNED_90
    pixels = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    (root / IMAGES).mkdir(parents=True)
    Image.fromarray(pixels).save(root / IMAGES / "turned.jpg", exif=exif.tobytes())
    save(palette_mask(np.ones((W, H), np.uint8)), root / MASKS / "turned.png")


def write_bitmap(root: Path) -> None:
    """A BMP image, which the VOC reader lists and cleaning decodes, but a TFRecord cannot hold."""
    write_pair(root, f"{IMAGES}/bitmap.bmp", scene_ids(1), 0)


@pytest.mark.parametrize("write", [write_turned, write_bitmap])
def test_kept_images_are_written_as_training_reads_them(tmp_path: Path, write: Callable[[Path], None]) -> None:
    """A kept image is written as JPEG or PNG pixels in the orientation its mask was drawn on,
    since TensorFlow decodes the bytes as they are (no EXIF rotation)."""
    write(tmp_path / "raw")
    dataset = read_mask_dataset(tmp_path / "raw", "voc", OPTIONS)
    result = clean_masks(
        tmp_path / "raw",
        tmp_path / "images",
        tmp_path / "masks",
        dataset=dataset,
        options=OPTIONS,
        max_pixels=None,
        workers=1,
    )
    (row,) = result.rows
    assert decode_png((tmp_path / "masks" / row.mask).read_bytes()).shape == (row.height, row.width)
    with Image.open(tmp_path / "images" / row.image) as written:
        assert written.format in ("JPEG", "PNG")
        assert written.getexif().get(EXIF_ORIENTATION, 1) == 1
        assert written.size == (row.width, row.height)
