"""The classify task's clean_split engine over small class folders holding every kind of input:
each file ends up in one split's CSV or dropped with one reason, copies are settled by their
labels and splits, converted images are noted and written as JPEG, the report counts what was
written, and the outputs are the same bytes for any number of workers."""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from odpipe.classify.clean import (
    ClassCleanResult,
    ClassRow,
    account,
    check_min_per_class,
    class_markdown,
    clean_images,
    read_rows,
    report,
    split_rows,
    train_counts,
    write_splits,
)
from odpipe.classify.formats import ClassDataset, read_class_dataset
from odpipe.core.files import iter_csv
from odpipe.core.images import IMAGE_SUFFIXES
from odpipe.data.sources import ingest
from odpipe.data.splitting import SPLITS
from tests.conftest import ROOT

W, H = 16, 12
MAX_PIXELS = 1000  # W * H fits; the 40 x 40 image does not
RATIOS = {"train": 0.6, "val": 0.2, "test": 0.2}
SEED = 0
GOOD = 10  # plain JPEGs per class, so that each class can reach each split
EXIF_ORIENTATION, TURNED_90 = 0x0112, 6
DROPPED = {
    "cat/LICENSE": "unsupported_format",
    "cat/notes.txt": "unsupported_format",
    "cat/photo.heic": "unsupported_format",
    "dog/empty.png": "image_unreadable",
    "dog/text.jpg": "image_unreadable",
    "dog/truncated.jpg": "image_unreadable",
    "owl/huge.png": "image_too_large",
    "cat/copy_of_00.jpg": "duplicate",  # sorts after cat/00.jpg, whose bytes it holds
    "cat/same.jpg": "conflicting_labels",  # the same bytes under three classes
    "dog/same.jpg": "conflicting_labels",
    "owl/deep/same.jpg": "conflicting_labels",
}
NOTED = {  # kept, written as an RGB JPEG under the name it gets
    "cat/cmyk.jpg": ("converted_jpeg_cmyk", "cat/cmyk.jpg"),
    "cat/grey.png": ("converted_png_l", "cat/grey.png.jpg"),
    "dog/scan.tif": ("converted_tiff_rgb", "dog/scan.tif.jpg"),
    "dog/turned.jpg": ("exif_rotated", "dog/turned.jpg"),
    "owl/anim.gif": ("converted_gif_p", "owl/anim.gif.jpg"),
    "owl/web.webp": ("converted_webp_rgb", "owl/web.webp.jpg"),
}


