"""The segment task's speed and memory, each part against what it wraps or its floor, side by side
on one machine in one run (``make bench-segment``).

Every stage runs as its own process in a clean copy of the project (``odpipe.project.copy_project``),
from segment/ as ``dvc repro segment/dvc.yaml`` runs it, without DVC's hashing and caching around
it. Wall time (split into start-up, work and end) and peak RSS are measured as
benchmarks/data_speed.py measures them: its ``measured`` is reused, so peak RSS is the kernel's
high-water mark of the stage's largest process, and "tree" the polled sum over its processes.
Linux keeps a process's high-water mark across exec, so a child's is never below the RSS of the
process that started it: this one never loads TensorFlow before its last child has run.

1. Training throughput: the train stage on ``--images`` built-in images for ``--epochs`` epochs,
   read from its own journal (``train/images_per_second`` per epoch: training alone, val excluded;
   the first epoch, which traces, skipped), against a bare ``model.fit`` in a process of its own:
   the same compiled model, optimizer and loss (``seg_training.compiled_model``), batch and crop
   size, on the train records decoded once into numpy crops (one random crop each), timed epoch by
   epoch over as many epochs of as many steps after a warm-up epoch. Each side's figure is the
   median of its epochs' images/s, which a few epochs slowed by other work on the machine do not
   move. The model is small by default (``SMALL_MODEL``) so that this takes minutes on a CPU;
   overrides change it.
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
>= 0.5x the floor. Results go to a JSON file in the run folder, whose path is printed (as
data_speed's: a run changes nothing git tracks). Hydra overrides apply to every project copy
(after ``SMALL_MODEL``) and to the sliding windows' model. A failed run is reported (its log stays
in the run folder) and the benchmark goes on without what depends on it.

Usage: python benchmarks/segment_speed.py [--quick] [--images 300] [--epochs 6] [--sizes 1000 10000]
       [--repeats 3] [--large-tile 512] [--keep] [--json PATH] [hydra overrides ...]
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
from collections.abc import Callable
from pathlib import Path

# Only the standard library and data_speed (which keeps to it) at the top: the floor runs this
# file as its own process, and its start-up must be a bare script's.
from data_speed import DONE, MB, READY, WATCHED, failed, fmt, measured

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(Path(__file__).resolve())
TASK = "segment"
DATA_STAGES = ("ingest", "clean_split", "tfrecord")
SMALL_MODEL = ("model.alpha=0.35", "segment.tile_size=96")  # the train part's default, before overrides
FULL = {"images": 300, "epochs": 6, "sizes": [1000, 10000], "repeats": 3}
QUICK = {"images": 100, "epochs": 2, "sizes": [100, 400], "repeats": 1}
WINDOW_IMAGE = (1024, 2048)  # height, width: a Cityscapes frame
RESULT = "SEGMENT_SPEED_RESULT"  # a child process's result: this word, then JSON, on one line


# --- the child processes, each run as `python segment_speed.py --<name> ...` ---------------------


def bare_fit(folder: Path, epochs: int) -> dict:
    """``model.fit`` as a user would write it, on the train records of the task folder ``folder``
    decoded once (one random crop per example, as the stage's pipeline makes them) into numpy."""
    import numpy as np
    import tensorflow as tf
    from omegaconf import OmegaConf

    from odpipe.keras_training import seed_everything
    from odpipe.mask_records import parse_example
    from odpipe.runtime import load_params
    from odpipe.seg_losses import class_weights
    from odpipe.seg_training import compiled_model, pad_crop
    from odpipe.tfrecord import shard_pattern

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
    seconds: list[float] = []

    class EpochTimes(tf.keras.callbacks.Callback):
        """Each epoch's seconds (epoch hooks only: no per-step synchronisation)."""

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.start = time.monotonic()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            seconds.append(time.monotonic() - self.start)

    model.fit(x, y, batch_size=batch, epochs=1, verbose=0)  # warm-up: tracing
    model.fit(x, y, batch_size=batch, initial_epoch=1, epochs=epochs, verbose=0, callbacks=[EpochTimes()])
    rates = [steps * batch / s for s in seconds]
    return {"images_per_second": statistics.median(rates), "epoch_rates": rates}


def whole_image(model: Callable) -> Callable:
    """The reference the windows are measured against: the model called once on the whole image,
    padded to the stride, with the outputs of ``SegmenterModule.segment_pixels``."""
    import tensorflow as tf

    from odpipe.seg_models import padded_size

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

    from odpipe.runtime import compose_config
    from odpipe.seg_export import SegmenterModule
    from odpipe.seg_models import build_model

    cfg = compose_config(ROOT, [f"task={TASK}", *overrides])
    model_cfg = OmegaConf.to_container(cfg.model)
    model = build_model(model_cfg["architecture"], len(cfg.dataset.classes), model_cfg)
    shape = (tile, tile, 3) if mode == "baseline" else (*WINDOW_IMAGE, 3)
    image = tf.constant(np.random.default_rng(0).uniform(0, 255, shape), tf.float32)
    module = SegmenterModule(model, tile, cfg.segment.tile_overlap)  # kept: its tf.function holds it weakly
    segment = whole_image(model) if mode == "whole" else module.segment_pixels
    segment(image)["class_map"].numpy()
    seconds = []
    for _ in range(repeats):
        start = time.monotonic()
        segment(image)["class_map"].numpy()
        seconds.append(time.monotonic() - start)
    return {"seconds_per_image": statistics.median(seconds), "seconds": seconds, "image": list(shape)}


def pair_floor(images: Path, masks: Path, out: Path) -> int:
    """The floor of the tfrecord stage without augmentation: every clean image and mask read and
    their bytes written to one file. Prints data_speed's start and end lines; returns the images."""
    image_files = files_under(images)
    every_file = [*image_files, *files_under(masks)]
    with open(out, "wb") as f:
        print(READY, time.time(), flush=True)
        for path in every_file:
            f.write(path.read_bytes())
    print(DONE, f"{time.time()},{len(image_files)}", flush=True)
    return len(image_files)


def child_main(name: str, argv: list[str]) -> int:
    """``--floor IMAGES MASKS OUT``, ``--bare-fit FOLDER EPOCHS`` or ``--window MODE TILE REPEATS
    [override ...]``: one child, in this process, its result printed for the parent to read."""
    if name == "--floor":
        pair_floor(*(Path(a) for a in argv))
        return 0
    if name == "--bare-fit":
        result = bare_fit(Path(argv[0]), int(argv[1]))
    else:
        mode, tile, repeats, *overrides = argv
        result = window_inference(mode, int(tile), int(repeats), overrides)
    print(RESULT, json.dumps(result), flush=True)
    return 0


CHILDREN = ("--floor", "--bare-fit", "--window")


# --- running stages and children ---------------------------------------------------------------


def measure(cmd: list[str], cwd: Path, log: Path, watch: Path | None = None) -> dict:
    """data_speed's ``measured``, from a process without TensorFlow (Linux keeps a process's peak
    RSS across exec, so a child's ``ru_maxrss`` is at least the RSS this process had when it
    started it: TensorFlow loaded here would put ~500 MB under every figure), with the load
    average when it started, which says how much other work shared the machine."""
    if "tensorflow" in sys.modules:
        raise SystemExit("segment_speed: TensorFlow is loaded in the benchmark's own process; load it in children only")
    load = os.getloadavg()[0]
    return measured(cmd, cwd, log, watch) | {"load_average": load}


def child_result(run: dict, marker: str = RESULT) -> dict:
    """The run with the result line its child printed (``marker``, then JSON)."""
    lines = Path(run["log"]).read_text(errors="replace").splitlines()
    return run | json.loads(next(line for line in lines if line.startswith(marker)).split(maxsplit=1)[1])


def stage_command(folder: Path, name: str) -> list[str]:
    """A stage's script as the task's dvc.yaml runs it, with this interpreter."""
    import yaml

    from odpipe.project import stage_script
    from odpipe.runtime import DVC_FILE

    cmd = yaml.safe_load((folder / DVC_FILE).read_text())["stages"][name]["cmd"]
    return [sys.executable, stage_script(cmd)]


def run_stage(folder: Path, name: str, logs: Path, overrides: tuple[str, ...] = ()) -> dict:
    """One stage of the task folder ``folder``, measured (raises RuntimeError if it fails)."""
    from odpipe.runtime import load_params

    watch = None
    if name in WATCHED:
        watch = folder / load_params(folder).paths[WATCHED[name]]
        shutil.rmtree(watch, ignore_errors=True)  # the stage recreates it; stale files would end start-up
    tag = "_".join([name, *(o.replace("=", "") for o in overrides)])
    run = measure([*stage_command(folder, name), *overrides], folder, logs / f"{tag}.log", watch)
    print(f"    {tag:26s} {run['wall_s']:8.1f} s  peak RSS {run['peak_rss_mb']:7.0f} MB", flush=True)
    return run | {"overrides": list(overrides)}


def make_project(tmp: Path, size: int, overrides: list[str], task: str = TASK) -> Path:
    """A copy of the project with ``size`` built-in images; ``task``'s pipeline folder."""
    from odpipe.project import copy_project
    from odpipe.runtime import PARAMS_FILE, TASK_FOLDERS, compose_params, load_params

    work = copy_project(ROOT, tmp / f"n{size}" / "project")
    folder = work / TASK_FOLDERS[task]
    compose_params(work, [f"task={task}", f"dataset.num_images={size}", *overrides], folder / PARAMS_FILE)
    if load_params(folder).dataset.source != f"synthetic_{task}":
        raise SystemExit(f"this benchmark generates the built-in dataset: dataset.source must be synthetic_{task}")
    return folder


def data_runs(tmp: Path, sizes: list[int], logs: Path, overrides: list[str], task: str = TASK) -> tuple[dict, dict]:
    """A project copy per size, its data stages run: (the copies' task folders, their runs)."""
    folders, runs = {}, {}
    for size in sizes:
        print(f"  data stages, {size} images ({time.strftime('%H:%M:%S')})", flush=True)
        folders[size] = make_project(tmp, size, overrides, task)
        (logs / str(size)).mkdir()
        runs[str(size)] = run_data_stages(folders[size], logs / str(size))
    return folders, runs


def run_data_stages(folder: Path, logs: Path) -> dict:
    """The data stages in DAG order; one that fails is reported and those after it are not run."""
    runs: dict[str, dict] = {}
    for name in DATA_STAGES:
        try:
            runs[name] = run_stage(folder, name, logs)
        except RuntimeError as error:
            runs[name] = failed(name, error)
            break
    return runs


def run_train(folder: Path, epochs: int, logs: Path, script: str = SCRIPT, marker: str = RESULT) -> dict:
    """The train stage and the bare fit (``script --bare-fit``, its result line after ``marker``)
    on its records; the bare fit's images/s, the median of its epochs' after the first (a machine
    shared with other work slows some epochs; the median ignores a few). The stage's come from its
    journal, read by :func:`stage_rates` once nothing more is measured."""
    from odpipe.project import project_root
    from odpipe.runtime import load_params

    params = load_params(folder)
    work_root = project_root(folder) / params.paths.train_work
    # copy_project keeps .cache/: a work folder of the source with the same inputs would resume.
    shutil.rmtree(work_root, ignore_errors=True)
    out: dict[str, dict] = {}
    for name, cmd in (
        ("stage", stage_command(folder, "train")),
        ("bare", [sys.executable, script, "--bare-fit", str(folder), str(epochs)]),
    ):
        try:
            run = measure(cmd, folder, logs / f"train_{name}.log")
            out[name] = child_result(run, marker) if name == "bare" else run
            print(f"    train {name:20s} {run['wall_s']:8.1f} s  peak RSS {run['peak_rss_mb']:7.0f} MB", flush=True)
        except RuntimeError as error:
            out[name] = failed(f"train {name}", error)
    model = params.model
    out["setup"] = {
        "epochs": epochs,
        "batch_size": params.train.batch_size,
        "model": f"{model.architecture} alpha {model.get('alpha', '-')}",
    }
    return out


def stage_rates(folder: Path) -> dict:
    """The train stage's images/s per epoch after the first, from its journal, and their median.
    Loads TensorFlow (:mod:`odpipe.seg_training`), so only after the last process is measured."""
    from odpipe.files import read_jsonl
    from odpipe.journal import Journal
    from odpipe.keras_training import IMAGES_PER_SECOND
    from odpipe.project import project_root
    from odpipe.runtime import load_params

    (work,) = (project_root(folder) / load_params(folder).paths.train_work).iterdir()
    rates = [row[IMAGES_PER_SECOND] for row in read_jsonl(work / Journal.LOSSES) if row["step"] > 1]
    return {"images_per_second": statistics.median(rates), "epoch_rates": rates}


def files_under(folder: Path) -> list[Path]:
    """Every file under ``folder`` (a format's own subfolders included), sorted."""
    return sorted(Path(parent) / name for parent, _, names in os.walk(folder) for name in names)


def run_write_speed(folder: Path, floor_file: Path, logs: Path) -> dict:
    """The tfrecord stage without augmentation against the floor, in MB/s of the clean images and
    masks once started (both read the same files)."""
    from odpipe.runtime import load_params

    paths = load_params(folder).paths
    images, masks = folder / paths.clean_images, folder / paths.clean_masks
    megabytes = sum(path.stat().st_size for path in [*files_under(images), *files_under(masks)]) / MB
    out: dict[str, dict] = {}
    try:
        out["tfrecord"] = run_stage(folder, "tfrecord", logs, ("augment.copies=0",))
    except RuntimeError as error:
        out["tfrecord"] = failed("tfrecord augment.copies=0", error)
    try:
        out["floor"] = measure(
            [sys.executable, SCRIPT, "--floor", str(images), str(masks), str(floor_file)], ROOT, logs / "floor.log"
        )
        floor_file.unlink()
        print(f"    {'floor':26s} {out['floor']['wall_s']:8.1f} s", flush=True)
    except RuntimeError as error:
        out["floor"] = failed("floor", error)
    for run in out.values():
        if run.get("work_s"):
            run["mb_per_s"] = megabytes / run["work_s"]
    return {"megabytes": megabytes, "runs": out}


def run_windows(tile: int, large_tile: int, repeats: int, overrides: list[str], logs: Path) -> dict:
    """Each inference mode in its own process (see the module docstring)."""
    modes = {
        "baseline": ("baseline", tile),
        f"windows {tile}": ("windows", tile),
        f"windows {large_tile}": ("windows", large_tile),
        "whole image": ("whole", tile),
    }
    out: dict[str, dict] = {}
    for name, (mode, size) in modes.items():
        cmd = [sys.executable, SCRIPT, "--window", mode, str(size), str(repeats), *overrides]
        try:
            run = out[name] = child_result(measure(cmd, ROOT, logs / f"window_{mode}_{size}.log"))
            print(
                f"    {name:26s} {run['seconds_per_image']:8.2f} s/image  peak RSS {run['peak_rss_mb']:7.0f} MB",
                flush=True,
            )
        except RuntimeError as error:
            out[name] = failed(name, error)
    return out


# --- goals and the report ------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def goal_row(
    text: str, value: float | None, target: float | None = None, at_most: bool = False, note: str = ""
) -> dict:
    """One ratio measured: value, target (None: no goal, reported for information), pass."""
    ok = None if value is None or target is None else (value <= target if at_most else value >= target)
    return {"goal": text, "value": value, "target": target, "at_most": at_most, "pass": ok, "note": note}


