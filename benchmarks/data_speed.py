"""The data stages (ingest, clean_split, convert, tfrecord) at two dataset sizes, and the
tfrecord stage against the converters users write today, side by side on one machine in one run.

For each ``--sizes`` (default 2000 and 20000 built-in images of about 640 px on the long side,
JPEG quality 90), a clean copy of the project runs each stage as its own process
(``python stages/<stage>.py``, as ``dvc repro`` would, without DVC's hashing and caching around
it) and prints its wall time, images/s and peak memory. Peak RSS is the kernel's high-water mark
of the largest process of the stage (``ru_maxrss`` from ``os.wait4`` on the stage's process:
exact, workers included, but not summed); with psutil, "tree RSS" is the peak of the RSS summed
over the stage and its child processes, polled every 50 ms (pages shared after a fork count in
every process). For ingest, tfrecord and the references the wall time is split in three:
start-up (interpreter, imports, config: up to the first output file), work (to the last output
file written) and end (what follows: ingest's manifest, interpreter exit, ~1 s once TensorFlow is
loaded); images/s "once started" is over the work alone.

On the largest size, clean_split and tfrecord also run with each ``--workers`` count
(``clean_split.workers`` / ``tfrecord.workers``), and three references convert the
same clean images, each a process of its own, start-up included and reported apart:
- seed 002 (the course notes' converter): parse each VOC XML, decode the image and re-encode
  it, write one TFRecord with the OD API's keys;
- seed 001: every XML into one CSV (one process), then pandas group-by filename, the raw image
  bytes into one TFRecord (a second process);
- the I/O floor: read every image file and write its bytes to one file.

Goals, printed PASS/FAIL: peak RSS of clean_split and tfrecord at the largest size <= 1.2x
that at the smallest; tfrecord >= 5x seed 002 (whole process, images/s) and >= 0.5x the I/O
floor once started; clean_split >= 1.7x as fast with the last ``--workers`` count as with the
first. Results go to a JSON file in the run folder (reports/ is tracked by git), whose path is
printed. Every input was written just before it is read, so it is normally in the page cache.
A stage that fails is reported (its log stays in the run folder) and the run goes on without
what depends on it.

Usage: python benchmarks/data_speed.py [--sizes 2000 20000] [--workers 1 2] [--keep]
       [--min-side 480] [--max-side 640] [--jpeg-quality 90] [--json PATH] [hydra overrides ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# Only the standard library at the top: the references run this file as their own process, and
# their start-up must be what a user's script pays, not odpipe's.
ROOT = Path(__file__).resolve().parents[1]
STAGES = ("ingest", "clean_split", "convert", "tfrecord")
WATCHED = {"ingest": "raw", "tfrecord": "tfrecord"}  # stage -> paths.* whose first file ends start-up
READY = "DATA_SPEED_READY"  # printed by a reference once started: its output is open, imports done
DONE = "DATA_SPEED_DONE"
MB = 2**20
FIRST_FILE_POLL = 0.01  # seconds
RSS_POLL_EVERY = 5  # first-file polls: the process tree's RSS every 50 ms


# --- the references, each run as `python data_speed.py --reference NAME ...` ---------------------


def _ready() -> None:
    print(READY, time.time(), flush=True)


def _label_ids(classes: list[str]) -> dict[str, int]:
    return {name: i for i, name in enumerate(classes, start=1)}


def seed_002(xml_dir: Path, image_dir: Path, out: Path, classes: list[str]) -> int:
    """The notes' LabelImg converter: lxml per XML, cv2 decode, tf.io.encode_jpeg, one file."""
    import cv2
    import tensorflow as tf
    from lxml import etree

    ids = _label_ids(classes)

    def feature(kind: str, values: list) -> tf.train.Feature:
        lists = {"bytes": tf.train.BytesList, "float": tf.train.FloatList, "int64": tf.train.Int64List}
        return tf.train.Feature(**{f"{kind}_list": lists[kind](value=values)})

    count = 0
    with tf.io.TFRecordWriter(str(out)) as writer:
        _ready()
        for xml in sorted(xml_dir.glob("*.xml")):
            root = etree.parse(str(xml)).getroot()
            filename = root.findtext("filename")
            width, height = int(root.findtext("size/width")), int(root.findtext("size/height"))
            objects = [
                (o.findtext("name"), *(int(float(o.findtext(f"bndbox/{k}"))) for k in ("xmin", "ymin", "xmax", "ymax")))
                for o in root.iter("object")
            ]
            rgb = cv2.cvtColor(cv2.imread(str(image_dir / filename)), cv2.COLOR_BGR2RGB)
            encoded = tf.io.encode_jpeg(rgb).numpy()
            example = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        "image/encoded": feature("bytes", [encoded]),
                        "image/filename": feature("bytes", [filename.encode()]),
                        "image/height": feature("int64", [height]),
                        "image/width": feature("int64", [width]),
                        "image/object/bbox/xmin": feature("float", [o[1] / width for o in objects]),
                        "image/object/bbox/ymin": feature("float", [o[2] / height for o in objects]),
                        "image/object/bbox/xmax": feature("float", [o[3] / width for o in objects]),
                        "image/object/bbox/ymax": feature("float", [o[4] / height for o in objects]),
                        "image/object/class/label": feature("int64", [ids[o[0]] for o in objects]),
                        "image/object/class/text": feature("bytes", [o[0].encode() for o in objects]),
                    }
                )
            )
            writer.write(example.SerializeToString())
            count += 1
    return count


