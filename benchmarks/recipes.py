"""Which detector recipe learns the built-in data best in one wall-clock budget (issue 14).

Each recipe of benchmarks/recipes.yaml is one `dvc exp run --queue` experiment of the product
itself, run one at a time: its steps are sized to the budget from its own measured training
rate, `train.max_minutes` stops it at the budget, the checkpoint is chosen on val and scored on
test by `evaluate`. Prints a table (test mAP, mAP@.5, mAP@.75, AP per class, best-val step, time
to val mAP 0.5, steps reached) and draws val mAP against wall time for every recipe in one
figure. The work copy (default ~/.cache/odpipe/bench-recipes) and its experiments are kept: recipes
already run at a budget are not run again, so the table can be built over several sessions,
screened first with a short budget (`--budget 8`); `dvc exp show` and the MLflow UI there show
the same runs.

Usage: python benchmarks/recipes.py [--budget MINUTES] [--only a,b] [--work DIR]
"""

from __future__ import annotations

import argparse
import csv
import filecmp
import io
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from odpipe.core.runtime import PARAMS_FILE, compose_params, load_params
from odpipe.devtools.project import copy_project, experiments, run_dvc

ROOT = Path(__file__).resolve().parents[1]
RECIPES = Path(__file__).with_name("recipes.yaml")
STEPS_PER_LOOP = 100
EVALUATIONS = 8  # val evaluations per run: the points of each curve
SLACK = 0.95  # of what is left of the budget after the start-up and the evaluations the probe measured
PROBE_LOOP, PROBE_EVAL_EVERY, PROBE_STEPS = 20, 60, 120  # evaluated at 60 and 120; timed from 20 to 60
REACHED = 0.5  # "time to val mAP 0.5"
# The anchor of issue 14: Ultralytics YOLOv8n from scratch, 160 px, batch 16, its default recipe,
# 30 minutes on the same 2-core machine, same split, scored with pycocotools (2026-11).
ANCHOR = {"name": "YOLOv8n from scratch (30 min)", "map": 0.860, "map_50": 0.992, "map_75": 0.964}
GIT = ["git", "-c", "user.name=odpipe-bench", "-c", "user.email=bench@odpipe.invalid"]


def git(work: Path, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=work, check=True, capture_output=True, text=True).stdout


def prepare(work: Path) -> None:
    """The work copy, made once and then brought to this checkout's code: an experiment whose
    code and params did not change keeps its results. Data stages run once, in the workspace,
    and are committed, so queued experiments take them from the cache."""
    if not (work / ".git").exists():
        copy_project(ROOT, work)
    else:
        for name in git(ROOT, "ls-files").splitlines():
            source, target = ROOT / name, work / name
            if source.is_file() and not (target.exists() and filecmp.cmp(source, target, shallow=False)):
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
    compose_params(work, [], work / PARAMS_FILE)
    run_dvc(work, "repro", "tfrecord", timeout=3600)
    git(work, "add", "-A")
    if git(work, "status", "--porcelain").strip():
        head = git(ROOT, "rev-parse", "--short", "HEAD").strip()
        git(work, "commit", "-q", "-m", f"bench-recipes: code and data as of {head}")


def overrides(values: list[str]) -> list[str]:
    return [arg for value in values for arg in ("-S", value)]


def file_at(work: Path, rev: str, path: str) -> str:
    return git(work, "show", f"{rev}:{path}")


def rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


