"""The data stages (ingest, clean_split, convert, tfrecord) at two dataset sizes, and the
tfrecord stage against the converters users write today, side by side on one machine in one run.

For each ``--sizes`` (default 2000 and 20000 built-in images of about 640 px on the long side,
JPEG quality 90), a clean copy of the project runs each stage as its own process
(``python stages/<stage>.py``, as ``dvc repro`` would, without DVC's hashing and caching around
it) and prints its wall time, images/s and peak memory, measured as ``harness.memory`` says: peak
RSS is the kernel's high-water mark of the stage's largest process (workers included, not
summed), "tree RSS" the polled peak of the sum over its processes. For ingest, tfrecord and the
references the wall time is split in three: start-up (up to the first output file), work (to the
last) and end (ingest's manifest, interpreter exit); images/s "once started" is over the work.

On the largest size, clean_split and tfrecord also run with each ``--workers`` count
(``clean_split.workers`` / ``tfrecord.workers``), and three references convert the
same clean images, each a process of its own (benchmarks/reference_converters.py), start-up
included and reported apart:
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
import sys
from pathlib import Path

from harness.children import done_count
from harness.memory import MB, du, measure
from harness.report import finish, floor_row, goal_row, header, print_goals, print_runs, progress, ratio, rss_row
from harness.runs import ROOT, data_runs, run_folder, run_stage

CONVERTERS = str(Path(__file__).with_name("reference_converters.py"))
STAGES = ("ingest", "clean_split", "convert", "tfrecord")


def rates(run: dict, images: int | None) -> dict:
    """Add images and images/s, whole process and once started (a failed run: as it is)."""
    if "error" in run:
        return run
    run["images"] = images
    run["images_per_s"] = images / run["wall_s"]
    run["once_started_images_per_s"] = images / run["work_s"] if run["work_s"] else None
    return run


def counted(folder: Path, size: int, stages: dict) -> dict:
    """One size's stage runs with their images/s (clean_split keeps fewer images than ingest made),
    those after a failed one marked as not run, and how many clean_split kept (None: it failed)."""
    from odpipe.core.runtime import load_params

    kept, broken = None, next((name for name, run in stages.items() if "error" in run), None)
    if "wall_s" in stages.get("clean_split", {}):
        kept = json.loads((folder / load_params(folder).paths.clean_split_report).read_text())["kept"]
    for name in STAGES:
        if name not in stages:
            stages[name] = {"error": f"not run: {broken} failed"}
        else:
            rates(stages[name], size if name in ("ingest", "clean_split") else kept)
    return {"kept": kept, "stages": stages}


def run_workers(folder: Path, kept: int, size: int, counts: list[int], logs: Path) -> dict:
    """clean_split and tfrecord at each worker count."""
    out: dict[str, dict] = {}
    for stage, images in (("clean_split", size), ("tfrecord", kept)):
        out[stage] = {}
        for n in counts:
            out[stage][str(n)] = rates(run_stage(folder, stage, logs, (f"{stage}.workers={n}",)), images)
    return out


def run_reference(name: str, source: Path, images: Path, out: Path, classes: list[str], logs: Path) -> dict:
    """One reference, measured; its output deleted unless a CSV, which the next step reads."""
    cmd = [sys.executable, CONVERTERS, name, str(source), str(images), str(out), *classes]
    run = measure(cmd, ROOT, logs / f"{name}.log")
    run["images"] = done_count(Path(run["log"]).read_text())
    run["output_mb"] = out.stat().st_size / MB
    if out.suffix != ".csv":
        out.unlink()
    progress(name, run)
    return run


def run_references(folder: Path, out: Path, classes: list[str], logs: Path) -> dict:
    """The three references on the clean images the pipeline produced (XMLs from data/raw)."""
    from odpipe.core.runtime import load_params

    paths = load_params(folder).paths
    raw, images = folder / paths.raw, folder / paths.clean_images
    out.mkdir(parents=True, exist_ok=True)
    refs = {"seed_002": run_reference("seed_002", raw, images, out / "seed_002.tfrecord", classes, logs)}
    csv_run = run_reference("seed_001_csv", raw, images, out / "labels.csv", classes, logs)
    record_run = run_reference(
        "seed_001_tfrecord", out / "labels.csv", images, out / "seed_001.tfrecord", classes, logs
    )
    refs["seed_001"] = {  # two processes, as the notes run them
        **{key: csv_run[key] + record_run[key] for key in ("wall_s", "startup_s", "work_s", "end_s")},
        "peak_rss_mb": max(csv_run["peak_rss_mb"], record_run["peak_rss_mb"]),
        "tree_rss_mb": max(csv_run["tree_rss_mb"] or 0, record_run["tree_rss_mb"] or 0) or None,
        "output_mb": record_run["output_mb"],
        "steps": {"xml_to_csv": csv_run, "csv_to_tfrecord": record_run},
    }
    refs["io_floor"] = run_reference("io_floor", raw, images, out / "floor.bin", classes, logs)
    rates(refs["seed_002"], refs["seed_002"]["images"])
    rates(refs["seed_001"], record_run["images"])
    rates(refs["io_floor"], refs["io_floor"]["images"])
    return refs


def goals(results: dict, counts: list[int]) -> list[dict]:
    """Each goal: measured ratio, target, pass (None: not measured)."""
    sizes = sorted(results["sizes"], key=int)
    small, large = results["sizes"][sizes[0]]["stages"], results["sizes"][sizes[-1]]["stages"]
    refs = results["references"]
    rows = [rss_row(stage, sizes, small, large) for stage in ("clean_split", "tfrecord")]
    tf, seed, floor = large["tfrecord"], refs.get("seed_002", {}), refs.get("io_floor", {})
    rows.append(
        goal_row(
            "tfrecord / seed 002, images/s whole process", ratio(tf.get("images_per_s"), seed.get("images_per_s")), 5.0
        )
    )
    rows.append(floor_row("tfrecord / I/O floor, images/s once started", tf, floor, "once_started_images_per_s"))
    workers = results["workers"].get("clean_split", {})
    speedup = ratio(*(workers.get(str(n), {}).get("wall_s") for n in (counts[0], counts[-1])))
    rows.append(
        goal_row(
            f"clean_split {counts[-1]} workers / {counts[0]}, speed-up (wall)",
            speedup,
            1.7,
            note="" if speedup else "not measured or failed, see the JSON",
        )
    )
    return rows


def disk_use(tmp: Path, sizes: list[int], paths, references: dict) -> dict:
    """MB on disk: the run folder, each copy and its data folders, each reference's output."""
    disk = {"run folder (all sizes)": du(tmp) / MB}
    for size in sizes:
        project = tmp / f"n{size}" / "project"
        disk[f"{size}: project copy"] = du(project) / MB
        for key in ("raw", "clean_images", "tfrecord"):
            disk[f"{size}:   {paths[key]}"] = du(project / paths[key]) / MB
    for name, ref in references.items():
        disk[f"{sizes[-1]}: ref {name} output (deleted)"] = ref["output_mb"]
    return disk