def seed_001_csv(xml_dir: Path, _image_dir: Path, out: Path, classes: list[str]) -> int:
    """The notes' first script: every VOC XML (ElementTree) into one CSV, a row per box."""
    import xml.etree.ElementTree as ET

    import pandas as pd

    ids = _label_ids(classes)
    _ready()
    columns = ("filename", "width", "height", "xmin", "ymin", "xmax", "ymax", "class", "class_id")
    rows: dict[str, list] = {c: [] for c in columns}
    files = sorted(xml_dir.glob("*.xml"))
    for xml in files:
        root = ET.parse(xml).getroot()
        size = root.find("size")
        for obj in root.iter("object"):
            box = obj.find("bndbox")
            values = (
                root.findtext("filename"),
                int(size.findtext("width")),
                int(size.findtext("height")),
                *(int(float(box.findtext(k))) for k in ("xmin", "ymin", "xmax", "ymax")),
                obj.findtext("name"),
                ids[obj.findtext("name")],
            )
            for column, value in zip(columns, values, strict=True):
                rows[column].append(value)
    pd.DataFrame(rows).to_csv(out, index=False)
    return len(files)


def seed_001_tfrecord(csv: Path, image_dir: Path, out: Path, _classes: list[str]) -> int:
    """The notes' second script: pandas group-by filename, each image's bytes as they are."""
    import io

    import pandas as pd
    import tensorflow as tf
    from object_detection.utils import dataset_util
    from PIL import Image

    count = 0
    with tf.io.TFRecordWriter(str(out)) as writer:
        _ready()
        table = pd.read_csv(csv)
        groups = table.groupby("filename")
        for filename in groups.groups:
            rows = groups.get_group(filename)
            with tf.io.gfile.GFile(str(image_dir / filename), "rb") as f:
                encoded = f.read()
            width, height = Image.open(io.BytesIO(encoded)).size
            xmins, ymins, xmaxs, ymaxs, texts, labels = [], [], [], [], [], []
            for _, row in rows.iterrows():
                xmins.append(row["xmin"] / width)
                ymins.append(row["ymin"] / height)
                xmaxs.append(row["xmax"] / width)
                ymaxs.append(row["ymax"] / height)
                texts.append(row["class"].encode())
                labels.append(int(row["class_id"]))
            name = str(filename).encode()
            feature = {
                "image/height": dataset_util.int64_feature(height),
                "image/width": dataset_util.int64_feature(width),
                "image/filename": dataset_util.bytes_feature(name),
                "image/source_id": dataset_util.bytes_feature(name),
                "image/encoded": dataset_util.bytes_feature(encoded),
                "image/format": dataset_util.bytes_feature(b"jpeg"),
                "image/object/bbox/xmin": dataset_util.float_list_feature(xmins),
                "image/object/bbox/xmax": dataset_util.float_list_feature(xmaxs),
                "image/object/bbox/ymin": dataset_util.float_list_feature(ymins),
                "image/object/bbox/ymax": dataset_util.float_list_feature(ymaxs),
                "image/object/class/text": dataset_util.bytes_list_feature(texts),
                "image/object/class/label": dataset_util.int64_list_feature(labels),
            }
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
            count += 1
    return count


