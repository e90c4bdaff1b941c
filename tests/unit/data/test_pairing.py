"""Images paired with their label files in the layouts datasets are distributed in, and every
file ending up in exactly one place (a pair or an orphan)."""

from __future__ import annotations

import pytest

from odpipe.data.pairing import Convention, describe, pair


def _check(files: list[str], expected: list[tuple[str | None, str | None]], convention: Convention | None = None):
    pairs = pair(sorted(files), convention or Convention.from_options(None, None, None))
    assert pairs == sorted(expected, key=lambda p: (p[0] or "", p[1] or ""))
    listed = [path for p in pairs for path in p if path]
    assert sorted(listed) == sorted(files), "every file in exactly one place"


@pytest.mark.parametrize(
    ("image_folder", "label_folder"),
    [
        ("train", "trainannot"),  # CamVid as SegNet's tutorial distributes it
        ("train", "train_labels"),  # CamVid on Kaggle
        ("train", "train_masks"),
        ("train", "trainmasks"),
        ("train_images", "train_masks"),
        ("img", "ann"),  # Supervisely
    ],
)
def test_sibling_folders_with_a_suffix_pair_by_name(image_folder: str, label_folder: str) -> None:
    files = [f"{image_folder}/a.png", f"{image_folder}/b.png", f"{label_folder}/a.png", f"{label_folder}/b.png"]
    _check(
        files, [(f"{image_folder}/a.png", f"{label_folder}/a.png"), (f"{image_folder}/b.png", f"{label_folder}/b.png")]
    )


def test_camvid_segnet_layout_pairs_each_split_with_its_own_masks() -> None:
    files = [
        f"{split}{kind}/{split}_{i}.png" for split in ("train", "val", "test") for kind in ("", "annot") for i in (1, 2)
    ]
    expected = [(f"{s}/{s}_{i}.png", f"{s}annot/{s}_{i}.png") for s in ("train", "val", "test") for i in (1, 2)]
    _check(files, expected)
    # One name in two splits is two images, each with its split's mask.
    _check(["train/x.png", "val/x.png", "trainannot/x.png", "valannot/x.png"],
           [("train/x.png", "trainannot/x.png"), ("val/x.png", "valannot/x.png")])  # fmt: skip


def test_image_and_mask_folders_pair_by_the_path_under_them() -> None:
    files = ["ADE/images/training/a.jpg", "ADE/images/validation/a.jpg"]
    files += ["ADE/annotations/training/a.png", "ADE/annotations/validation/a.png"]
    expected = [
        ("ADE/images/training/a.jpg", "ADE/annotations/training/a.png"),
        ("ADE/images/validation/a.jpg", "ADE/annotations/validation/a.png"),
    ]
    _check(files, expected)
    _check(["images/a.jpg", "masks/a_mask.png"], [("images/a.jpg", "masks/a_mask.png")])


@pytest.mark.parametrize("suffix", ["_mask", "_L", "_label", "_gtFine_labelIds"])
def test_a_suffixed_name_pairs_beside_the_image_or_anywhere(suffix: str) -> None:
    _check(["data/a.png", f"data/a{suffix}.png", "data/b.jpg", f"data/b{suffix}.png"],
           [("data/a.png", f"data/a{suffix}.png"), ("data/b.jpg", f"data/b{suffix}.png")])  # fmt: skip
    # CamVid's own release: images and labels in folders whose names say nothing.
    _check(["701_StillsRaw_full/a.png", f"LabeledApproved_full/a{suffix}.png"],
           [("701_StillsRaw_full/a.png", f"LabeledApproved_full/a{suffix}.png")])  # fmt: skip


def test_orphans_stay_with_what_they_are() -> None:
    # A mask in a mask folder without its image, an image without its mask, and a suffixed mask
    # whose image is missing in a folder of suffixed masks: still a mask.
    files = ["train/a.png", "train/lonely.png", "trainannot/a.png", "trainannot/ghost.png"]
    files += ["x/p.png", "y/p_L.png", "y/q_L.png"]
    expected = [("train/a.png", "trainannot/a.png"), ("train/lonely.png", None), (None, "trainannot/ghost.png")]
    expected += [("x/p.png", "y/p_L.png"), (None, "y/q_L.png")]
    _check(files, expected)


def test_an_image_whose_name_only_looks_suffixed_stays_an_image() -> None:
    _check(["photos/sea_L.png", "photos/sky.png"], [("photos/sea_L.png", None), ("photos/sky.png", None)])


def test_an_image_folder_of_any_name_pairs_with_a_label_folder_beside_it() -> None:
    _check(["rgb/a.png", "gt/a.png", "rgb/b.png"], [("rgb/a.png", "gt/a.png"), ("rgb/b.png", None)])


def test_the_users_names_replace_the_usual_ones() -> None:
    files = ["rgb/a.png", "segm/a.png", "rgb/b.png", "segm/b.png"]
    _check(files, [(path, None) for path in sorted(files)])  # nothing says which is which
    expected = [("rgb/a.png", "segm/a.png"), ("rgb/b.png", "segm/b.png")]
    _check(files, expected, Convention.from_options("rgb", "segm", None))
    _check(files, expected, Convention.from_options(None, ["segm"], None))  # an image folder beside it
    # A * names the part they share; a suffix of the user's marks masks wherever they are.
    shared = Convention.from_options(None, ["*-segm"], None)
    _check(
        ["day/a.png", "day-segm/a.png", "night/a.png"], [("day/a.png", "day-segm/a.png"), ("night/a.png", None)], shared
    )
    _check(["scans/a.png", "scans/a-annotated.png"], [("scans/a.png", "scans/a-annotated.png")],
           Convention.from_options(None, None, "-annotated"))  # fmt: skip


def test_describe_says_where_images_and_label_files_are() -> None:
    pairs = [("train/a.png", None), ("val/b.png", None), (None, "gt/a.png")]
    assert describe(pairs) == "2 images in train/ val/; 1 label file in gt/"
