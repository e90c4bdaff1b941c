from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from odpipe.data.index_masks import VOID
from odpipe.engine.confusion import confusion_figure
from odpipe.segment.report import VOID_COLOUR, colorize, gallery, overlay

COLOURS = [(0, 0, 0), (200, 10, 10), (10, 200, 10), (10, 10, 200)]
NAMES = ["background", "road", "car", "person"]


def _mask() -> np.ndarray:
    """A 6x8 mask with every class and void."""
    mask = np.zeros((6, 8), np.uint8)
    mask[1:3, 1:4], mask[3:5, 2:7], mask[0, 6:] = 1, 2, 3
    mask[5] = VOID
    return mask


def test_colorize_draws_each_id_in_its_colour_and_void_in_grey() -> None:
    mask = _mask()
    pixels = np.asarray(colorize(mask, COLOURS))
    assert pixels.shape == (6, 8, 3) and pixels.dtype == np.uint8
    for class_id, colour in enumerate(COLOURS):
        assert (pixels[mask == class_id] == colour).all()
    assert (pixels[mask == VOID] == VOID_COLOUR).all()


def test_colorize_refuses_an_id_with_no_colour() -> None:
    with pytest.raises(ValueError, match=r"class ids \[7\] but there are colours for 4 classes"):
        colorize(np.array([[0, 7]]), COLOURS)


def test_overlay_tints_classes_and_leaves_background_and_void_as_they_were() -> None:
    mask = _mask()
    image = np.random.default_rng(0).integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    for given in (image, Image.fromarray(image)):
        pixels = np.asarray(overlay(given, mask, COLOURS, alpha=0.25)).astype(int)
        untouched = (mask == 0) | (mask == VOID)
        assert (pixels[untouched] == image[untouched]).all()
        want = np.rint(0.75 * image[mask == 2] + 0.25 * np.array(COLOURS[2])).astype(int)
        assert (pixels[mask == 2] == want).all()


def test_overlay_refuses_a_mask_of_another_size() -> None:
    with pytest.raises(ValueError, match="mask is 8x6 but the image 5x5"):
        overlay(np.zeros((5, 5, 3), np.uint8), _mask(), COLOURS)


def _png(width: int, height: int) -> bytes:
    encoded = io.BytesIO()
    Image.new("RGB", (width, height), (0, 0, 0)).save(encoded, format="PNG")
    return encoded.getvalue()


def test_gallery_grows_a_row_per_image_with_tiles_at_one_height() -> None:
    mask = _mask()
    row = (np.zeros((6, 8, 3), np.uint8), mask, mask, "a.png  mIoU 1.00")
    one, two = gallery([row], COLOURS, NAMES, height=60), gallery([row, row], COLOURS, NAMES, height=60)
    assert two.width == one.width and two.height > one.height + 60
    # A wider image (bytes, as a TFRecord holds it; its prediction at a quarter of its size)
    # is scaled to the same height, so its row is wider.
    wide = (_png(32, 6), np.zeros((6, 32), np.uint8), np.zeros((3, 8), np.uint8), "wide.png  mIoU 1.00")
    assert gallery([row, wide], COLOURS, NAMES, height=60).width > one.width


def test_gallery_scales_masks_by_nearest_neighbour() -> None:
    """On a black image every painted pixel is exactly half a class colour: an overlay scaled
    after painting would have mixed colours at the edges of each region."""
    mask = _mask()
    sheet = gallery([(np.zeros((6, 8, 3), np.uint8), mask, mask, "")], COLOURS, NAMES, height=60)
    truth = np.asarray(sheet)[16:76, 84:164].reshape(-1, 3)  # the caption line, then the image and a gap
    allowed = {(0, 0, 0)} | {tuple(int(v) for v in np.rint(0.5 * np.array(c))) for c in COLOURS[1:]}
    assert {tuple(p) for p in truth.tolist()} == allowed


def test_gallery_needs_a_name_per_colour() -> None:
    with pytest.raises(ValueError, match="4 colours for 3 class names"):
        gallery([], COLOURS, NAMES[:3])


@pytest.mark.parametrize("count", [1, 20])
def test_the_confusion_figure_renders_shares_for_one_or_many_classes(count: int) -> None:
    shares = np.eye(count) * 0.9 + 0.1 / count
    picture = confusion_figure(shares, [f"class {i}" for i in range(count)], "pixels")
    pixels = np.asarray(picture)
    assert picture.mode == "RGB" and min(picture.size) > 200
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10  # cells, text and colour bar drawn


def test_the_confusion_figure_grows_with_the_classes() -> None:
    small = confusion_figure(np.eye(2), ["a", "b"], "pixels")
    large = confusion_figure(np.eye(20), [f"class {i}" for i in range(20)], "pixels")
    assert large.width > small.width and large.height > small.height
