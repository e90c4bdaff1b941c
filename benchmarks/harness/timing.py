"""Timing inside a process: repeated calls and Keras epochs, summed up by their median.

The machines these run on are shared with other work (a test suite, CI neighbours): a few calls
or epochs come out slow for reasons of their own. The median of several ignores them where a
mean would not; the first call or epoch, which traces the graph, is never timed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def timed_calls(call: Callable[[], object], repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``call``, after one untimed call that traces."""
    call()
    seconds = []
    for _ in range(repeats):
        start = time.monotonic()
        call()
        seconds.append(time.monotonic() - start)
    return seconds


def rate_summary(rates: list[float]) -> dict:
    """Images/s of each epoch and their median, as every train figure is reported."""
    return {"images_per_second": statistics.median(rates), "epoch_rates": rates}


def timed_fit(model, images_per_epoch: int, epochs: int, *data, **fit_kwargs) -> dict:
    """``model.fit(*data, **fit_kwargs)`` for one warm-up epoch (tracing, a dataset's cache
    filled), then for epochs 2 to ``epochs``, each timed from Keras's epoch hooks only (no
    per-step synchronisation): :func:`rate_summary` of their images/s."""
    import tensorflow as tf

    seconds: list[float] = []

    class EpochTimes(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.start = time.monotonic()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            seconds.append(time.monotonic() - self.start)

    model.fit(*data, epochs=1, verbose=0, **fit_kwargs)
    model.fit(*data, initial_epoch=1, epochs=epochs, verbose=0, callbacks=[EpochTimes()], **fit_kwargs)
    return rate_summary([images_per_epoch / s for s in seconds])