@dataclass(frozen=True)
class Probe:
    """What a recipe costs here: training steps/s, seconds before the first step (model build,
    tracing, input pipeline), seconds of one val evaluation, and the evaluation model's build,
    paid once by the first."""

    rate: float
    startup: float
    evaluation: float
    evaluation_build: float

    def settings(self, budget: float) -> list[str]:
        """Steps that fill the budget: what start-up and EVALUATIONS evaluations leave of it, at
        this rate; max_minutes still caps the run if the machine slows down."""
        seconds = 60 * budget - self.startup - self.evaluation_build - EVALUATIONS * self.evaluation
        loops = max(EVALUATIONS, int(SLACK * seconds * self.rate / STEPS_PER_LOOP))
        every = math.ceil(loops / EVALUATIONS) * STEPS_PER_LOOP
        return [
            f"train.num_steps={loops * STEPS_PER_LOOP}",
            f"train.steps_per_loop={STEPS_PER_LOOP}",
            f"train.eval_every={every}",
            f"train.max_minutes={budget}",
        ]


def probe(work: Path, name: str, recipe: list[str]) -> Probe:
    """A short run of this recipe's train stage (an experiment removed afterwards), timed
    between two checkpoints with no evaluation between them, and evaluated twice: the second
    evaluation's time is each one's, the first's excess the evaluation model's build."""
    first, last = PROBE_LOOP, PROBE_EVAL_EVERY
    exp = f"probe-{name}"
    settings = [
        f"train.num_steps={PROBE_STEPS}",
        f"train.steps_per_loop={PROBE_LOOP}",
        f"train.eval_every={PROBE_EVAL_EVERY}",
    ]
    run_dvc(work, "exp", "run", "--temp", "-n", exp, *overrides([*recipe, *settings]), "train")
    paths = load_params(work).paths
    try:
        rev = experiments(work)[exp]["rev"]
        losses, val = rows(file_at(work, rev, paths.train_plot)), rows(file_at(work, rev, paths.val_plot))
    finally:
        run_dvc(work, "exp", "remove", exp)
    elapsed = {int(r["step"]): float(r["elapsed_s"]) for r in losses}
    rate = (last - first) / (elapsed[last] - elapsed[first])
    built, once = (float(row["val/seconds"]) for row in val)
    return Probe(rate, startup=elapsed[first] - first / rate, evaluation=once, evaluation_build=max(0.0, built - once))


def run_queue(work: Path, timeout_hours: float) -> None:
    run_dvc(work, "queue", "start", "-j", "1")
    deadline = time.monotonic() + 3600 * timeout_hours
    while re.search(r"\b(Queued|Running)\b", run_dvc(work, "queue", "status").stdout):
        if time.monotonic() > deadline:
            raise TimeoutError("the recipes' queue did not finish in time")
        time.sleep(20)
    failed = re.findall(r"^(\S+)\s.*Failed", run_dvc(work, "queue", "status").stdout, re.M)
    for name in failed:
        print(f"{name} failed:\n{run_dvc(work, 'queue', 'logs', name).stdout[-3000:]}")


def summary(work: Path, exp: dict) -> dict:
    """One row of the table: test metrics, and the val curve against wall time."""
    paths = load_params(work).paths
    test = exp["metrics"][paths.evaluate_report]
    curve = [
        (float(r["elapsed_s"]) / 60, float(r["val/map"]), int(r["step"]))
        for r in rows(file_at(work, exp["rev"], paths.val_plot))
    ]
    best = max(curve, key=lambda point: (point[1], -point[2]))
    reached = next((minutes for minutes, value, _ in curve if value >= REACHED), None)
    per_class = {k.removeprefix("ap/"): v for k, v in test.items() if k.startswith("ap/")}
    return {key: test[key] for key in ("map", "map_50", "map_75")} | {
        "per_class": per_class,
        "best_step": best[2],
        "best_val": best[1],
        "reached_min": reached,
        "steps": max(point[2] for point in curve),
        "curve": curve,
    }


