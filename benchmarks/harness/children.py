"""The child processes a benchmark runs of its own script (``python <script> --<child> ...``) and
the lines they print for the parent, which reads them from the child's log.

A child runs in a process of its own so that its peak RSS and start-up are its own. It may print:
- READY (then the time) once started: imports done, output open. The parent's start-up split
  ends there rather than at the first output file, which a reference writing one file does not
  show;
- DONE (then the time and a count) once its output is closed: the end of its work;
- RESULT (then JSON) on one line: what it measured itself (a bare fit's epochs, say).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

READY = "BENCHMARK_READY"
DONE = "BENCHMARK_DONE"
RESULT = "BENCHMARK_RESULT"


def ready() -> None:
    """Say that start-up is over (printed as the work begins)."""
    print(READY, time.time(), flush=True)


def done(count: int) -> None:
    """Say that the work is over (output closed) and how many items it did."""
    print(DONE, f"{time.time()},{count}", flush=True)


def marks(text: str) -> dict[str, float]:
    """The times of the READY and DONE lines in a child's output (absent: not printed)."""
    found = dict(line.split()[:2] for line in text.splitlines() if line.startswith((READY, DONE)))
    return {word: float(value.split(",")[0]) for word, value in found.items()}


def done_count(text: str) -> int:
    """The count a child's DONE line gives."""
    return int(next(line.split(",")[-1] for line in text.splitlines() if line.startswith(DONE)))


def child_result(run: dict) -> dict:
    """The measured run of a child with the RESULT it printed merged in (none: the run as it is)."""
    lines = Path(run["log"]).read_text(errors="replace").splitlines()
    result = next((line.split(maxsplit=1)[1] for line in lines if line.startswith(RESULT)), "{}")
    return run | json.loads(result)


def write_floor(files: Iterable[Path], out: Path) -> None:
    """The I/O floor of a converter: every file read and its bytes written to ``out``, nothing
    else; READY once ``out`` is open (the caller says DONE with its count)."""
    with open(out, "wb") as f:
        ready()
        for path in files:
            f.write(path.read_bytes())


def main_or_child(main: Callable[[], int], children: dict[str, Callable[[list[str]], dict | None]]) -> None:
    """Exit with ``main()``, or, when the first argument names one of ``children`` (``--floor``),
    run that child on the remaining arguments in this process; a dict it returns is printed as
    the RESULT line."""
    if len(sys.argv) > 1 and sys.argv[1] in children:
        result = children[sys.argv[1]](sys.argv[2:])
        if result is not None:
            print(RESULT, json.dumps(result), flush=True)
        sys.exit(0)
    sys.exit(main())
