"""The exported segmenter over a split, scored as MMSegmentation scores (:mod:`odpipe.segment.metrics`):
each image read from its file and segmented at its own size through the export's serving path,
its confusion added to the split's, its own mIoU kept to find the worst, its latency timed."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from odpipe.data.index_masks import decode_png
from odpipe.engine.latency import latency_summary
from odpipe.segment.clean import Row
from odpipe.segment.metrics import confusion, image_miou

Segment = Callable[[bytes], np.ndarray]  # encoded image -> class map at its size


@dataclass
class SplitScores:
    """What a pass over a split leaves: the summed confusion, each image's mIoU, latencies."""

    confusion: np.ndarray
    image_miou: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def speed(self) -> dict[str, float]:
        return latency_summary(self.seconds)

    def worst(self, count: int) -> list[int]:
        """Indices of the ``count`` images of lowest mIoU (images with nothing to score last)."""
        scores = np.nan_to_num(np.asarray(self.image_miou, dtype=np.float64), nan=np.inf)
        return [int(i) for i in np.argsort(scores, kind="stable")[:count]]


def score_rows(segment: Segment, rows: Sequence[Row], images: Path, masks: Path, num_classes: int) -> SplitScores:
    """Segment every row's image (timed) and score it against its mask; memory stays flat."""
    scores = SplitScores(np.zeros((num_classes, num_classes), dtype=np.int64))
    for row in rows:
        encoded = (images / row.image).read_bytes()
        start = time.perf_counter()
        predicted = segment(encoded)
        scores.seconds.append(time.perf_counter() - start)
        truth = decode_png((masks / row.mask).read_bytes())
        scores.confusion += confusion(truth, predicted, num_classes)
        scores.image_miou.append(image_miou(truth, predicted, num_classes))
    return scores
