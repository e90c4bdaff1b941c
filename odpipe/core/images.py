"""Reading an image file the way a labelling tool showed it, and turning it into bytes a
TFRecord can hold.

Used by cleaning (every input image), by the format readers that need an image's size (YOLO's
normalised boxes) and by ``odpipe predict``, so that all three see the same pixels.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

# What a TFRecord can hold as it is. MPO is how Pillow names many phones' JPEGs (a JPEG with a
# second, preview image appended), which TensorFlow decodes as the JPEG it is.
PASS_THROUGH_FORMATS = {"JPEG", "MPO", "PNG"}
EXIF_ORIENTATION = 0x0112
SWAPS_SIDES = {5, 6, 7, 8}  # EXIF orientations that rotate by 90 degrees
JPEG_QUALITY = 95
ASPECT_TOLERANCE = 0.01  # a resize rounds each side to whole pixels: allow 1% of aspect drift
# Pillow's own default limit against decompression bombs (about 89 megapixels); Pillow warns
# above it and refuses above twice it. odpipe refuses above it, with a reason, per image.
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS
# What Pillow raises on a file it cannot decode: truncated, corrupt, not an image at all.
DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError)


class ImageTooLargeError(ValueError):
    """More pixels than the configured limit: decoding it could exhaust memory."""


@contextlib.contextmanager
def pixel_limit(max_pixels: int | None) -> Iterator[None]:
    """Within the block, an image over ``max_pixels`` raises :class:`ImageTooLargeError` when
    opened, instead of Pillow's warning (or its error at twice its own limit)."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise ImageTooLargeError(f"{err} (clean_split.max_image_pixels: {max_pixels})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _swaps_sides(image: Image.Image) -> bool:
    return image.getexif().get(EXIF_ORIENTATION, 1) in SWAPS_SIDES


def displayed_size(path: Path) -> tuple[int, int]:
    """Width and height as a viewer shows the image (EXIF rotation applied), read from the
    header only (so no pixel limit applies): normalised YOLO boxes are relative to this size."""
    with pixel_limit(None), Image.open(path) as image:
        width, height = image.size
        return (height, width) if _swaps_sides(image) else (width, height)


def same_aspect(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether two sizes have one shape, give or take the rounding of a resize."""
    return abs((a[0] / a[1]) / (b[0] / b[1]) - 1) <= ASPECT_TOLERANCE


def _orient(image: Image.Image, claimed: tuple[int, int] | None) -> tuple[Image.Image, bool]:
    """Pixels as the labelling tool showed them. A 90-degree EXIF rotation is applied unless
    the annotation's size (``claimed``, perhaps of a resized copy) has the unrotated shape and
    not the rotated one, i.e. the tool showed raw pixels; flips and 180 are always applied, as
    every current labelling tool and browser does."""
    if image.getexif().get(EXIF_ORIENTATION, 1) == 1:
        return image, False
    if _swaps_sides(image) and claimed:
        raw, turned = image.size, image.size[::-1]
        if same_aspect(claimed, raw) and not same_aspect(claimed, turned):
            return image, False
        if claimed == raw:  # a square image: the size cannot tell, and the tool showed raw pixels
            return image, False
    return ImageOps.exif_transpose(image), True


@dataclass(frozen=True)
class Normalised:
    """An image ready for a TFRecord: ``data`` is None when the file's own bytes will do."""

    width: int
    height: int
    changes: tuple[str, ...]
    data: bytes | None = None


def normalise_image(raw: bytes, claimed: tuple[int, int] | None, max_pixels: int | None) -> Normalised:
    """The real size of the image to train on, what had to change, and new bytes if any.

    JPEG and PNG in RGB, unrotated, are passed through untouched; anything else (greyscale,
    RGBA, CMYK, 16-bit, palette, BMP, WebP, an EXIF rotation) becomes an RGB JPEG. Raises one
    of ``DECODE_ERRORS`` for a file that cannot be decoded, :class:`ImageTooLargeError` above
    ``max_pixels``.
    """
    if not raw:
        raise OSError("zero-byte file")
    with pixel_limit(max_pixels), Image.open(io.BytesIO(raw)) as image:
        image.load()  # a truncated file fails here, not later in training
        fmt = image.format
        oriented, rotated = _orient(image, claimed)
        changes = ("exif_rotated",) if rotated else ()
        if fmt in PASS_THROUGH_FORMATS and image.mode == "RGB" and not rotated:
            return Normalised(image.width, image.height, changes)
        if image.mode != "RGB" or fmt not in PASS_THROUGH_FORMATS:
            changes += (f"converted_{fmt or 'unknown'}_{image.mode}".lower(),)
        rgb = _to_rgb(oriented)
        out = io.BytesIO()
        rgb.save(out, format="JPEG", quality=JPEG_QUALITY)
        return Normalised(rgb.width, rgb.height, changes, out.getvalue())


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB, compositing transparency on white and scaling 16-bit data down to 8 bits."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        return image.point(lambda v: v / 256).convert("L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def readable_bytes(raw: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> bytes:
    """An image file's bytes as training saw such a file: converted to an RGB JPEG when it
    had to be, else as they are."""
    return normalise_image(raw, None, max_pixels).data or raw


def converted_name(image: str) -> str:
    """A converted image's name: it holds JPEG bytes now (``a.bmp`` -> ``a.bmp.jpg``: appending
    never collides with another input; a rotated ``a.jpg`` keeps its name)."""
    return image if image.lower().endswith((".jpg", ".jpeg")) else f"{image}.jpg"


# The files read as images (anything but JPEG and PNG is converted to JPEG by cleaning); GIF
# and TIFF because datasets ship masks in them (Carvana's palette GIFs).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