def shared_goals(results: dict) -> list[dict]:
    """What both Keras tasks' benchmarks aim at: the train stage against the bare fit, and the data
    stages' peak memory flat from the smallest size to the largest."""
    train = results["train"]
    rows = [
        goal_row(
            "train stage / bare model.fit, images/s",
            ratio(train["stage"].get("images_per_second"), train["bare"].get("images_per_second")),
            0.9,
            note="training only, first epoch skipped",
        )
    ]
    small, large = (results["data"][str(size)] for size in (results["sizes"][0], results["sizes"][-1]))
    for stage in DATA_STAGES:
        first, last = small.get(stage, {}), large.get(stage, {})
        tree = ratio(last.get("tree_rss_mb"), first.get("tree_rss_mb"))
        rows.append(
            goal_row(
                f"{stage} peak RSS, {results['sizes'][-1]} / {results['sizes'][0]} images",
                ratio(last.get("peak_rss_mb"), first.get("peak_rss_mb")),
                None if stage == "ingest" else 1.2,  # ingest generates the images: informative only
                at_most=True,
                note=f"tree RSS {tree:.2f}x" if tree else "",
            )
        )
    return rows


def goals(results: dict) -> list[dict]:
    """Every ratio measured: the shared goals, the write floor, the sliding windows."""
    rows = shared_goals(results)

    def row(text: str, value: float | None, note: str = "") -> None:
        rows.append(goal_row(text, value, note=note))

    tfrecord, floor = results["write_speed"]["runs"]["tfrecord"], results["write_speed"]["runs"]["floor"]
    rows.append(
        goal_row(
            "tfrecord (augment.copies=0) / floor, MB/s",
            ratio(tfrecord.get("mb_per_s"), floor.get("mb_per_s")),
            0.5,
            note=f"once started; start-up: tfrecord {fmt(tfrecord.get('startup_s'), '.1f')} s, "
            f"floor {fmt(floor.get('startup_s'), '.2f')} s",
        )
    )
    windows = results["windows"]
    whole, baseline = windows["whole image"], windows["baseline"].get("peak_rss_mb", 0)
    for name, run in windows.items():
        if not name.startswith("windows"):
            continue
        row(f"{name} / whole image, s per image", ratio(run.get("seconds_per_image"), whole.get("seconds_per_image")))
        above = ratio(run.get("peak_rss_mb", 0) - baseline, whole.get("peak_rss_mb", 0) - baseline)
        row(
            f"{name} / whole image, peak RSS",
            ratio(run.get("peak_rss_mb"), whole.get("peak_rss_mb")),
            note=f"above the baseline process's: {above:.2f}x" if above and baseline else "",
        )
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


