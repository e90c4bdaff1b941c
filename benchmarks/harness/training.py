"""What the Keras tasks' benchmarks (segment, classify) share: their command line, the train
stage against a bare ``model.fit`` on the same data, and their goals: the train stage >= 0.9x the
bare fit, the data stages' peak memory flat from the smallest size to the largest.

Each side's figure is the median of its epochs' images/s after the first (which traces): a
machine shared with other work slows a few epochs, which the median ignores. The stage's come
from its own journal (training alone, val excluded); the bare fit is a child process of the
benchmark's own script (``--bare-fit FOLDER EPOCHS``), which prints them.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .report import goal_row, print_runs, ratio, rss_row
from .runs import DATA_STAGES, data_runs, run_child, stage_command
from .timing import rate_summary


def add_arguments(parser: argparse.ArgumentParser, full: dict, quick: dict, results_file: str) -> None:
    """The sizes (None: ``--quick``'s or the full run's, see :func:`chosen`), the results file and
    ``--keep``."""
    parser.add_argument("--quick", action="store_true", help=f"smaller defaults, a few minutes: {quick}")
    parser.add_argument("--images", type=int, help=f"built-in images for the train part (default {full['images']})")
    parser.add_argument("--epochs", type=int, help=f"train epochs, the first not timed (default {full['epochs']})")
    parser.add_argument("--sizes", type=int, nargs="+", help=f"data stages' dataset sizes (default {full['sizes']})")
    parser.add_argument("--json", type=Path, help=f"results file (default: {results_file} in the run folder)")
    parser.add_argument("--keep", action="store_true", help="keep the project copies")


def chosen(parser: argparse.ArgumentParser, args: argparse.Namespace, full: dict, quick: dict) -> dict:
    """``--quick``'s or the full run's value of each size argument not given; sizes sorted."""
    defaults = quick if args.quick else full
    values = {key: default if getattr(args, key) is None else getattr(args, key) for key, default in defaults.items()}
    values["sizes"] = sorted(set(values["sizes"]))
    if values["epochs"] < 2 or len(values["sizes"]) < 2:
        parser.error("--epochs needs at least 2 (the first is not timed) and --sizes two different sizes")
    return values


def data_and_train(
    tmp: Path, logs: Path, sizes: dict, overrides: list[str], task: str, script: str
) -> tuple[dict[int, Path], dict, dict]:
    """The data stages at every size (``--images`` among them), then the train part on the copy
    of ``--images``: (the copies' task folders, the data runs, the train runs)."""
    every = sorted({*sizes["sizes"], sizes["images"]})
    settings = [f"train.epochs={sizes['epochs']}", "train.patience=null", *overrides]
    folders, data = data_runs(tmp, every, logs, settings, task)
    print(f"  train, {sizes['images']} images ({time.strftime('%H:%M:%S')})", flush=True)
    train = run_train(folders[sizes["images"]], sizes["epochs"], logs / str(sizes["images"]), script)
    return folders, data, train


def run_train(folder: Path, epochs: int, logs: Path, script: str) -> dict:
    """The train stage and the bare fit (``script --bare-fit``) on its records, measured. The
    stage's images/s are read by :func:`stage_rates` once nothing more is measured."""
    from odpipe.core.project import project_root
    from odpipe.core.runtime import load_params

    params = load_params(folder)
    # copy_project keeps .cache/: a work folder of the source with the same inputs would resume.
    shutil.rmtree(project_root(folder) / params.paths.train_work, ignore_errors=True)
    bare = [sys.executable, script, "--bare-fit", str(folder), str(epochs)]
    out = {
        "stage": run_child("train stage", stage_command(folder, "train"), folder, logs / "train_stage.log"),
        "bare": run_child("train bare", bare, folder, logs / "train_bare.log"),
    }
    model = params.model
    out["setup"] = {
        "epochs": epochs,
        "batch_size": params.train.batch_size,
        "model": f"{model.architecture} alpha {model.get('alpha', '-')}",
    }
    return out


def stage_rates(folder: Path) -> dict:
    """The train stage's images/s per epoch after the first, from its journal, and their median.
    Loads TensorFlow (odpipe.engine), so only after the last process is measured."""
    from odpipe.core.files import read_jsonl
    from odpipe.core.project import project_root
    from odpipe.core.runtime import load_params
    from odpipe.engine.journal import Journal
    from odpipe.engine.keras_loop import IMAGES_PER_SECOND

    (work,) = (project_root(folder) / load_params(folder).paths.train_work).iterdir()
    return rate_summary([row[IMAGES_PER_SECOND] for row in read_jsonl(work / Journal.LOSSES) if row["step"] > 1])


def shared_goals(results: dict) -> list[dict]:
    """The train stage against the bare fit; each data stage's peak RSS, largest size / smallest."""
    train = results["train"]
    rows = [
        goal_row(
            "train stage / bare model.fit, images/s",
            ratio(train["stage"].get("images_per_second"), train["bare"].get("images_per_second")),
            0.9,
            note="training only, first epoch skipped",
        )
    ]
    sizes = results["sizes"]
    small, large = (results["data"][str(size)] for size in (sizes[0], sizes[-1]))
    # ingest generates the images: its memory is reported for information only
    rows += [rss_row(stage, sizes, small, large, None if stage == "ingest" else 1.2) for stage in DATA_STAGES]
    return rows


def report_train(results: dict, size: str) -> None:
    """The machine, then the train stage and the bare fit: images/s, each epoch's, wall, memory."""
    print(f"\n{results['cpus']} CPU(s), {results['machine']}")
    train = results["train"]
    setup = train["setup"]
    print(
        f"\ntrain: {results['images']} images, {setup['epochs']} epochs (first skipped), batch {setup['batch_size']}, "
        f"{size}, {setup['model']}"
    )
    for name, run in (("train stage", train["stage"]), ("bare model.fit", train["bare"])):
        if "error" in run:
            print(f"  {name:16s} FAILED: {run['error']}")
            continue
        epochs = " ".join(f"{rate:.1f}" for rate in run["epoch_rates"])
        print(
            f"  {name:16s} {run['images_per_second']:7.1f} images/s (epochs: {epochs})  wall {run['wall_s']:4.0f} s  "
            f"peak RSS {run['peak_rss_mb']:5.0f} MB  load average {run['load_average']:.1f}"
        )


def report_data(results: dict, more: Sequence[tuple[str, str, dict]] = ()) -> None:
    """The data stages' runs at every size, then ``more`` rows of the same kind."""
    print("\ndata stages:")
    runs = [(size, name, run) for size, stages in results["data"].items() for name, run in stages.items()]
    print_runs([*runs, *more], ("wall_s", "startup_s", "work_s", "peak_rss_mb", "tree_rss_mb"))
