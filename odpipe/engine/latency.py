"""How fast an exported model answers, from per-image timings: what every task's evaluation
reports beside its quality metrics."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """Per-image latency (median, 90th percentile) and throughput, one image at a time."""
    values = np.asarray(seconds or [np.nan], dtype=np.float64)
    return {
        "latency_ms_p50": float(np.median(values) * 1000),
        "latency_ms_p90": float(np.percentile(values, 90) * 1000),
        "images_per_second": float(len(seconds) / values.sum()) if len(seconds) else 0.0,
    }
