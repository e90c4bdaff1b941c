"""The classify task's speed and memory against what it wraps, side by side on one machine in one
run (``make bench-classify``).

Stages run as ``harness.runs`` runs them: each as its own process in a clean copy of the project,
from classify/ as ``dvc repro classify/dvc.yaml`` runs it, without DVC around it; peak RSS is the
kernel's high-water mark of the stage's largest process (``harness.memory``).

1. Training throughput: the train stage on ``--images`` built-in images for ``--epochs`` epochs,
   read from its own journal (``train/images_per_second``: training alone, val excluded; the first
   epoch, which traces, skipped), against a bare ``model.fit`` in a process of its own, written as
   TensorFlow's image classification tutorial writes it: ``image_dataset_from_directory`` on the
   train split's class folders (``.cache().prefetch()``), the same compiled model
   (``odpipe.classify.train.compiled_model``), batch and image size, timed epoch by epoch after a
   warm-up epoch. Each side's figure is the median of its epochs' images/s.
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
import shutil
from pathlib import Path

# Only the standard library and the harness (which keeps to it) at the top: this process must not
# load TensorFlow (see harness.memory.measure).
from harness.children import main_or_child
from harness.report import finish, header, print_goals
from harness.runs import run_folder
from harness.timing import timed_fit
from harness.training import add_arguments, chosen, data_and_train, report_data, report_train, shared_goals, stage_rates

SCRIPT = str(Path(__file__).resolve())
TASK = "classify"
FULL = {"images": 1200, "epochs": 5, "sizes": [2000, 20000]}
QUICK = {"images": 300, "epochs": 3, "sizes": [200, 1000]}


def bare_fit(folder: Path, epochs: int) -> dict:
    """``model.fit`` as TensorFlow's tutorial writes it, on the train split of the task folder
    ``folder`` laid out as class folders (links to the clean images)."""
    import tensorflow as tf
    from omegaconf import OmegaConf

    from odpipe.classify.clean import read_rows
    from odpipe.classify.train import compiled_model
    from odpipe.core.runtime import load_params
    from odpipe.engine.keras_loop import seed_everything

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
    data = data.cache().prefetch(tf.data.AUTOTUNE)  # the warm-up epoch fills the cache
    model = compiled_model(OmegaConf.to_container(params.model), len(names), size, train, epochs * len(data))
    return timed_fit(model, len(rows), epochs, data)


def report(results: dict) -> None:
    report_train(results, f"image {results['train']['setup']['image_size']}")
    report_data(results)
    print_goals(results["goals"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, FULL, QUICK, "classify_speed.json")
    args, overrides = parser.parse_known_args()
    sizes = chosen(parser, args, FULL, QUICK)

    from odpipe.core.runtime import load_params

    results = {**header(), "overrides": overrides, **sizes, "data": {}}
    with run_folder(TASK, args.keep) as (tmp, logs):
        folders, results["data"], results["train"] = data_and_train(tmp, logs, sizes, overrides, TASK, SCRIPT)
        trained = folders[sizes["images"]]
        results["train"]["setup"]["image_size"] = load_params(trained).classify.image_size
        if "error" not in results["train"]["stage"]:
            results["train"]["stage"] |= stage_rates(trained)
        results["goals"] = shared_goals(results)
    report(results)
    return finish(results, args.json or tmp / "classify_speed.json", args.keep)


if __name__ == "__main__":
    main_or_child(main, {"--bare-fit": lambda argv: bare_fit(Path(argv[0]), int(argv[1]))})