def report(results: dict) -> None:
    print(
        f"\n{results['cpus']} CPU(s); images {results['min_side']}-{results['max_side']} px a side, "
        f"JPEG quality {results['jpeg_quality']}; stages as `python stages/<stage>.py`"
    )
    largest = max(results["sizes"], key=int)
    rows = [(size, stage, run) for size, entry in results["sizes"].items() for stage, run in entry["stages"].items()]
    rows += [
        (largest, f"{stage} workers={n}", run) for stage, runs in results["workers"].items() for n, run in runs.items()
    ]
    rows += [(largest, f"ref {name}", run) for name, run in results["references"].items()]
    print_runs(rows)
    print_goals(results["goals"], "goals", 52)
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

    from odpipe.core.runtime import load_params

    sizes = sorted(args.sizes)
    results = {**header(), "min_side": args.min_side, "max_side": args.max_side, "jpeg_quality": args.jpeg_quality}
    results |= {"workers_counts": args.workers, "overrides": overrides, "sizes": {}, "workers": {}, "references": {}}
    settings = [
        f"dataset.min_side={args.min_side}",
        f"dataset.max_side={args.max_side}",
        f"++dataset.jpeg_quality={args.jpeg_quality}",  # SyntheticSpec's, not in conf/ (default 90)
    ]
    with run_folder("data", args.keep) as (tmp, logs):
        folders, runs = data_runs(tmp, sizes, logs, [*settings, *overrides], "detect", STAGES)
        results["sizes"] = {str(size): counted(folders[size], size, runs[str(size)]) for size in sizes}
        work, kept, last_logs = folders[sizes[-1]], results["sizes"][str(sizes[-1])]["kept"], logs / str(sizes[-1])
        if kept is not None:  # clean images and CSVs to work on
            classes = list(load_params(work).dataset.classes)
            results["workers"] = run_workers(work, kept, sizes[-1], args.workers, last_logs)
            results["references"] = run_references(work, tmp / f"n{sizes[-1]}" / "references", classes, last_logs)
        mismatched = {k: r["images"] for k, r in results["references"].items() if r["images"] != kept}
        if mismatched:
            print(f"  warning: the references converted {mismatched} images, the tfrecord stage {kept}")
        results["disk_mb"] = disk_use(tmp, sizes, load_params(work).paths, results["references"])
        results["goals"] = goals(results, args.workers)
    report(results)
    return finish(results, args.json or tmp / "bench_data.json", args.keep)


if __name__ == "__main__":
    sys.exit(main())
