"""Per-item work spread over processes, with results in input order and bounded memory.

Stages that touch every image (cleaning, TFRecord writing) run their per-image function here.
Results come back in the order of the inputs, and the main process makes every decision that
depends on earlier items, so the output is byte-identical whatever the number of workers. At
most ``window`` items are in flight, so memory does not grow with the dataset.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def available_cores() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resolve_workers(workers: int | None, key: str) -> int:
    """``workers`` from config: null means every available core; below 1 is an error."""
    if workers is None:
        return available_cores()
    if workers < 1:
        raise ValueError(f"{key} must be >= 1 or null (every core), got {workers}")
    return int(workers)


class Workers:
    """A pool of ``count`` worker processes (none when 1: work runs in this process), opened
    once per stage and used for each ``map``.

    Workers come from a fork server, a clean interpreter: a process that has imported
    TensorFlow (a test run, the tfrecord stage) must not be forked itself.
    """

    def __init__(self, count: int, window: int | None = None) -> None:
        self.count = count
        self.window = window or 4 * count
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> Workers:
        if self.count > 1:
            self._pool = ProcessPoolExecutor(self.count, mp_context=multiprocessing.get_context("forkserver"))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """``map(fn, items)``, in order, with at most ``window`` items in flight. ``fn`` must be
        a module-level function (or a partial of one) and items picklable."""
        if self._pool is None:
            yield from map(fn, items)
            return
        pending: deque[Future] = deque()
        for item in items:
            pending.append(self._pool.submit(fn, item))
            if len(pending) >= self.window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
