"""The segment task's speed and memory, each part against what it wraps or its floor, side by side
on one machine in one run (``make bench-segment``).

Every stage runs as its own process in a clean copy of the project, from segment/ as
``dvc repro segment/dvc.yaml`` runs it, without DVC around it (``harness.runs``); wall time and
peak RSS are measured as ``harness.memory`` says (this process loads TensorFlow after its last
child only: Linux keeps a process's high-water mark across exec).

1. Training throughput (``harness.training``): the train stage on ``--images`` built-in images
   for ``--epochs`` epochs, from its own journal, against a bare ``model.fit`` in a process of its
   own: the same compiled model, optimizer and loss (``odpipe.segment.train.compiled_model``),
   batch and crop size, on the train records decoded once into numpy crops (one random crop each),
   as many epochs of as many steps. Each side's figure is the median of its epochs' images/s, the
   first (tracing) skipped. The model is small by default (``SMALL_MODEL``) so that this takes
   minutes on a CPU; overrides change it.
2. Data stages: ingest, clean_split and tfrecord at each ``--sizes``, peak RSS at the largest over
   the smallest; then, on the largest, the tfrecord stage without augmentation
   (``augment.copies=0``: the records hold the clean bytes as they are) against the floor, a
   process that reads every clean image and mask and writes their bytes to one file: MB/s of those
   bytes once started.
3. Sliding windows: one 2048x1024 RGB image through the default segment model (random weights) as
   the export runs it (``SegmenterModule``: windows of ``segment.tile_size``, then of
   ``--large-tile``), against the model called once on the whole image padded to the stride. Each
   mode runs in its own process, so that peak RSS is the mode's; a baseline process (the model
   built, one tile segmented) gives the memory every mode pays anyway. Seconds per image are the
   median of ``--repeats`` calls after one that traces.

Goals, printed PASS/FAIL beside every other ratio measured: train stage >= 0.9x the bare fit;
clean_split and tfrecord peak RSS at the largest size <= 1.2x that at the smallest; tfrecord
>= 0.5x the floor. Results go to a JSON file in the run folder, whose path is printed. Hydra
overrides apply to every project copy (after ``SMALL_MODEL``) and to the sliding windows' model.
A failed run is reported (its log stays in the run folder) and the benchmark goes on without what
depends on it.

Usage: python benchmarks/segment_speed.py [--quick] [--images 300] [--epochs 6] [--sizes 1000 10000]
       [--repeats 3] [--large-tile 512] [--keep] [--json PATH] [hydra overrides ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Only the standard library and the harness (which keeps to it) at the top: the floor runs this
# file as its own process, and its start-up must be a bare script's.
from harness.children import done, main_or_child, write_floor
from harness.memory import MB, files_under
from harness.report import finish, floor_row, goal_row, header, print_goals, ratio
from harness.runs import ROOT, run_child, run_folder, run_stage
from harness.timing import timed_calls, timed_fit
from harness.training import add_arguments, chosen, data_and_train, report_data, report_train, shared_goals, stage_rates

SCRIPT = str(Path(__file__).resolve())
TASK = "segment"
SMALL_MODEL = ("model.alpha=0.35", "segment.tile_size=96")  # the train part's default, before overrides
FULL = {"images": 300, "epochs": 6, "sizes": [1000, 10000], "repeats": 3}
QUICK = {"images": 100, "epochs": 2, "sizes": [100, 400], "repeats": 1}
WINDOW_IMAGE = (1024, 2048)  # height, width: a Cityscapes frame


# --- the child processes, each run as `python segment_speed.py --<name> ...` ---------------------


def bare_fit(folder: Path, epochs: int) -> dict:
    """``model.fit`` as a user would write it, on the train records of the task folder ``folder``
    decoded once (one random crop per example, as the stage's pipeline makes them) into numpy."""
    import numpy as np
    import tensorflow as tf
    from omegaconf import OmegaConf

    from odpipe.core.runtime import load_params
    from odpipe.data.records import shard_pattern
    from odpipe.engine.keras_loop import seed_everything
    from odpipe.segment.losses import class_weights
    from odpipe.segment.records import parse_example
    from odpipe.segment.train import compiled_model, pad_crop

    params = load_params(folder)
    train, crop = OmegaConf.to_container(params.train), params.segment.tile_size
    seed_everything(train["seed"])
    files = sorted(tf.io.gfile.glob(shard_pattern(folder / params.paths.tfrecord, "train")))
    pairs = tf.data.TFRecordDataset(files).map(parse_example).map(lambda image, mask: pad_crop(image, mask, crop))
    crops = [(image.numpy(), mask.numpy()) for image, mask in pairs]
    batch = train["batch_size"]
    steps = max(1, len(crops) // batch)  # the stage's steps per epoch
    x = np.stack([image for image, _ in crops[: steps * batch]])
    y = np.stack([mask for _, mask in crops[: steps * batch]])
    names = json.loads((folder / params.paths.classes).read_text())["names"]
    pixels = json.loads((folder / params.paths.clean_split_report).read_text())["splits"]["train"]["pixels"]
    weights = class_weights([pixels[name] for name in names], train["class_weights"])
    model = compiled_model(OmegaConf.to_container(params.model), len(names), train, weights, epochs * steps)
    return timed_fit(model, steps * batch, epochs, x, y, batch_size=batch)


def whole_image(model: Callable) -> Callable:
    """The reference the windows are measured against: the model called once on the whole image,
    padded to the stride, with the outputs of ``SegmenterModule.segment_pixels``."""
    import tensorflow as tf

    from odpipe.segment.models import padded_size

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.float32)])
    def segment(image: tf.Tensor) -> dict[str, tf.Tensor]:
        height, width = tf.shape(image)[0], tf.shape(image)[1]
        padded_height, padded_width = padded_size(height, width)
        padded = tf.pad(image, [[0, padded_height - height], [0, padded_width - width], [0, 0]])
        probabilities = tf.nn.softmax(model(padded[None], training=False)[0])[:height, :width]
        return {"class_map": tf.argmax(probabilities, -1, output_type=tf.int32), "probabilities": probabilities}

    return segment