def noise(seed: int, size: tuple[int, int] = (W, H)) -> Image.Image:
    """Pixels of their own seed, so that no two images share content by accident."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def write(root: Path, path: str, data: bytes) -> None:
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / path).write_bytes(data)


def write_dataset(root: Path) -> None:
    """Three classes of good images with one of each problem among them, and an empty class."""
    for c, name in enumerate(("cat", "dog", "owl")):
        for i in range(GOOD):
            write(root, f"{name}/{i:02d}.jpg", encoded(noise(100 * c + i), "JPEG"))
    write(root, "cat/copy_of_00.jpg", (root / "cat/00.jpg").read_bytes())
    same = encoded(noise(900), "JPEG")
    for path in ("cat/same.jpg", "dog/same.jpg", "owl/deep/same.jpg"):
        write(root, path, same)
    write(root, "cat/notes.txt", b"shot on a sunny day\n")
    write(root, "cat/LICENSE", b"CC-BY\n")
    write(root, "cat/photo.heic", b"\0\0\0\x18ftypheic" + bytes(64))
    write(root, "cat/.DS_Store", b"\0")  # litter: not an input at all
    write(root, "dog/empty.png", b"")
    write(root, "dog/text.jpg", b"not a jpeg")
    write(root, "dog/truncated.jpg", encoded(noise(901), "JPEG")[:200])
    write(root, "owl/huge.png", encoded(noise(902, (40, 40)), "PNG"))
    write(root, "cat/cmyk.jpg", encoded(noise(903).convert("CMYK"), "JPEG"))
    write(root, "cat/grey.png", encoded(noise(904).convert("L"), "PNG"))
    write(root, "dog/scan.tif", encoded(noise(905), "TIFF"))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = TURNED_90
    write(root, "dog/turned.jpg", encoded(noise(906), "JPEG", exif=exif.tobytes()))
    write(root, "owl/anim.gif", encoded(noise(907).convert("P"), "GIF"))
    write(root, "owl/web.webp", encoded(noise(908), "WEBP", lossless=True))
    (root / "fish").mkdir()


def clean(root: Path, out: Path, workers: int) -> tuple[ClassDataset, ClassCleanResult, dict[str, list[int]]]:
    """clean_split as the stage runs it, without pinned splits or groups."""
    dataset = read_class_dataset(root)
    result = clean_images(root, out / "images", dataset, MAX_PIXELS, workers)
    by_split = split_rows(result, RATIOS, SEED, None, use_imagesets=True)
    write_splits(result, by_split, dataset.classes, out / "splits")
    return dataset, result, by_split


@dataclass(frozen=True)
class Cleaned:
    root: Path
    out: Path
    dataset: ClassDataset
    result: ClassCleanResult
    by_split: dict[str, list[int]]

    def rows(self, split: str) -> list[ClassRow]:
        return read_rows(self.out / "splits" / f"{split}.csv")


@pytest.fixture(scope="module")
def cleaned(tmp_path_factory: pytest.TempPathFactory) -> Cleaned:
    root = tmp_path_factory.mktemp("folders")
    write_dataset(root)
    out = tmp_path_factory.mktemp("w1")
    return Cleaned(root, out, *clean(root, out, 1))


def source(image: str) -> str:
    """The input file a kept row was written from."""
    return next((raw for raw, (_, name) in NOTED.items() if name == image), image)


def test_every_input_is_in_one_split_or_dropped_once(cleaned: Cleaned) -> None:
    inputs = sorted(
        p.relative_to(cleaned.root).as_posix()
        for p in cleaned.root.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    )
    listed = [source(row.image) for split in SPLITS for row in cleaned.rows(split)]
    dropped = [issue.file for issue in cleaned.result.dropped]
    assert len(inputs) == 3 * GOOD + len(DROPPED) + len(NOTED)
    assert sorted(listed + dropped) == inputs  # each exactly once
    assert {issue.file: issue.reason for issue in cleaned.result.dropped} == DROPPED
    assert all(issue.file in issue.detail for issue in cleaned.result.dropped)


def test_drop_details_say_what_is_wrong(cleaned: Cleaned) -> None:
    detail = {issue.file: issue.detail for issue in cleaned.result.dropped}
    assert detail["cat/notes.txt"] == "cat/notes.txt: .txt is not an image format"
    assert "no suffix" in detail["cat/LICENSE"]
    assert "cannot decode .heic images" in detail["cat/photo.heic"]
    assert "zero-byte" in detail["dog/empty.png"]
    assert "max_image_pixels" in detail["owl/huge.png"]
    assert detail["cat/copy_of_00.jpg"] == "cat/copy_of_00.jpg: same content as cat/00.jpg"
    conflict = detail["dog/same.jpg"]
    assert "labelled cat and dog and owl" in conflict
    assert all(path in conflict for path in ("cat/same.jpg", "dog/same.jpg", "owl/deep/same.jpg"))


def test_converted_images_are_noted_and_written_as_jpeg(cleaned: Cleaned) -> None:
    notes = {issue.file: issue.reason for issue in cleaned.result.notes}
    assert notes == {raw: reason for raw, (reason, _) in NOTED.items()}
    rows = {row.image: row for row in cleaned.result.rows}
    for _, name in NOTED.values():
        with Image.open(cleaned.out / "images" / name) as written:
            assert (written.format, written.mode) == ("JPEG", "RGB")
            assert written.getexif().get(EXIF_ORIENTATION, 1) == 1
            assert written.size == (rows[name].width, rows[name].height)
    assert (rows["dog/turned.jpg"].width, rows["dog/turned.jpg"].height) == (H, W)
    plain = rows["owl/03.jpg"]
    assert (cleaned.out / "images" / plain.image).read_bytes() == (cleaned.root / plain.image).read_bytes()
    assert not [p for p in (cleaned.out / "images").iterdir() if p.name.startswith(".")]  # no staging left


def test_split_csvs_list_rows_in_input_order_with_class_names(cleaned: Cleaned) -> None:
    for split in SPLITS:
        rows = cleaned.rows(split)
        assert rows == [cleaned.result.rows[i] for i in cleaned.by_split[split]]
        assert cleaned.by_split[split] == sorted(cleaned.by_split[split])
        for row, written in zip(rows, iter_csv(cleaned.out / "splits" / f"{split}.csv"), strict=True):
            assert written["class"] == cleaned.dataset.classes[row.label] == row.image.split("/")[0]


def test_each_class_reaches_each_split(cleaned: Cleaned) -> None:
    for split in SPLITS:
        labels = {cleaned.dataset.classes[row.label] for row in cleaned.rows(split)}
        assert labels == {"cat", "dog", "owl"}, split


def test_outputs_are_the_same_bytes_with_two_workers(cleaned: Cleaned, tmp_path: Path) -> None:
    _, result, by_split = clean(cleaned.root, tmp_path, 2)
    assert (result, by_split) == (cleaned.result, cleaned.by_split)
    assert files(tmp_path) == files(cleaned.out)


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_report_counts_what_was_written(cleaned: Cleaned) -> None:
    files, not_inputs = account(cleaned.root, cleaned.dataset, cleaned.result)
    summary = report(cleaned.result, cleaned.by_split, cleaned.dataset, min_per_class=5, files=files)
    on_disk = sum(1 for p in cleaned.root.rglob("*") if p.is_file())
    assert (
        summary["files"]
        == files
        == {
            "found": on_disk,
            "kept": on_disk - len(DROPPED) - 1,
            "dropped": summary["dropped_by_reason"],
            "not_input": {"os_litter": 1},
        }
    )
    assert [(i.file, i.reason) for i in not_inputs] == [("cat/.DS_Store", "os_litter")]
    kept = len(cleaned.result.rows)
    assert (summary["images_in"], summary["kept"], summary["dropped"]) == (kept + len(DROPPED), kept, len(DROPPED))
    assert summary["layout"] == "folders"
    assert summary["classes"] == ["cat", "dog", "fish", "owl"]
    assert summary["empty_classes"] == ["fish"]
    assert summary["dropped_by_reason"] == {
        "conflicting_labels": 3,
        "duplicate": 1,
        "image_too_large": 1,
        "image_unreadable": 3,
        "unsupported_format": 3,
    }
    assert sum(summary["notes_by_reason"].values()) == len(NOTED)
    for split in SPLITS:
        rows = cleaned.rows(split)
        counted = summary["splits"][split]
        assert counted["images"] == len(rows)
        assert counted["images_per_class"] == {
            name: sum(row.label == c for row in rows) for c, name in enumerate(cleaned.dataset.classes)
        }
    assert summary["imbalance"] is None  # fish has no train image
    assert summary["classes_below_min"] == {"fish": 0}
    per_class = train_counts(summary, ["owl", "fish", "dog", "cat"])
    assert list(per_class) == ["owl", "fish", "dog", "cat"] and per_class["fish"] == 0
    with pytest.raises(ValueError, match=r"fewer than 5 train images \(classify.min_per_class\): fish \(0\)"):
        check_min_per_class(per_class, 5)
    check_min_per_class({**per_class, "fish": 5}, 5)
    with pytest.raises(ValueError, match="rerun"):
        train_counts(summary, ["cat", "dog", "owl"])
    text = class_markdown(summary, {"dropped": [], "notes": [], "not_input": []}, "grid.jpg")
    assert "Train has no image of: fish." in text and "fish (0)" in text
    assert f"## Files ({on_disk} found under dataset.path)" in text and "| not an input: os_litter | 1 |" in text
    assert "| train | " + str(summary["splits"]["train"]["images"]) in text


def write_split_folders(root: Path) -> None:
    """Pre-made splits where a train image was copied into val and test, and one image sits under
    two classes in two splits."""
    for s, (split, count) in enumerate((("train", 6), ("val", 2), ("test", 2))):
        for c, name in enumerate(("cat", "dog")):
            for i in range(count + c):  # one dog more than cats in each split
                write(root, f"{split}/{name}/{i}.jpg", encoded(noise(1000 * s + 100 * c + i), "JPEG"))
    leaked = encoded(noise(950), "JPEG")
    for split in SPLITS:
        write(root, f"{split}/cat/leaked.jpg", leaked)
    confused = encoded(noise(951), "JPEG")
    write(root, "train/cat/confused.jpg", confused)
    write(root, "val/dog/confused.jpg", confused)


def test_a_copy_across_splits_is_kept_in_train_only(tmp_path: Path) -> None:
    write_split_folders(tmp_path / "raw")
    dataset, result, by_split = clean(tmp_path / "raw", tmp_path / "out", 1)
    assert dataset.images[0].path.startswith("test/")  # the test copy comes first, and still goes
    dropped = {issue.file: issue for issue in result.dropped}
    assert {file: issue.reason for file, issue in dropped.items()} == {
        "test/cat/leaked.jpg": "split_leak",
        "val/cat/leaked.jpg": "split_leak",
        "train/cat/confused.jpg": "conflicting_labels",
        "val/dog/confused.jpg": "conflicting_labels",
    }
    assert "train/cat/leaked.jpg, kept in train" in dropped["test/cat/leaked.jpg"].detail
    splits = {result.rows[i].image: split for split, indices in by_split.items() for i in indices}
    assert all(image.startswith(f"{split}/") for image, split in splits.items())  # pinned
    assert "train/cat/leaked.jpg" in splits
    files, _ = account(tmp_path / "raw", dataset, result)
    assert files == {"found": 28, "kept": 24, "dropped": {"conflicting_labels": 2, "split_leak": 2}, "not_input": {}}
    summary = report(result, by_split, dataset, min_per_class=8, files=files)
    assert summary["splits"]["train"]["images_per_class"] == {"cat": 7, "dog": 7}
    assert summary["splits"]["val"]["images_per_class"] == {"cat": 2, "dog": 3}
    assert summary["imbalance"] == 1.0
    assert summary["classes_below_min"] == {"cat": 7, "dog": 7}


def test_csv_rows_naming_no_file_or_one_file_twice(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    write(root, "img/a.jpg", encoded(noise(1), "JPEG"))
    write(root, "img/b.jpg", encoded(noise(2), "JPEG"))
    write(root, "img/c.jpg", encoded(noise(3), "JPEG"))
    rows = "img/a.jpg,cat\nimg/b.jpg,dog\nimg/gone.jpg,dog\nimg/c.jpg,cat\nimg/c.jpg,dog\nimg/a.jpg,cat\n"
    (root / "labels.csv").write_text("filename,label\n" + rows)
    dataset = read_class_dataset(root)
    result = clean_images(root, tmp_path / "out", dataset, None, 1)
    assert [row.image for row in result.rows] == ["img/a.jpg", "img/b.jpg"]
    assert [(issue.file, issue.reason) for issue in result.dropped] == [
        ("img/gone.jpg", "image_missing"),
        ("img/c.jpg", "conflicting_labels"),
        ("img/c.jpg", "conflicting_labels"),
        ("img/a.jpg", "duplicate"),
    ]
    # Each file once: a.jpg kept (its first row was), c.jpg dropped once; gone.jpg is no file.
    files, not_inputs = account(root, dataset, result)
    assert files == {"found": 4, "kept": 2, "dropped": {"conflicting_labels": 1}, "not_input": {"class_table": 1}}
    assert [(i.file, i.reason) for i in not_inputs] == [("labels.csv", "class_table")]


def test_a_local_source_brings_every_file_but_litter_to_cleaning(tmp_path: Path) -> None:
    """Detection's copy leaves non-images behind; classification's (``copy_all_files``) takes
    them along, so that cleaning reports them instead."""
    write_dataset(tmp_path / "mine")
    dataset = {"source": "local", "path": str(tmp_path / "mine")}
    ingest({**dataset, "copy_all_files": True}, tmp_path / "all", tmp_path)
    ingest(dataset, tmp_path / "some", tmp_path)
    everything = {p for p in files(tmp_path / "mine") if not p.split("/")[-1].startswith(".")}
    assert set(files(tmp_path / "all")) == everything
    left_behind = everything - set(files(tmp_path / "some"))
    other_images = {f for f in ("dog/scan.tif", "owl/anim.gif") if Path(f).suffix not in IMAGE_SUFFIXES}
    assert left_behind == {"cat/LICENSE", "cat/photo.heic", *other_images}


def test_the_built_in_source_reads_back_as_balanced_class_folders(tmp_path: Path) -> None:
    config = OmegaConf.load(ROOT / "conf" / "dataset" / "synthetic_classify.yaml")
    config.num_images = 12
    ingest(config, tmp_path / "raw", tmp_path)
    dataset = read_class_dataset(tmp_path / "raw")
    assert (dataset.layout, dataset.classes) == ("folders", tuple(config.classes))
    assert Counter(image.label for image in dataset.images) == {name: 2 for name in config.classes}
