"""A command run to its end in a process of its own, measured: wall time and peak memory.

Each run is a process of its own because peak RSS is a process's: the kernel's high-water mark
(``ru_maxrss`` from ``os.wait4``) of the largest process of the command, exact, its waited-for
children included but not summed. With psutil, "tree RSS" is the peak of the RSS summed over the
process and its children, polled every 50 ms (pages shared after a fork count in every process).
Linux keeps a process's high-water mark across exec, so a child's is never below the RSS of the
process that started it: :func:`measure` refuses to run from a process that loaded TensorFlow.

The wall time is split in three: start-up (interpreter, imports, config: up to the first file
under ``watch``, polled every 10 ms, or to the READY line of :mod:`.children`), work (to the last
output file's mtime, or the DONE line) and end (what follows: manifests, interpreter exit, ~1 s
once TensorFlow is loaded).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from odpipe.devtools.project import python_env

from .children import DONE, READY, marks

MB = 2**20
FIRST_FILE_POLL = 0.01  # seconds
RSS_POLL_EVERY = 5  # first-file polls: the process tree's RSS every 50 ms


def files_under(folder: Path) -> list[Path]:
    """Every file under ``folder`` (subfolders included), sorted."""
    return sorted(Path(parent) / name for parent, _, names in os.walk(folder) for name in names)


def du(path: Path) -> int:
    """Bytes on disk under ``path`` (allocated blocks, not file sizes)."""
    return sum(file.lstat().st_blocks * 512 for file in files_under(path))


def _tree_rss(root) -> int:
    """RSS summed over ``root`` (a psutil.Process) and its descendants alive now."""
    import psutil

    rss = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            rss += process.memory_info().rss
        except psutil.Error:
            pass
    return rss


def measured(cmd: list[str], cwd: Path, log: Path, watch: Path | None = None) -> dict:
    """Run ``cmd`` in ``cwd`` to its end, its output to ``log``: wall seconds split into start-up,
    work and end (None where neither ``watch`` nor READY/DONE lines tell), peak RSS and tree RSS
    in MB (None: no psutil, or too short to poll). Raises RuntimeError, the log's tail in it, if
    the command fails. The environment's interpreter folder goes first on PATH, as ``dvc`` runs."""
    try:
        import psutil
    except ImportError:
        psutil = None
    env = python_env()
    launched, start = time.time(), time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
    seen = {"tree": 0, "first": None}
    stop = threading.Event()

    def poll() -> None:
        try:
            root = psutil.Process(proc.pid) if psutil else None
        except psutil.Error:
            root = None
        tick = 0
        while not stop.wait(FIRST_FILE_POLL):
            if watch is not None and seen["first"] is None and files_under(watch):
                seen["first"] = time.monotonic() - start
            tick += 1
            if root is not None and tick % RSS_POLL_EVERY == 0:
                try:
                    seen["tree"] = max(seen["tree"], _tree_rss(root))
                except psutil.Error:
                    pass

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    stop.set()
    poller.join()
    text = log.read_text(errors="replace")
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}), log {log}:\n{text[-3000:]}")
    startup, finished = seen["first"], None
    if watch is not None and startup is not None:
        finished = max(file.stat().st_mtime for file in files_under(watch)) - launched
    times = marks(text)
    if READY in times:
        startup, finished = times[READY] - launched, times[DONE] - launched
    return {
        "wall_s": wall,
        "startup_s": startup,
        "work_s": finished - startup if finished is not None else None,
        "end_s": wall - finished if finished is not None else None,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # KiB on Linux
        "tree_rss_mb": seen["tree"] / MB if seen["tree"] else None,
        "log": str(log),
    }


def measure(cmd: list[str], cwd: Path, log: Path, watch: Path | None = None) -> dict:
    """:func:`measured`, from a process without TensorFlow (its RSS would sit under every child's
    ``ru_maxrss``: ~500 MB), with the load average when it started, which says how much other work
    shared the machine."""
    if "tensorflow" in sys.modules:
        raise SystemExit("benchmark: TensorFlow is loaded in the benchmark's own process; load it in children only")
    load = os.getloadavg()[0]
    return measured(cmd, cwd, log, watch) | {"load_average": load}