def window_inference(mode: str, tile: int, repeats: int, overrides: list[str]) -> dict:
    """Seconds per image of one mode (``baseline``: one tile-sized image in one window,
    ``windows``, ``whole``) on a random WINDOW_IMAGE, after one call that traces."""
    import numpy as np
    import tensorflow as tf
    from omegaconf import OmegaConf

    from odpipe.core.runtime import compose_config
    from odpipe.segment.export import SegmenterModule
    from odpipe.segment.models import build_model

    cfg = compose_config(ROOT, [f"task={TASK}", *overrides])
    model_cfg = OmegaConf.to_container(cfg.model)
    model = build_model(model_cfg["architecture"], len(cfg.dataset.classes), model_cfg)
    shape = (tile, tile, 3) if mode == "baseline" else (*WINDOW_IMAGE, 3)
    image = tf.constant(np.random.default_rng(0).uniform(0, 255, shape), tf.float32)
    module = SegmenterModule(model, tile, cfg.segment.tile_overlap)  # kept: its tf.function holds it weakly
    segment = whole_image(model) if mode == "whole" else module.segment_pixels
    seconds = timed_calls(lambda: segment(image)["class_map"].numpy(), repeats)
    return {"seconds_per_image": statistics.median(seconds), "seconds": seconds, "image": list(shape)}


def pair_floor(images: Path, masks: Path, out: Path) -> None:
    """The floor of the tfrecord stage without augmentation: every clean image and mask read and
    their bytes written to one file; DONE counts the images."""
    image_files = files_under(images)
    write_floor([*image_files, *files_under(masks)], out)
    done(len(image_files))


# --- the parts measured --------------------------------------------------------------------------


def run_write_speed(folder: Path, floor_file: Path, logs: Path) -> dict:
    """The tfrecord stage without augmentation against the floor, in MB/s of the clean images and
    masks once started (both read the same files)."""
    from odpipe.core.runtime import load_params

    paths = load_params(folder).paths
    images, masks = folder / paths.clean_images, folder / paths.clean_masks
    megabytes = sum(path.stat().st_size for path in [*files_under(images), *files_under(masks)]) / MB
    cmd = [sys.executable, SCRIPT, "--floor", str(images), str(masks), str(floor_file)]
    out = {
        "tfrecord": run_stage(folder, "tfrecord", logs, ("augment.copies=0",)),
        "floor": run_child("floor", cmd, ROOT, logs / "floor.log"),
    }
    floor_file.unlink(missing_ok=True)
    for run in out.values():
        if run.get("work_s"):
            run["mb_per_s"] = megabytes / run["work_s"]
    return {"megabytes": megabytes, "runs": out}


def run_windows(tile: int, large_tile: int, repeats: int, overrides: list[str], logs: Path) -> dict:
    """Each inference mode in its own process (see the module docstring)."""
    modes = {"baseline": ("baseline", tile), f"windows {tile}": ("windows", tile)}
    modes |= {f"windows {large_tile}": ("windows", large_tile), "whole image": ("whole", tile)}
    out: dict[str, dict] = {}
    for name, (mode, size) in modes.items():
        cmd = [sys.executable, SCRIPT, "--window", mode, str(size), str(repeats), *overrides]
        out[name] = run_child(name, cmd, ROOT, logs / f"window_{mode}_{size}.log")
    return out