def report_ratios(rows: list[dict]) -> None:
    print("\nratios:")
    for row in rows:
        verdict = {True: "PASS", False: "FAIL", None: "n/a " if row["target"] else "    "}[row["pass"]]
        goal = f"(goal {'<=' if row['at_most'] else '>='} {row['target']}x)" if row["target"] else ""
        note = f"  ({row['note']})" if row["note"] else ""
        print(f"  {verdict}  {row['goal']:48s} {fmt(row['value'], '6.2f')}x  {goal:16s}{note}")


def report(results: dict) -> None:
    report_train(results, f"crop {results['train']['setup']['crop']}")

    print("\ndata stages:")
    print(f"{'images':>7s} {'run':28s} {'wall s':>7s} {'start s':>7s} {'work s':>7s} {'RSS MB':>7s} {'tree MB':>7s}")
    largest = str(results["sizes"][-1])
    runs = [(size, name, run) for size, stages in results["data"].items() for name, run in stages.items()]
    runs += [(largest, f"{name} (write speed)", run) for name, run in results["write_speed"]["runs"].items()]
    for size, name, run in runs:
        if "error" in run:
            print(f"{size:>7s} {name:28s} FAILED: {run['error']}")
            continue
        print(
            f"{size:>7s} {name:28s} {run['wall_s']:7.1f} {fmt(run['startup_s'], '7.2f')} {fmt(run['work_s'], '7.2f')} "
            f"{run['peak_rss_mb']:7.0f} {fmt(run['tree_rss_mb'], '7.0f')}"
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

    report_ratios(results["goals"])


def settings(args: argparse.Namespace) -> dict:
    """``--quick``'s or the full run's value of each size argument not given."""
    chosen = QUICK if args.quick else FULL
    return {key: getattr(args, key) if getattr(args, key) is not None else default for key, default in chosen.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"smaller defaults, a few minutes: {QUICK}")
    parser.add_argument("--images", type=int, help=f"built-in images for the train part (default {FULL['images']})")
    parser.add_argument("--epochs", type=int, help=f"train epochs, the first not timed (default {FULL['epochs']})")
    parser.add_argument("--sizes", type=int, nargs="+", help=f"data stages' dataset sizes (default {FULL['sizes']})")
    parser.add_argument("--repeats", type=int, help=f"timed calls per inference mode (default {FULL['repeats']})")
    parser.add_argument("--large-tile", type=int, default=512, help="the second window size (a multiple of 32)")
    parser.add_argument("--json", type=Path, help="results file (default: segment_speed.json in the run folder)")
    parser.add_argument("--keep", action="store_true", help="keep the project copies")
    args, overrides = parser.parse_known_args()
    chosen = settings(args)
    sizes = sorted(set(chosen["sizes"]))
    if chosen["epochs"] < 2 or len(sizes) < 2:
        parser.error("--epochs needs at least 2 (the first is not timed) and --sizes two different sizes")

    from odpipe.runtime import compose_config, load_params

    os.environ.pop("MLFLOW_TRACKING_URI", None)  # the train stage's runs go to each copy's own store
    tmp = Path(tempfile.mkdtemp(prefix="odpipe-bench-segment-"))
    logs = tmp / "logs"
    logs.mkdir()
    print(f"run folder {tmp}", flush=True)
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpus": os.cpu_count(),
        "machine": platform.platform(),
        "overrides": overrides,
        "small_model": list(SMALL_MODEL),
        **chosen,
        "sizes": sizes,
        "data": {},
    }
    folders: dict[int, Path] = {}
    try:
        every = sorted({*sizes, chosen["images"]})
        project_settings = [f"train.epochs={chosen['epochs']}", "train.patience=null", *SMALL_MODEL, *overrides]
        folders, results["data"] = data_runs(tmp, every, logs, project_settings)
        print(f"  train, {chosen['images']} images ({time.strftime('%H:%M:%S')})", flush=True)
        results["train"] = run_train(folders[chosen["images"]], chosen["epochs"], logs / str(chosen["images"]))
        results["train"]["setup"]["crop"] = load_params(folders[chosen["images"]]).segment.tile_size
        print(f"  write speed, {sizes[-1]} images ({time.strftime('%H:%M:%S')})", flush=True)
        results["write_speed"] = run_write_speed(folders[sizes[-1]], tmp / "floor.bin", logs / str(sizes[-1]))
        print(f"  sliding windows ({time.strftime('%H:%M:%S')})", flush=True)
        tile = compose_config(ROOT, [f"task={TASK}", *overrides]).segment.tile_size
        results["windows"] = run_windows(tile, args.large_tile, chosen["repeats"], overrides, logs)
        if "error" not in results["train"]["stage"]:
            results["train"]["stage"] |= stage_rates(folders[chosen["images"]])
        results["goals"] = goals(results)
    finally:
        if not args.keep:
            for folder in folders.values():
                shutil.rmtree(folder.parent, ignore_errors=True)
    report(results)
    out = args.json or tmp / "segment_speed.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"\nresults: {out}  (logs beside it{'; project copies kept' if args.keep else ''})")
    return 0 if all(row["pass"] is not False for row in results["goals"]) else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in CHILDREN:
        sys.exit(child_main(sys.argv[1], sys.argv[2:]))
    sys.exit(main())