def io_floor(_xml_dir: Path, image_dir: Path, out: Path, _classes: list[str]) -> int:
    """The floor: every image file read and its bytes written to one file."""
    names = sorted(os.listdir(image_dir))
    with open(out, "wb") as f:
        _ready()
        for name in names:
            f.write((image_dir / name).read_bytes())
    return len(names)


REFERENCES = {f.__name__: f for f in (seed_002, seed_001_csv, seed_001_tfrecord, io_floor)}


# --- measuring a process -------------------------------------------------------------------------


def _files(folder: Path) -> list[str]:
    return [os.path.join(d, n) for d, _, names in os.walk(folder) for n in names]


def measured(cmd: list[str], cwd: Path, log: Path, watch: Path | None = None) -> dict:
    """Run ``cmd`` to the end: wall seconds, split into start-up (to the first output file under
    ``watch`` appearing, polled every 10 ms, or to the READY line a reference prints), work (to the
    last output file's mtime, or the DONE line) and end (what follows, interpreter exit included);
    peak RSS: ru_maxrss of the process and its waited-for children, and the polled sum of the
    process tree's RSS with psutil."""
    try:
        import psutil
    except ImportError:
        psutil = None
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    launched, start = time.time(), time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
    seen = {"tree": 0, "first": None}
    stop = threading.Event()

    def tree_rss(root) -> int:
        rss = 0
        for p in [root, *root.children(recursive=True)]:
            try:
                rss += p.memory_info().rss
            except psutil.Error:
                pass
        return rss

    def poll() -> None:
        try:
            root = psutil.Process(proc.pid) if psutil else None
        except psutil.Error:
            root = None
        tick = 0
        while not stop.wait(FIRST_FILE_POLL):
            if watch is not None and seen["first"] is None and _files(watch):
                seen["first"] = time.monotonic() - start
            tick += 1
            if root is not None and tick % RSS_POLL_EVERY == 0:
                try:
                    seen["tree"] = max(seen["tree"], tree_rss(root))
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
        finished = max(os.stat(f).st_mtime for f in _files(watch)) - launched
    marks = dict(line.split()[:2] for line in text.splitlines() if line.startswith((READY, DONE)))
    if READY in marks:
        startup = float(marks[READY]) - launched
        finished = float(marks[DONE].split(",")[0]) - launched
    return {
        "wall_s": wall,
        "startup_s": startup,
        "work_s": finished - startup if finished is not None else None,
        "end_s": wall - finished if finished is not None else None,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # KiB on Linux
        "tree_rss_mb": seen["tree"] / MB if seen["tree"] else None,  # None: no psutil, or too short
        "log": str(log),
    }


def du(path: Path) -> int:
    """Bytes on disk under ``path`` (allocated blocks)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            total += os.lstat(os.path.join(folder, name)).st_blocks * 512
    return total


# --- the benchmark -------------------------------------------------------------------------------


def rates(run: dict, images: int) -> dict:
    """Add images and images/s, whole process and once started."""
    run["images"] = images
    run["images_per_s"] = images / run["wall_s"]
    run["once_started_images_per_s"] = images / run["work_s"] if run["work_s"] else None
    return run


def run_stage(work: Path, name: str, images: int, logs: Path, overrides: tuple[str, ...] = ()) -> dict:
    from odpipe.runtime import load_params

    watch = None
    if name in WATCHED:
        watch = work / load_params(work).paths[WATCHED[name]]
        shutil.rmtree(watch, ignore_errors=True)  # the stage recreates it; stale files would end start-up
    tag = "_".join([name, *(o.split(".")[-1].replace("=", "") for o in overrides)])
    run = measured([sys.executable, f"stages/{name}.py", *overrides], work, logs / f"{tag}.log", watch)
    run["overrides"] = list(overrides)
    print(f"    {tag:22s} {run['wall_s']:8.1f} s  peak RSS {run['peak_rss_mb']:7.0f} MB", flush=True)
    return rates(run, images)


def failed(what: str, error: RuntimeError) -> dict:
    """A run that failed, summed up by its last error line (the log stays in the run folder)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"[\w.]*(Error|Exception)\b", line)]
    summary = (errors or lines)[-1]
    print(f"    {what} FAILED: {summary}", flush=True)
    return {"error": summary, "detail": str(error)[-3000:]}


