"""One decision per (image, mask) pair of a segmentation dataset: kept, with its index mask as
a PNG, or dropped with exactly one reason.

Drop reasons: ``image_missing`` (a mask without its image), ``mask_missing`` (an image without a
mask: never taken for all background, as an image nobody labelled is not), ``image_unreadable``,
``image_too_large`` (over ``clean_split.max_image_pixels``, as for detection), ``mask_unreadable``,
``mask_lossy`` (a JPEG mask, or colours blurred around the class colours: re-export as PNG) and
``size_mismatch``. Kept with a note: ``unknown_mask_values`` (pixels of values, colours or labels
the class table lacks, set to void) and ``empty_mask`` (nothing but background or void).

:func:`check_pair` holds nothing between calls, so a process pool can run it over every pair;
send it ``dataset.without_pairs()`` rather than the dataset with all its pairs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from odpipe.core.images import DECODE_ERRORS, ImageTooLargeError, Normalised, normalise_image, pixel_limit
from odpipe.data.cleaning import Issue
from odpipe.data.index_masks import VOID, encode_png
from odpipe.segment.formats import MaskDataset, MaskError, MaskPair, load_index_mask


@dataclass(frozen=True)
class Checked:
    """The decision on one pair."""

    image: str | None  # the image; for a mask without its image, the mask (what the decision is filed under)
    kept: bool
    reason: str | None  # stable code when dropped
    detail: str  # for people: names the file(s)
    mask_png: bytes | None  # when kept: mode "L" PNG of the index mask, VOID = 255
    classes_present: tuple[int, ...]  # sorted class ids with at least one pixel
    size: tuple[int, int] | None  # (width, height)
    notes: tuple[Issue, ...]  # kept, but worth knowing
    # When the image had to change to be read as its labeller saw it (EXIF rotation) or to go
    # into a TFRecord (BMP, WebP, CMYK, 16-bit...): its new JPEG bytes; None when it passes as is.
    converted: bytes | None = None


def _dropped(image: str | None, reason: str, detail: str) -> Checked:
    return Checked(image, False, reason, detail, None, (), None, ())


def _normalised(root: Path, image: str, mask_size: tuple[int, int], max_pixels: int | None) -> Normalised:
    """The image as its labelling tool showed it (an EXIF rotation counts unless the mask has
    the unrotated shape, the same rule as for a detection annotation's size), with new bytes
    when it had to be converted."""
    return normalise_image((root / image).read_bytes(), mask_size, max_pixels)


def _notes(pair: MaskPair, unknown: Mapping[str, int], present: tuple[int, ...], background: int | None) -> list[Issue]:
    notes = []
    if unknown:
        counts = ", ".join(f"{key}: {count} px" for key, count in sorted(unknown.items()))
        detail = f"{pair.where}: values not in the class table set to void ({VOID}): {counts}"
        notes.append(Issue(str(pair.image), "unknown_mask_values", detail))
    if not set(present) - {background}:
        what = "background and void" if present else "void"
        notes.append(Issue(str(pair.image), "empty_mask", f"{pair.where}: every pixel is {what}"))
    return notes


def check_pair(root: Path, pair: MaskPair, dataset: MaskDataset, options: Mapping, max_pixels: int | None) -> Checked:
    """Decide on one pair: the mask is read first (its size says how an EXIF-rotated image was
    shown), then the image is decoded in full, so a truncated file is caught here."""
    if pair.image is None:  # filed under the mask's own path, as detection files an orphan annotation
        return _dropped(pair.where, "image_missing", f"{pair.where}: no image found for this mask")
    try:
        with pixel_limit(max_pixels):
            ids, unknown = load_index_mask(root, pair, dataset, options)
    except MaskError as err:
        return _dropped(pair.image, err.reason, err.detail)
    except ImageTooLargeError as err:  # the mask is the image's size: the pair is too large
        return _dropped(pair.image, "image_too_large", f"{pair.where}: {err}")
    height, width = ids.shape
    try:
        image = _normalised(root, pair.image, (width, height), max_pixels)
    except ImageTooLargeError as err:
        return _dropped(pair.image, "image_too_large", f"{pair.image}: {err}")
    except DECODE_ERRORS as err:
        return _dropped(pair.image, "image_unreadable", f"{pair.image}: {err}")
    except Exception as err:  # noqa: BLE001  Pillow raises more than it documents on malformed files
        return _dropped(pair.image, "image_unreadable", f"{pair.image}: {err!r}")
    if (image.width, image.height) != (width, height):
        detail = f"{pair.image} is {image.width}x{image.height}, its mask {pair.where} is {width}x{height}"
        return _dropped(pair.image, "size_mismatch", detail)
    counts = np.bincount(ids.ravel(), minlength=VOID + 1)[:VOID]
    present = tuple(int(i) for i in np.flatnonzero(counts))
    notes = _notes(pair, unknown, present, dataset.classes.background)
    notes += [Issue(pair.image, change, f"{pair.image}: {change}") for change in image.changes]
    png = encode_png(ids)
    return Checked(pair.image, True, None, "", png, present, (width, height), tuple(notes), image.data)
