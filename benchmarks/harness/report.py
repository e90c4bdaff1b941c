"""What a benchmark prints and keeps: progress lines, tables of measured runs, goal rows, and the
results file.

Every benchmark compares, on one machine in one run, what it measures against a reference (a
floor, a bare script, the smallest size): absolute times on a shared machine mislead, ratios
do not. A goal row is such a ratio with its goal; a ratio without a goal is reported beside the
goals for information. One format for all keeps the benchmarks' outputs comparable.
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from pathlib import Path

COLUMNS = {  # a measured run's key: (heading, format); the width is the format's
    "wall_s": ("wall s", "7.1f"),
    "images_per_s": ("img/s", "7.1f"),
    "startup_s": ("start s", "7.2f"),
    "work_s": ("work s", "7.2f"),
    "end_s": ("end s", "6.2f"),
    "once_started_images_per_s": ("img/s on", "8.1f"),
    "peak_rss_mb": ("RSS MB", "7.0f"),
    "tree_rss_mb": ("tree MB", "7.0f"),
}


def fmt(value: float | None, spec: str) -> str:
    """``value`` formatted by ``spec``; None (not measured) as a dash as wide."""
    return format("-", ">" + spec.split(".")[0]) if value is None else format(value, spec)


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or None if either was not measured (or is zero)."""
    return a / b if a and b else None


def goal_row(
    text: str, value: float | None, target: float | None = None, at_most: bool = False, note: str = ""
) -> dict:
    """One ratio measured: value, target (None: no goal, reported for information), pass (None:
    no goal, or not measured)."""
    ok = None if value is None or target is None else (value <= target if at_most else value >= target)
    return {"goal": text, "value": value, "target": target, "at_most": at_most, "pass": ok, "note": note}


def rss_row(stage: str, sizes: list, small: dict, large: dict, target: float | None = 1.2) -> dict:
    """A stage's peak RSS at the largest size over the smallest (``small`` and ``large``: the
    stages' runs by name), with the tree RSS's ratio in the note. The data stages stream: their
    memory must not grow with the dataset."""
    first, last = small.get(stage, {}), large.get(stage, {})
    tree = ratio(last.get("tree_rss_mb"), first.get("tree_rss_mb"))
    return goal_row(
        f"{stage} peak RSS, {sizes[-1]} / {sizes[0]} images",
        ratio(last.get("peak_rss_mb"), first.get("peak_rss_mb")),
        target,
        at_most=True,
        note=f"tree RSS {tree:.2f}x" if tree else "",
    )


def floor_row(text: str, run: dict, floor: dict, key: str, note: str = "") -> dict:
    """The tfrecord stage's throughput ``key`` once started against its I/O floor's (goal >= 0.5x):
    what the stage does beyond reading and writing the bytes must not cost more than they do.
    Start-up, which the floor hardly has, is reported apart, in the note."""
    startup = f"tfrecord {fmt(run.get('startup_s'), '.1f')} s, floor {fmt(floor.get('startup_s'), '.2f')} s"
    return goal_row(text, ratio(run.get(key), floor.get(key)), 0.5, note=f"{note}start-up: {startup}")


def print_goals(rows: list[dict], title: str = "ratios", width: int = 48) -> None:
    """Each row: PASS, FAIL, n/a (a goal not measured) or blank (no goal), the ratio, its goal."""
    print(f"\n{title}:")
    for row in rows:
        verdict = {True: "PASS", False: "FAIL", None: "n/a " if row["target"] else "    "}[row["pass"]]
        goal = f"(goal {'<=' if row['at_most'] else '>='} {row['target']}x)" if row["target"] else ""
        note = f"  ({row['note']})" if row["note"] else ""
        print(f"  {verdict}  {row['goal']:{width}s} {fmt(row['value'], '6.2f')}x  {goal:16s}{note}")


def progress(tag: str, run: dict) -> None:
    """The line printed as each measured run ends."""
    print(f"    {tag:26s} {run['wall_s']:8.1f} s  peak RSS {run['peak_rss_mb']:7.0f} MB", flush=True)


def failed(what: str, error: RuntimeError) -> dict:
    """A run that failed, summed up by its last error line (its log stays in the run folder): the
    benchmark goes on without what depends on it."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"[\w.]*(Error|Exception)\b", line)]
    summary = (errors or lines)[-1]
    print(f"    {what} FAILED: {summary}", flush=True)
    return {"error": summary, "detail": str(error)[-3000:]}


def print_runs(rows: list[tuple[str, str, dict]], columns: tuple[str, ...] = tuple(COLUMNS)) -> None:
    """A table of measured runs, one per (images, name, run), with the ``columns`` of COLUMNS."""
    heads = " ".join(format(COLUMNS[key][0], ">" + COLUMNS[key][1].split(".")[0]) for key in columns)
    print(f"{'images':>7s} {'run':28s} {heads}")
    for size, name, run in rows:
        if "error" in run:
            print(f"{size:>7s} {name:28s} FAILED: {run['error']}")
            continue
        print(f"{size:>7s} {name:28s} " + " ".join(fmt(run.get(key), COLUMNS[key][1]) for key in columns))


def header() -> dict:
    """The results' first keys: when, and on what machine."""
    return {"date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(), "machine": platform.platform()}


def finish(results: dict, out: Path, keep: bool) -> int:
    """Write the results to ``out`` (in the run folder by default: reports/ is tracked by git, and a
    benchmark changes nothing git tracks), say where; the exit status: 1 if a goal failed."""
    out.write_text(json.dumps(results, indent=2))
    print(f"\nresults: {out}  (logs beside it{'; project copies kept' if keep else ''})")
    return 0 if all(row["pass"] is not False for row in results["goals"]) else 1
