"""``odpipe predict`` with a segmenter export (a folder with ``classes.json``): for each image its
class map as an index PNG (``masks/``, the ids of ``classes.json``), in the classes' colours
(``colour/``) and painted over the image (``overlays/``), and each class's share of its pixels."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image, UnidentifiedImageError

from odpipe.core.files import unique_stems
from odpipe.core.images import readable_bytes
from odpipe.data.index_masks import encode_png
from odpipe.segment.export import load_segmenter
from odpipe.segment.report import colorize, overlay


def predict_masks(model_dir: Path, images: Sequence[Path], out_dir: Path) -> tuple[list[dict], list[str], list[str]]:
    """Rows (file, size, share of each class) of every image, the errors of those that could not
    be read, and the CSV's columns; the pictures go under ``out_dir``."""
    segmenter = load_segmenter(model_dir)
    folders = {kind: out_dir / kind for kind in ("masks", "colour", "overlays")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    rows, errors = [], []
    for path, name in zip(images, unique_stems(images), strict=True):
        try:
            data = readable_bytes(path.read_bytes())
            class_map, _ = segmenter.predict(data)
        except UnidentifiedImageError:
            errors.append(f"{path}: cannot read the image (not an image format Pillow recognises)")
            continue
        except (OSError, SyntaxError, ValueError, tf.errors.InvalidArgumentError) as err:
            errors.append(f"{path}: cannot read the image ({err})")
            continue
        (folders["masks"] / f"{name}.png").write_bytes(encode_png(class_map))
        colorize(class_map, segmenter.colors).save(folders["colour"] / f"{name}.png")
        with Image.open(io.BytesIO(data)) as opened:
            overlay(opened.convert("RGB"), class_map, segmenter.colors).save(folders["overlays"] / f"{name}.jpg")
        shares = np.bincount(class_map.ravel(), minlength=len(segmenter.names)) / class_map.size
        height, width = class_map.shape
        rows.append(
            {"file": str(path), "width": width, "height": height}
            | {n: round(float(s), 4) for n, s in zip(segmenter.names, shares, strict=True)}
        )
    columns = ["file", "width", "height", *segmenter.names]
    return rows, errors, columns
