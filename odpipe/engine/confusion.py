"""Confusion matrices as people and DVC read them, the same for every task: rows are the true
class and columns the predicted one, whether what is counted is a pixel (segment) or an image
(classify), so that both tasks' reports are read the same way."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image


def row_shares(conf: np.ndarray) -> np.ndarray:
    """The confusion matrix with each row divided by its sum: where each true class's pixels or
    images went. A class absent from the truth keeps a row of zeros rather than NaN."""
    conf = np.asarray(conf, dtype=np.float64)
    totals = conf.sum(axis=1, keepdims=True)
    return np.divide(conf, totals, out=np.zeros_like(conf), where=totals > 0)


def normalised_confusion(conf: np.ndarray, names: Sequence[str]) -> list[dict]:
    """:func:`row_shares` as records ``{"actual", "predicted", "share"}``, one per cell, which is
    what DVC's confusion-matrix plot templates read."""
    shares = row_shares(conf)
    return [
        {"actual": actual, "predicted": predicted, "share": float(shares[i, j])}
        for i, actual in enumerate(names)
        for j, predicted in enumerate(names)
    ]


def confusion_figure(conf_normalised: np.ndarray, names: Sequence[str], unit: str) -> Image.Image:
    """The row-normalised confusion matrix as a heat map, each cell's share written in it, so
    that which class is taken for which reads at a glance; ``unit`` names what was counted
    ("pixels", "images") in the title."""
    shares = np.asarray(conf_normalised, dtype=np.float64)
    count = len(names)
    if shares.shape != (count, count):
        raise ValueError(f"confusion matrix has shape {shares.shape} but there are {count} class names")
    side = 2.5 + 0.45 * count  # inches: room for a share in each cell and the class names
    figure = Figure(figsize=(side + 1, side), dpi=100)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    heat = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(heat, ax=axes, fraction=0.046, pad=0.04)
    axes.set_xticks(range(count), names, rotation=90)
    axes.set_yticks(range(count), names)
    axes.set(xlabel="predicted", ylabel="true", title=f"Share of each true class's {unit}")
    for (row, column), share in np.ndenumerate(shares):
        colour = "white" if share > 0.5 else "black"
        axes.text(column, row, f"{share:.2f}", ha="center", va="center", fontsize=8, color=colour)
    figure.tight_layout()
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")