# --- goals and the report ------------------------------------------------------------------------


def goals(results: dict) -> list[dict]:
    """Every ratio measured: the shared goals, the write floor, the sliding windows."""
    rows = shared_goals(results)
    tfrecord, floor = results["write_speed"]["runs"]["tfrecord"], results["write_speed"]["runs"]["floor"]
    title, note = "tfrecord (augment.copies=0) / floor, MB/s", "once started; "
    rows.append(floor_row(title, tfrecord, floor, "mb_per_s", note))
    windows = results["windows"]
    whole, baseline = windows["whole image"], windows["baseline"].get("peak_rss_mb", 0)
    for name, run in windows.items():
        if not name.startswith("windows"):
            continue
        seconds = ratio(run.get("seconds_per_image"), whole.get("seconds_per_image"))
        rows.append(goal_row(f"{name} / whole image, s per image", seconds))
        above = ratio(run.get("peak_rss_mb", 0) - baseline, whole.get("peak_rss_mb", 0) - baseline)
        rows.append(
            goal_row(
                f"{name} / whole image, peak RSS",
                ratio(run.get("peak_rss_mb"), whole.get("peak_rss_mb")),
                note=f"above the baseline process's: {above:.2f}x" if above and baseline else "",
            )
        )
    return rows


def report(results: dict) -> None:
    report_train(results, f"crop {results['train']['setup']['crop']}")
    largest = str(results["sizes"][-1])
    report_data(
        results, [(largest, f"{name} (write speed)", run) for name, run in results["write_speed"]["runs"].items()]
    )
    height, width = WINDOW_IMAGE
    print(f"\nsliding windows: one {width}x{height} image, default segment model, random weights")
    for name, run in results["windows"].items():
        if "error" in run:
            print(f"  {name:16s} FAILED: {run['error']}")
            continue
        print(
            f"  {name:16s} {run['seconds_per_image']:7.2f} s/image  peak RSS {run['peak_rss_mb']:6.0f} MB  "
            f"load average {run['load_average']:.1f}"
        )
    print(
        "  (on a GPU, whole-image inference is bounded by GPU memory, which grows with the image;"
        " windows bound it by the tile, at any image size)"
    )
    print_goals(results["goals"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, FULL, QUICK, "segment_speed.json")
    parser.add_argument("--repeats", type=int, help=f"timed calls per inference mode (default {FULL['repeats']})")
    parser.add_argument("--large-tile", type=int, default=512, help="the second window size (a multiple of 32)")
    args, overrides = parser.parse_known_args()
    sizes = chosen(parser, args, FULL, QUICK)

    from odpipe.core.runtime import compose_config, load_params

    results = {**header(), "overrides": overrides, "small_model": list(SMALL_MODEL), **sizes, "data": {}}
    with run_folder(TASK, args.keep) as (tmp, logs):
        folders, results["data"], results["train"] = data_and_train(
            tmp, logs, sizes, [*SMALL_MODEL, *overrides], TASK, SCRIPT
        )
        trained, largest = folders[sizes["images"]], sizes["sizes"][-1]
        results["train"]["setup"]["crop"] = load_params(trained).segment.tile_size
        print(f"  write speed, {largest} images ({time.strftime('%H:%M:%S')})", flush=True)
        results["write_speed"] = run_write_speed(folders[largest], tmp / "floor.bin", logs / str(largest))
        print(f"  sliding windows ({time.strftime('%H:%M:%S')})", flush=True)
        tile = compose_config(ROOT, [f"task={TASK}", *overrides]).segment.tile_size
        results["windows"] = run_windows(tile, args.large_tile, sizes["repeats"], overrides, logs)
        if "error" not in results["train"]["stage"]:
            results["train"]["stage"] |= stage_rates(trained)  # loads TensorFlow: nothing measured after
        results["goals"] = goals(results)
    report(results)
    return finish(results, args.json or tmp / "segment_speed.json", args.keep)


if __name__ == "__main__":
    main_or_child(
        main,
        {
            "--floor": lambda argv: pair_floor(*(Path(a) for a in argv)),
            "--bare-fit": lambda argv: bare_fit(Path(argv[0]), int(argv[1])),
            "--window": lambda argv: window_inference(argv[0], int(argv[1]), int(argv[2]), argv[3:]),
        },
    )
