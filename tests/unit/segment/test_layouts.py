"""Segmentation datasets laid out as they are distributed, read without renaming anything:
CamVid as SegNet's tutorial ships it (``train/`` + ``trainannot/``, id 11 unlabelled), the same
folders through symbolic links, and the errors when nothing pairs."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from odpipe.data.index_masks import VOID
from odpipe.data.sources import copy_local
from odpipe.segment.clean import account, clean_masks
from odpipe.segment.formats import load_index_mask, read_mask_dataset
from tests.helpers.masks import MASKS, NAMES, save, write_image

UNLABELLED = 11  # SegNet CamVid's "unlabelled" id: not a class in dataset.classes
SPLIT_OF = {"a": "train", "b": "val", "c": "test"}


def write_camvid_segnet(root: Path) -> dict[str, np.ndarray]:
    """Each split in ``<split>/``, its single-channel id masks in ``<split>annot/``."""
    for stem, ids in MASKS.items():
        split = SPLIT_OF[stem]
        write_image(root / split / f"0001TP_{stem}.png")
        save(
            Image.fromarray(np.where(ids == VOID, UNLABELLED, ids).astype(np.uint8)),
            root / f"{split}annot" / f"0001TP_{stem}.png",
        )
    return {f"{SPLIT_OF[stem]}/0001TP_{stem}.png": ids for stem, ids in MASKS.items()}


def test_camvid_segnet_layout_is_read_as_distributed(tmp_path: Path) -> None:
    truth = write_camvid_segnet(tmp_path)
    with pytest.raises(ValueError, match=r"index masks need dataset.classes"):
        read_mask_dataset(tmp_path, "auto", {})  # the layout is found; its ids have no names
    dataset = read_mask_dataset(tmp_path, "auto", {"classes": list(NAMES)})
    assert dataset.format == "index"
    assert [(p.image, p.mask) for p in dataset.pairs] == [
        (image, image.replace("/", "annot/")) for image in sorted(truth)
    ]
    assert dataset.splits == {image: image.split("/")[0] for image in truth}
    for pair in dataset.pairs:
        ids, unknown = load_index_mask(tmp_path, pair, dataset, {})
        np.testing.assert_array_equal(ids, truth[pair.image])  # id 11 read as void
        assert set(unknown) <= {repr(UNLABELLED)}


def test_symlinked_folders_are_followed_and_a_loop_is_reported(tmp_path: Path, caplog) -> None:
    real = tmp_path / "real"
    truth = write_camvid_segnet(real)
    linked = tmp_path / "linked"
    linked.mkdir()
    for folder in real.iterdir():
        (linked / folder.name).symlink_to(folder, target_is_directory=True)
    os.symlink(real / "train", real / "train" / "loop")  # a folder holding a link to itself
    with caplog.at_level(logging.WARNING):
        assert copy_local(linked, tmp_path / "raw") == []
    assert len([p for p in (tmp_path / "raw").rglob("*") if p.is_file()]) == len(truth) * 2
    assert any("train/loop: a link to" in r.getMessage() and "it would loop" in r.getMessage() for r in caplog.records)
    dataset = read_mask_dataset(linked, "index", {"classes": list(NAMES)})
    assert sorted(p.image for p in dataset.pairs) == sorted(truth)
    assert all(p.mask for p in dataset.pairs)


def test_nothing_paired_names_the_folders_and_the_options(tmp_path: Path) -> None:
    for stem in ("a", "b"):
        write_image(tmp_path / "rgb" / f"{stem}.png")
        save(Image.fromarray(MASKS[stem]), tmp_path / "segm" / f"{stem}.png")
    said = r"0 of 4 files were paired as index: 4 images in rgb/ segm/; 0 label files\. Name the folders with dataset"
    with pytest.raises(ValueError, match=said):
        read_mask_dataset(tmp_path, "index", {"classes": list(NAMES)})
    dataset = read_mask_dataset(tmp_path, "index", {"classes": list(NAMES), "images": "rgb", "masks": "segm"})
    assert [(p.image, p.mask) for p in dataset.pairs] == [("rgb/a.png", "segm/a.png"), ("rgb/b.png", "segm/b.png")]


def test_the_ids_are_named_by_a_labels_txt_shipped_with_the_data(tmp_path: Path) -> None:
    write_camvid_segnet(tmp_path)
    (tmp_path / "labels.txt").write_text("\n".join(NAMES) + "\n")
    assert read_mask_dataset(tmp_path, "auto", {}).classes.names == NAMES


def _clean_and_account(root: Path, tmp_path: Path, options: dict):
    dataset = read_mask_dataset(root, "auto", options)
    out = tmp_path / "out"
    result = clean_masks(root, out / "i", out / "m", dataset=dataset, options=options, max_pixels=None, workers=1)
    files, not_inputs = account(root, dataset, result.dropped)
    assert files["found"] == sum(1 for p in root.rglob("*") if p.is_file())
    return dataset, result, files, {i.file: i.reason for i in not_inputs}


def _binary(stem: str) -> np.ndarray:
    """A foreground of 255 (the polyp, the car) on 0, as binary datasets ship it."""
    return np.where(MASKS[stem] == 1, 255, 0).astype(np.uint8)


def test_kvasir_seg_jpeg_binary_masks_read_with_a_threshold(tmp_path: Path) -> None:
    """``Kvasir-SEG/{images,masks}/<id>.jpg``: masks are JPEG, 0/255 blurred by compression,
    and no file names the classes. Without a threshold each mask is refused as lossy, saying
    what to set; with one, the foreground is the second class."""
    root = tmp_path / "Kvasir-SEG"
    for stem in "ab":
        write_image(root / "images" / f"cju0qkwl35piu{stem}.jpg", seed=ord(stem))
        save(Image.fromarray(_binary(stem)).convert("RGB"), root / "masks" / f"cju0qkwl35piu{stem}.jpg")
    (root / "kavsir_bboxes.json").write_text("{}")
    classes = {"classes": ["background", "polyp"]}
    dataset, result, files, _ = _clean_and_account(root, tmp_path, classes)
    assert dataset.format == "index" and files["dropped"] == {"mask_lossy": 4}
    assert "set dataset.mask_threshold" in result.dropped[0].detail
    dataset, result, files, not_inputs = _clean_and_account(root, tmp_path / "t", classes | {"mask_threshold": 128})
    for pair in dataset.pairs:
        ids, unknown = load_index_mask(root, pair, dataset, {})
        np.testing.assert_array_equal(ids, MASKS[pair.image[-5]] == 1)  # the blur moves no pixel across 128
        assert unknown == {}
    assert files["kept"] == 4 and not_inputs == {"kavsir_bboxes.json": "not_read"}


def test_oxford_pets_trimaps_one_folder_deeper_values_from_one(tmp_path: Path) -> None:
    """``images/<Breed>_<n>.jpg`` with ``annotations/trimaps/<Breed>_<n>.png`` (values 1 pet,
    2 background, 3 border: no 0), beside ``annotations/xmls/`` and the list files."""
    root = tmp_path / "oxford-iiit-pet"
    for n, stem in enumerate("abc", start=1):
        write_image(root / "images" / f"Abyssinian_{n}.jpg", seed=n)
        save(Image.fromarray(MASKS[stem] % 3 + 1), root / "annotations" / "trimaps" / f"Abyssinian_{n}.png")
    (root / "annotations" / "xmls").mkdir()
    (root / "annotations" / "xmls" / "Abyssinian_1.xml").write_text("<annotation/>")
    (root / "annotations" / "trainval.txt").write_text("Abyssinian_1 1 1 1\nAbyssinian_2 1 1 1\n")
    (root / "annotations" / "list.txt").write_text("#Image CLASS-ID SPECIES BREED ID\nAbyssinian_1 1 1 1\n")
    options = {"classes": ["pet", "background", "border"], "reduce_zero_label": True}
    dataset, result, files, not_inputs = _clean_and_account(root, tmp_path, options)
    assert [(p.image, p.mask) for p in dataset.pairs] == [
        (f"images/Abyssinian_{n}.jpg", f"annotations/trimaps/Abyssinian_{n}.png") for n in (1, 2, 3)
    ]
    ids, unknown = load_index_mask(root, dataset.pairs[0], dataset, {})
    np.testing.assert_array_equal(ids, MASKS["a"] % 3)  # 1, 2, 3 become ids 0, 1, 2
    assert unknown == {}
    assert files["kept"] == 6 and set(not_inputs) == {
        "annotations/xmls/Abyssinian_1.xml",
        "annotations/trainval.txt",
        "annotations/list.txt",
    }


def test_carvana_palette_gifs_in_a_masks_folder_with_a_suffix(tmp_path: Path) -> None:
    """``train/<id>_01.jpg`` with ``train_masks/<id>_01_mask.gif`` (palette GIFs of 0 and 1)
    and the masks again as run lengths in ``train_masks.csv``."""
    root = tmp_path / "carvana"
    for stem in "ab":
        write_image(root / "train" / f"00087a6bd4dc_0{stem}.jpg", seed=ord(stem))
        gif = Image.fromarray((MASKS[stem] == 1).astype(np.uint8)).convert("P")
        save(gif, root / "train_masks" / f"00087a6bd4dc_0{stem}_mask.gif")
    (root / "train_masks.csv").write_text("img,rle_mask\n00087a6bd4dc_0a.jpg,1 2\n")
    dataset, result, files, not_inputs = _clean_and_account(root, tmp_path, {"classes": ["background", "car"]})
    assert [(p.image, p.mask) for p in dataset.pairs] == [
        (f"train/00087a6bd4dc_0{s}.jpg", f"train_masks/00087a6bd4dc_0{s}_mask.gif") for s in "ab"
    ]
    ids, _ = load_index_mask(root, dataset.pairs[1], dataset, {})
    np.testing.assert_array_equal(ids, MASKS["b"] == 1)
    assert files["kept"] == 4 and not_inputs == {"train_masks.csv": "not_read"}
