"""The classify task's speed and memory against what it wraps, side by side on one machine in one
run (``make bench-classify``).

Stages run as segment_speed runs them (its helpers are reused): each as its own process in a
clean copy of the project, from classify/ as ``dvc repro classify/dvc.yaml`` runs it, without
DVC around it; peak RSS is the kernel's high-water mark of the stage's largest process.

1. Training throughput: the train stage on ``--images`` built-in images for ``--epochs`` epochs,
   read from its own journal (``train/images_per_second``: training alone, val excluded; the first
   epoch, which traces, skipped), against a bare ``model.fit`` in a process of its own, written as
   TensorFlow's image classification tutorial writes it: ``image_dataset_from_directory`` on the
   train split's class folders (``.cache().prefetch()``), the same compiled model
   (``cls_training.compiled_model``), batch and image size, timed epoch by epoch after a warm-up
   epoch. Each side's figure is the median of its epochs' images/s.
2. Data stages: ingest, clean_split and tfrecord at each ``--sizes``, peak RSS at the largest over
   the smallest.

Goals, printed PASS/FAIL: train stage >= 0.9x the bare fit; clean_split and tfrecord peak RSS at
the largest size <= 1.2x that at the smallest. Results go to a JSON file in the run folder, whose
path is printed. Hydra overrides apply to every project copy.

Usage: python benchmarks/classify_speed.py [--quick] [--images 1200] [--epochs 5] [--sizes 2000 20000]
       [--keep] [--json PATH] [hydra overrides ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Only the standard library and the other benchmarks (which keep to it) at the top: this
# process must not load TensorFlow (see segment_speed.measure).
from segment_speed import data_runs, report_ratios, report_train, run_train, shared_goals, stage_rates

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(Path(__file__).resolve())
TASK = "classify"
FULL = {"images": 1200, "epochs": 5, "sizes": [2000, 20000]}
QUICK = {"images": 300, "epochs": 3, "sizes": [200, 1000]}
RESULT = "CLASSIFY_SPEED_RESULT"  # the bare fit's result: this word, then JSON, on one line


def bare_fit(folder: Path, epochs: int) -> dict:
    """``model.fit`` as TensorFlow's tutorial writes it, on the train split of the task folder
    ``folder`` laid out as class folders (links to the clean images)."""
    import tensorflow as tf
    from omegaconf import OmegaConf

    from odpipe.classify_data import read_rows
    from odpipe.cls_training import compiled_model
    from odpipe.keras_training import seed_everything
    from odpipe.runtime import load_params

    params = load_params(folder)
    train, size = OmegaConf.to_container(params.train), params.classify.image_size
    names = json.loads((folder / params.paths.classes).read_text())["names"]
    layout = folder / "bare_train"
    shutil.rmtree(layout, ignore_errors=True)
    rows = read_rows(folder / params.paths.clean_split / "train.csv")
    for i, row in enumerate(rows):
        link = layout / names[row.label] / f"{i:06d}{Path(row.image).suffix}"
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to((folder / params.paths.clean_images / row.image).resolve())
    seed_everything(train["seed"])
    batch = train["batch_size"]
    data = tf.keras.utils.image_dataset_from_directory(
        layout, label_mode="categorical", class_names=names, image_size=(size, size), batch_size=batch, seed=0
    )
    data = data.cache().prefetch(tf.data.AUTOTUNE)
    steps = len(data)
    model = compiled_model(OmegaConf.to_container(params.model), len(names), size, train, epochs * steps)
    seconds: list[float] = []

    class EpochTimes(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.start = time.monotonic()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            seconds.append(time.monotonic() - self.start)

    model.fit(data, epochs=1, verbose=0)  # warm-up: tracing, and the cache filled
    model.fit(data, initial_epoch=1, epochs=epochs, verbose=0, callbacks=[EpochTimes()])
    rates = [len(rows) / s for s in seconds]
    return {"images_per_second": statistics.median(rates), "epoch_rates": rates}


def report(results: dict) -> None:
    report_train(results, f"image {results['train']['setup']['image_size']}")
    print("\ndata stages:")
    for size, stages in results["data"].items():
        for name, run in stages.items():
            done = "error" not in run
            print(
                f"  {size:>7s} {name:12s} "
                + (f"{run['wall_s']:7.1f} s  {run['peak_rss_mb']:6.0f} MB" if done else f"FAILED: {run['error']}")
            )
    report_ratios(results["goals"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"smaller defaults, a few minutes: {QUICK}")
    parser.add_argument("--images", type=int, help=f"built-in images for the train part (default {FULL['images']})")
    parser.add_argument("--epochs", type=int, help=f"train epochs, the first not timed (default {FULL['epochs']})")
    parser.add_argument("--sizes", type=int, nargs="+", help=f"data stages' dataset sizes (default {FULL['sizes']})")
    parser.add_argument("--json", type=Path, help="results file (default: classify_speed.json in the run folder)")
    parser.add_argument("--keep", action="store_true", help="keep the project copies")
    args, overrides = parser.parse_known_args()
    chosen = {
        k: getattr(args, k) if getattr(args, k) is not None else v for k, v in (QUICK if args.quick else FULL).items()
    }
    sizes = sorted(set(chosen["sizes"]))
    if chosen["epochs"] < 2 or len(sizes) < 2:
        parser.error("--epochs needs at least 2 (the first is not timed) and --sizes two different sizes")

    from odpipe.runtime import load_params

    os.environ.pop("MLFLOW_TRACKING_URI", None)  # the train stage's runs go to each copy's own store
    tmp = Path(tempfile.mkdtemp(prefix="odpipe-bench-classify-"))
    logs = tmp / "logs"
    logs.mkdir()
    print(f"run folder {tmp}", flush=True)
    results = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(), "machine": platform.platform()}
    results |= {"overrides": overrides, **chosen, "sizes": sizes, "data": {}}
    folders: dict[int, Path] = {}
    try:
        every = sorted({*sizes, chosen["images"]})
        project_settings = [f"train.epochs={chosen['epochs']}", "train.patience=null", *overrides]
        folders, results["data"] = data_runs(tmp, every, logs, project_settings, TASK)
        print(f"  train, {chosen['images']} images ({time.strftime('%H:%M:%S')})", flush=True)
        images = folders[chosen["images"]]
        results["train"] = run_train(images, chosen["epochs"], logs / str(chosen["images"]), SCRIPT, RESULT)
        results["train"]["setup"]["image_size"] = load_params(images).classify.image_size
        if "error" not in results["train"]["stage"]:
            results["train"]["stage"] |= stage_rates(images)
        results["goals"] = shared_goals(results)
    finally:
        if not args.keep:
            for folder in folders.values():
                shutil.rmtree(folder.parent, ignore_errors=True)
    report(results)
    out = args.json or tmp / "classify_speed.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"\nresults: {out}  (logs beside it{'; project copies kept' if args.keep else ''})")
    return 0 if all(row["pass"] is not False for row in results["goals"]) else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--bare-fit":
        print(RESULT, json.dumps(bare_fit(Path(sys.argv[2]), int(sys.argv[3]))), flush=True)
        sys.exit(0)
    sys.exit(main())