def run_pipeline(work: Path, size: int, logs: Path) -> tuple[dict, int | None]:
    """Each data stage once, in DAG order; how many images clean_split kept (None: it failed).
    A failed stage is reported and the stages after it are not run."""
    from odpipe.runtime import load_params

    runs: dict[str, dict] = {}
    kept = None
    for name in STAGES:
        try:
            runs[name] = run_stage(work, name, size if kept is None else kept, logs)
        except RuntimeError as error:
            runs[name] = failed(name, error)
            runs.update({later: {"error": f"not run: {name} failed"} for later in STAGES[STAGES.index(name) + 1 :]})
            break
        if name == "clean_split":
            kept = json.loads((work / load_params(work).paths.clean_split_report).read_text())["kept"]
    return runs, kept


def run_workers(work: Path, kept: int, size: int, counts: list[int], logs: Path) -> dict:
    """clean_split and tfrecord at each worker count."""
    out: dict[str, dict] = {}
    for stage, images in (("clean_split", size), ("tfrecord", kept)):
        out[stage] = {}
        for n in counts:
            try:
                out[stage][str(n)] = run_stage(work, stage, images, logs, (f"{stage}.workers={n}",))
            except RuntimeError as error:
                out[stage][str(n)] = failed(f"{stage}.workers={n}", error)
    return out


def run_reference(name: str, source: Path, images: Path, out: Path, classes: list[str], logs: Path) -> dict:
    script = str(Path(__file__).resolve())
    cmd = [sys.executable, script, "--reference", name, str(source), str(images), str(out), *classes]
    run = measured(cmd, ROOT, logs / f"{name}.log")
    text = Path(run["log"]).read_text()
    run["images"] = int(next(line.split(",")[-1] for line in text.splitlines() if line.startswith(DONE)))
    run["output_mb"] = out.stat().st_size / MB
    print(f"    {name:22s} {run['wall_s']:8.1f} s  peak RSS {run['peak_rss_mb']:7.0f} MB", flush=True)
    return run


def run_references(work: Path, folder: Path, classes: list[str], logs: Path) -> dict:
    """The three references on the clean images the pipeline produced (XMLs from data/raw)."""
    from odpipe.runtime import load_params

    paths = load_params(work).paths
    raw, images = work / paths.raw, work / paths.clean_images
    folder.mkdir(parents=True, exist_ok=True)
    refs = {}
    refs["seed_002"] = run_reference("seed_002", raw, images, folder / "seed_002.tfrecord", classes, logs)
    (folder / "seed_002.tfrecord").unlink()
    csv_run = run_reference("seed_001_csv", raw, images, folder / "labels.csv", classes, logs)
    record_run = run_reference(
        "seed_001_tfrecord", folder / "labels.csv", images, folder / "seed_001.tfrecord", classes, logs
    )
    (folder / "seed_001.tfrecord").unlink()
    refs["seed_001"] = {  # two processes, as the notes run them
        "wall_s": csv_run["wall_s"] + record_run["wall_s"],
        "startup_s": csv_run["startup_s"] + record_run["startup_s"],
        "work_s": csv_run["work_s"] + record_run["work_s"],
        "end_s": csv_run["end_s"] + record_run["end_s"],
        "peak_rss_mb": max(csv_run["peak_rss_mb"], record_run["peak_rss_mb"]),
        "tree_rss_mb": max(csv_run["tree_rss_mb"] or 0, record_run["tree_rss_mb"] or 0) or None,
        "output_mb": record_run["output_mb"],
        "steps": {"xml_to_csv": csv_run, "csv_to_tfrecord": record_run},
    }
    refs["io_floor"] = run_reference("io_floor", raw, images, folder / "floor.bin", classes, logs)
    (folder / "floor.bin").unlink()
    for name, counted in (("seed_002", refs["seed_002"]["images"]), ("seed_001", record_run["images"])):
        rates(refs[name], counted)
    rates(refs["io_floor"], refs["io_floor"]["images"])
    return refs