def table(results: dict[str, dict], budget: float) -> str:
    classes = sorted({c for r in results.values() for c in r["per_class"]})
    head = ["recipe", "test mAP", "mAP@.5", "mAP@.75", *(f"AP {c}" for c in classes), "best val (step)"]
    head += [f"val {REACHED} at", "steps", "mAP / anchor"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in sorted(results.items(), key=lambda item: -item[1]["best_val"]):
        reached = f"{r['reached_min']:.1f} min" if r["reached_min"] is not None else "never"
        cells = [name, *(f"{r[key]:.3f}" for key in ("map", "map_50", "map_75"))]
        cells += [f"{r['per_class'].get(c, float('nan')):.3f}" for c in classes]
        anchor = f"{r['map'] / ANCHOR['map']:.2f}x"
        cells += [f"{r['best_val']:.3f} ({r['best_step']})", reached, str(r["steps"]), anchor]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(
        f"\nBudget {budget:g} min per recipe; rows by best val mAP (the choice is made on val, never test). "
        f"Anchor: {ANCHOR['name']}, test mAP {ANCHOR['map']}, mAP@.5 {ANCHOR['map_50']}, mAP@.75 {ANCHOR['map_75']}."
    )
    return "\n".join(lines)


def plot(results: dict[str, dict], budget: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name, r in sorted(results.items()):
        minutes, values, _ = zip(*r["curve"], strict=True)
        axes.plot(minutes, values, marker="o", label=name)
    axes.axhline(ANCHOR["map"], color="grey", linestyle="--", label=f"{ANCHOR['name']}, test")
    axes.set(xlabel="training wall time (min)", ylabel="val mAP@[.5:.95]", title=f"Recipes at {budget:g} min each")
    axes.set_xlim(0, budget * 1.05)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=30.0, help="wall-clock minutes of training per recipe")
    parser.add_argument("--only", help="comma-separated recipe names (default: all of recipes.yaml)")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "odpipe" / "bench-recipes")
    args = parser.parse_args(argv)
    recipes: dict[str, list[str]] = yaml.safe_load(RECIPES.read_text())
    if args.only:
        unknown = set(args.only.split(",")) - set(recipes)
        if unknown:
            parser.error(f"not in {RECIPES.name}: {', '.join(sorted(unknown))}")
        recipes = {name: recipes[name] for name in args.only.split(",")}
    tag = f"{args.budget:g}m"
    args.work = args.work.resolve()
    os.environ["PYTHONPATH"] = str(args.work)  # stages (and queue workers) import the copy's odpipe, not ours

    prepare(args.work)
    done = experiments(args.work, all_commits=True)
    pending = {name: recipe for name, recipe in recipes.items() if f"{name}-{tag}" not in done}
    print(f"{len(recipes) - len(pending)} recipe(s) already run at {tag}; running {', '.join(pending) or 'none'}")
    if run_dvc(args.work, "queue", "status").stdout.count("Running"):
        parser.error(f"experiments are running in {args.work}: probes beside them would measure a shared machine")
    sized = {}
    for name, recipe in pending.items():  # every probe before anything is queued: each one alone
        cost = probe(args.work, name, recipe)
        sized[name] = [*recipe, *cost.settings(args.budget)]
        print(
            f"  {name}: {cost.rate:.2f} steps/s, {cost.startup:.0f} s to start, {cost.evaluation:.0f} s per "
            f"evaluation (+{cost.evaluation_build:.0f} s once) -> {' '.join(sized[name])}"
        )
    for name, settings in sized.items():
        run_dvc(args.work, "exp", "run", "--queue", "-n", f"{name}-{tag}", *overrides(settings))
    if pending:
        run_queue(args.work, timeout_hours=len(pending) * args.budget / 60 * 2 + 1)

    done = experiments(args.work, all_commits=True)
    results = {name: summary(args.work, done[f"{name}-{tag}"]) for name in recipes if f"{name}-{tag}" in done}
    if not results:
        print("no recipe finished")
        return 1
    report = table(results, args.budget)
    figure = args.work / f"recipes-{tag}.png"
    plot(results, args.budget, figure)
    (args.work / f"recipes-{tag}.md").write_text(report + "\n")
    print(report)
    print(f"figure: {figure}\nexperiments: `dvc exp show` in {args.work}; MLflow: sqlite:///{args.work / 'mlflow.db'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
