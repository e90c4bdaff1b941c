"""Per-item work spread over processes, with results in input order and bounded memory.

Stages that touch every image (cleaning, TFRecord writing) run their per-image function here.
Results come back in the order of the inputs, and the main process makes every decision that
depends on earlier items, so the output is byte-identical whatever the number of workers. At
most ``window`` items are in flight, so memory does not grow with the dataset.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"


def cpu_quota(cpu_max: Path = CPU_MAX) -> int | None:
    """The CPUs a container's quota allows (``docker --cpus``, a Kubernetes limit), rounded
    up; None when there is no quota. The affinity mask does not show such a limit."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))


def available_cores() -> int:
    """The cores this process may use: its CPU set, capped by a container's CPU quota (a
    4-CPU pod on a 64-core host must not start 64 workers)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(cores, cpu_quota() or cores)


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

    Workers start from a fork server that preloads nothing, never as forks of this process:
    a process that has imported TensorFlow (a test run, the tfrecord stage) must not be
    forked. Each worker imports what it needs once, when it starts.
    """

    def __init__(self, count: int, chunk: int = 1, window: int | None = None) -> None:
        self.count = count
        self.chunk = chunk  # items sent together: each hand-over costs this process time
        self.window = window or 4 * count  # chunks in flight
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> Workers:
        if self.count > 1:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([])
            self._pool = ProcessPoolExecutor(self.count, mp_context=context)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def map(self, fn: Callable[[T], R], items: Iterable[T], inline: Callable[[T], bool] | None = None) -> Iterator[R]:
        """``map(fn, items)``, in order, with at most ``window`` chunks in flight. ``fn`` must be
        a module-level function (or a partial of one) and items picklable. Items for which
        ``inline`` says so run here: work lighter than sending it to a process and back (an
        image written as it is) costs less in this process."""
        if self._pool is None:
            yield from map(fn, items)
            return
        pending: deque[Future] = deque()
        chunk: list[T] = []
        for item in items:
            if inline is not None and inline(item):
                if chunk:
                    pending.append(self._pool.submit(_apply, fn, chunk))
                    chunk = []
                done: Future = Future()
                done.set_result([fn(item)])
                pending.append(done)
            else:
                chunk.append(item)
                if len(chunk) == self.chunk:
                    pending.append(self._pool.submit(_apply, fn, chunk))
                    chunk = []
            while pending and (pending[0].done() or len(pending) >= self.window):
                yield from pending.popleft().result()
        if chunk:
            pending.append(self._pool.submit(_apply, fn, chunk))
        while pending:
            yield from pending.popleft().result()


def _apply(fn: Callable[[T], R], chunk: list[T]) -> list[R]:
    """One hand-over's work, in a worker."""
    return [fn(item) for item in chunk]