def goals(results: dict, counts: list[int]) -> list[dict]:
    """Each goal: measured ratio, target, pass (None: not measured)."""
    sizes = sorted(results["sizes"], key=int)
    small, large = results["sizes"][sizes[0]]["stages"], results["sizes"][sizes[-1]]["stages"]
    refs = results["references"]
    rows = []

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    def goal(text: str, value: float | None, target: float, at_most: bool = False, note: str = "") -> None:
        ok = None if value is None else (value <= target if at_most else value >= target)
        rows.append({"goal": text, "value": value, "target": target, "at_most": at_most, "pass": ok, "note": note})

    for stage in ("clean_split", "tfrecord"):
        tree = ratio(large[stage].get("tree_rss_mb"), small[stage].get("tree_rss_mb"))
        goal(
            f"{stage} peak RSS, {sizes[-1]} / {sizes[0]} images",
            ratio(large[stage].get("peak_rss_mb"), small[stage].get("peak_rss_mb")),
            1.2,
            at_most=True,
            note=f"tree RSS {tree:.2f}x" if tree else "",
        )
    tf, seed, floor = large["tfrecord"], refs.get("seed_002", {}), refs.get("io_floor", {})
    goal("tfrecord / seed 002, images/s whole process", ratio(tf.get("images_per_s"), seed.get("images_per_s")), 5.0)
    goal(
        "tfrecord / I/O floor, images/s once started",
        ratio(tf.get("once_started_images_per_s"), floor.get("once_started_images_per_s")),
        0.5,
        note=f"start-up: tfrecord {fmt(tf.get('startup_s'), '.1f')} s, floor {fmt(floor.get('startup_s'), '.2f')} s",
    )
    workers = results["workers"].get("clean_split", {})
    first, last = (workers.get(str(n), {}) for n in (counts[0], counts[-1]))
    speedup = ratio(first.get("wall_s"), last.get("wall_s"))
    goal(
        f"clean_split {counts[-1]} workers / {counts[0]}, speed-up (wall)",
        speedup,
        1.7,
        note="" if speedup else "not measured or failed, see the JSON",
    )
    return rows


def fmt(value: float | None, spec: str) -> str:
    return format("-", ">" + spec.split(".")[0]) if value is None else format(value, spec)


