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
