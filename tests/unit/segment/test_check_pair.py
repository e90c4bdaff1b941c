"""One crafted pair per cleaning decision, in one CamVid-style dataset: each dropped pair gets
exactly its reason, each kept one its mask and notes."""

from __future__ import annotations

import io
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from odpipe.data.index_masks import VOID
from odpipe.segment.check_pair import Checked, check_pair
from odpipe.segment.formats import read_mask_dataset
from tests.helpers.masks import MASKS, colour_mask, save, write_camvid, write_image, write_voc

IMAGES = "701_StillsRaw_full"
LABELS = "LabeledApproved_full"
ODD_COLOUR = (1, 2, 3)


def _jpeg_round_trip(image: Image.Image, quality: int = 60) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _case(root: Path, stem: str, mask: Image.Image | None, image_size: tuple[int, int] | None = (16, 12)) -> None:
    if image_size:
        write_image(root / IMAGES / f"{stem}.png", image_size)
    if mask is not None:
        save(mask, root / LABELS / f"{stem}_L.png")


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Checked]:
    root = tmp_path_factory.mktemp("camvid")
    write_camvid(root)  # 0016E5_a, _b, _c: good pairs
    odd = colour_mask(MASKS["a"])
    odd.putpixel((3, 3), ODD_COLOUR)
    for x in range(4):
        odd.putpixel((12 + x, 0), ODD_COLOUR)
    _case(root, "odd", odd)
    _case(root, "blurred", _jpeg_round_trip(colour_mask(MASKS["b"])))
    _case(root, "narrow", colour_mask(MASKS["a"][:10, :10]), (12, 10))
    _case(root, "lonely", None)
    _case(root, "ghost", colour_mask(MASKS["c"]), None)
    _case(root, "all_void", colour_mask(np.full((12, 16), VOID, np.uint8)))
    _case(root, "truncated", colour_mask(MASKS["c"]))
    truncated = (root / IMAGES / "truncated.png").read_bytes()
    (root / IMAGES / "truncated.png").write_bytes(truncated[: len(truncated) // 2])
    _case(root, "garbled", None)
    (root / LABELS / "garbled_L.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png at all")
    write_image(root / IMAGES / "jpeg.png")
    _jpeg_round_trip(colour_mask(MASKS["a"])).save(root / LABELS / "jpeg_L.jpg", quality=95)
    dataset = read_mask_dataset(root, "auto", {})
    return {
        (pair.image or pair.mask).rsplit("/", 1)[1].split(".")[0]: check_pair(root, pair, dataset, {}, None)
        for pair in dataset.pairs
    }


def _dropped(checked: dict[str, Checked]) -> dict[str, str]:
    return {stem: c.reason for stem, c in checked.items() if not c.kept}


def test_each_pair_gets_one_decision(checked: dict[str, Checked]) -> None:
    assert _dropped(checked) == {
        "blurred": "mask_lossy",
        "jpeg": "mask_lossy",
        "narrow": "size_mismatch",
        "lonely": "mask_missing",
        "ghost_L": "image_missing",
        "truncated": "image_unreadable",
        "garbled": "mask_unreadable",
    }
    assert sorted(stem for stem, c in checked.items() if c.kept) == [
        "0016E5_a",
        "0016E5_b",
        "0016E5_c",
        "all_void",
        "odd",
    ]
    for decision in checked.values():
        assert decision.kept or (decision.mask_png is None and decision.size is None and decision.detail)


def test_dropped_details_name_the_files(checked: dict[str, Checked]) -> None:
    assert "re-export it as PNG" in checked["jpeg"].detail and "jpeg_L.jpg" in checked["jpeg"].detail
    assert "re-export it as PNG" in checked["blurred"].detail
    assert "12x10" in checked["narrow"].detail and "10x10" in checked["narrow"].detail
    assert checked["ghost_L"].image == f"{LABELS}/ghost_L.png"  # an orphan mask is filed under its own path
    assert f"{IMAGES}/truncated.png" in checked["truncated"].detail


def test_kept_pair_has_its_index_mask(checked: dict[str, Checked]) -> None:
    kept = checked["0016E5_b"]
    png = Image.open(io.BytesIO(kept.mask_png))
    assert png.mode == "L" and png.format == "PNG"
    np.testing.assert_array_equal(np.asarray(png), MASKS["b"])
    assert kept.classes_present == (0, 1, 3)
    assert kept.size == (16, 12)
    assert kept.notes == ()
    assert pickle.loads(pickle.dumps(kept)) == kept


def test_unknown_colour_is_void_and_counted(checked: dict[str, Checked]) -> None:
    odd = checked["odd"]
    (note,) = odd.notes
    assert note.reason == "unknown_mask_values"
    assert f"{ODD_COLOUR}: 5 px" in note.detail
    ids = np.asarray(Image.open(io.BytesIO(odd.mask_png)))
    assert ids[3, 3] == VOID and (ids[0, 12:16] == VOID).all()
    assert int((ids == VOID).sum()) == int((MASKS["a"] == VOID).sum()) + 5


def test_empty_mask_is_kept_with_a_note(checked: dict[str, Checked]) -> None:
    all_void = checked["all_void"]
    assert all_void.classes_present == ()
    assert [n.reason for n in all_void.notes] == ["empty_mask"]


def test_background_only_mask_is_empty(tmp_path: Path) -> None:
    """VOC's class 0 is background: a mask of only it is empty; CamVid's class 0 (sky) is not."""
    write_voc(tmp_path)
    save(Image.new("P", (16, 12), 0), tmp_path / "VOC2012/SegmentationClass/c.png")
    dataset = read_mask_dataset(tmp_path, "voc", {})
    decisions = {p.image: check_pair(tmp_path, p, dataset, {}, None) for p in dataset.pairs}
    assert [n.reason for n in decisions["VOC2012/JPEGImages/c.jpg"].notes] == ["empty_mask"]
    assert decisions["VOC2012/JPEGImages/a.jpg"].notes == ()


def test_pixel_limit(tmp_path: Path) -> None:
    write_camvid(tmp_path)
    dataset = read_mask_dataset(tmp_path, "camvid", {})
    decision = check_pair(tmp_path, dataset.pairs[0], dataset, {}, 100)
    assert decision.reason == "image_too_large"
    assert check_pair(tmp_path, dataset.pairs[0], dataset, {}, 16 * 12).kept


def test_worker_arguments_are_small_and_picklable(tmp_path: Path) -> None:
    write_camvid(tmp_path)
    dataset = read_mask_dataset(tmp_path, "camvid", {})
    lean = pickle.loads(pickle.dumps(dataset.without_pairs()))
    assert lean.pairs == [] and lean == replace(dataset, pairs=[], splits={}, read={})
    assert check_pair(tmp_path, dataset.pairs[0], lean, {}, None) == check_pair(
        tmp_path, dataset.pairs[0], dataset, {}, None
    )