def report(results: dict) -> None:
    print(
        f"\n{results['cpus']} CPU(s); images {results['min_side']}-{results['max_side']} px a side, "
        f"JPEG quality {results['jpeg_quality']}; stages as `python stages/<stage>.py`"
    )
    print(
        f"{'images':>7s} {'run':28s} {'wall s':>7s} {'img/s':>7s} {'start s':>7s} {'work s':>7s} {'end s':>6s} "
        f"{'img/s on':>8s} {'RSS MB':>7s} {'tree MB':>7s}"
    )

    def line(size: str, name: str, run: dict) -> None:
        if "wall_s" not in run:
            print(f"{size:>7s} {name:28s} {run.get('missing') or 'FAILED: ' + run.get('error', '?')}")
            return
        print(
            f"{size:>7s} {name:28s} {run['wall_s']:7.1f} {run['images_per_s']:7.1f} "
            f"{fmt(run['startup_s'], '7.2f')} {fmt(run['work_s'], '7.2f')} {fmt(run['end_s'], '6.2f')} "
            f"{fmt(run['once_started_images_per_s'], '8.1f')} {run['peak_rss_mb']:7.0f} "
            f"{fmt(run['tree_rss_mb'], '7.0f')}"
        )

    for size, entry in results["sizes"].items():
        for stage, run in entry["stages"].items():
            line(size, stage, run)
    largest = max(results["sizes"], key=int)
    for stage, runs in results["workers"].items():
        for n, run in runs.items():
            line(largest, f"{stage} workers={n}", run)
    for name, run in results["references"].items():
        line(largest, f"ref {name}", run)
    print("\ngoals:")
    for row in results["goals"]:
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[row["pass"]]
        sign = "<=" if row["at_most"] else ">="
        note = f"  ({row['note']})" if row["note"] else ""
        print(f"  {verdict}  {row['goal']:52s} {fmt(row['value'], '6.2f')}x  (goal {sign} {row['target']}x){note}")
    print("\ndisk used by the run folder:")
    for name, size in results["disk_mb"].items():
        print(f"  {name:40s} {size:9.0f} MB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="clean_split/tfrecord worker counts")
    parser.add_argument("--min-side", type=int, default=480)
    parser.add_argument("--max-side", type=int, default=640)
    parser.add_argument("--jpeg-quality", type=int, default=90)
    parser.add_argument("--json", type=Path, help="results file (default: bench_data.json in the run folder)")
    parser.add_argument("--keep", action="store_true", help="keep the project copies")
    args, overrides = parser.parse_known_args()

    from odpipe.project import copy_project
    from odpipe.runtime import PARAMS_FILE, compose_params, load_params

    tmp = Path(tempfile.mkdtemp(prefix="odpipe-bench-data-"))
    print(f"run folder {tmp}", flush=True)
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpus": os.cpu_count(),
        "machine": platform.platform(),
        "min_side": args.min_side,
        "max_side": args.max_side,
        "jpeg_quality": args.jpeg_quality,
        "workers_counts": args.workers,
        "overrides": overrides,
        "sizes": {},
    }
    sizes = sorted(args.sizes)
    try:
        for size in sizes:
            print(f"  {size} images ({time.strftime('%H:%M:%S')})", flush=True)
            work = copy_project(ROOT, tmp / f"n{size}" / "project")
            logs = tmp / f"n{size}" / "logs"
            logs.mkdir()
            data = [
                f"dataset.num_images={size}",
                f"dataset.min_side={args.min_side}",
                f"dataset.max_side={args.max_side}",
                f"++dataset.jpeg_quality={args.jpeg_quality}",  # SyntheticSpec's, not in conf/ (default 90)
            ]
            compose_params(work, [*data, *overrides], work / PARAMS_FILE)
            if load_params(work).dataset.source != "synthetic":
                raise SystemExit("this benchmark generates the built-in dataset: dataset.source must be synthetic")
            stages, kept = run_pipeline(work, size, logs)
            results["sizes"][str(size)] = {"kept": kept, "stages": stages}
        results["workers"], results["references"] = {}, {}
        if kept is not None:  # clean images and CSVs to work on
            classes = list(load_params(work).dataset.classes)
            results["workers"] = run_workers(work, kept, sizes[-1], args.workers, logs)
            results["references"] = run_references(work, tmp / f"n{sizes[-1]}" / "references", classes, logs)
        mismatched = {k: r["images"] for k, r in results["references"].items() if r["images"] != kept}
        if mismatched:
            print(f"  warning: the references converted {mismatched} images, the tfrecord stage {kept}")

        paths = load_params(work).paths
        disk = {"run folder (all sizes)": du(tmp) / MB}
        for size in sizes:
            project = tmp / f"n{size}" / "project"
            disk[f"{size}: project copy"] = du(project) / MB
            for key in ("raw", "clean_images", "tfrecord"):
                disk[f"{size}:   {paths[key]}"] = du(project / paths[key]) / MB
        for name, ref in results["references"].items():
            disk[f"{sizes[-1]}: ref {name} output (deleted)"] = ref["output_mb"]
        results["disk_mb"] = disk
        results["goals"] = goals(results, args.workers)
    finally:
        if not args.keep:
            for size in sizes:
                shutil.rmtree(tmp / f"n{size}" / "project", ignore_errors=True)
                shutil.rmtree(tmp / f"n{size}" / "references", ignore_errors=True)
    report(results)
    out = args.json or tmp / "bench_data.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"\nresults: {out}  (logs beside it{'; project copies kept' if args.keep else ''})")
    return 0 if all(row["pass"] is not False for row in results["goals"]) else 1


def reference_main(argv: list[str]) -> int:
    """``--reference NAME SOURCE IMAGES OUT [CLASS ...]``: one reference, in this process; prints
    when its last record is written (output closed) and how many."""
    name, source, images, out, *classes = argv
    count = REFERENCES[name](Path(source), Path(images), Path(out), classes)
    print(DONE, f"{time.time()},{count}", flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--reference":
        sys.exit(reference_main(sys.argv[2:]))
    sys.exit(main())
