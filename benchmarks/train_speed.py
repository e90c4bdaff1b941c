"""The train stage against bare ``model_main_tf2.py``, side by side on one machine in one run.

On a clean copy of the project (default model and data, ``--steps`` steps), prints:
- training steps/s of the stage against model_main_tf2.py on the same pipeline.config and steps
  (goal >= 0.95x), from train_loop's own event files (first to last logged step), the stage's
  validation pauses taken out; and the overall wall-time ratio with them in;
- the share of the stage's training time spent on val evaluation at the default interval
  (goal <= 10%): ``--steps`` defaults to a multiple of the default ``train.eval_every``;
- time from a restart to the first new step when resuming an interrupted run, against the
  time from a fresh start to its first step.
Usage: python benchmarks/train_speed.py [--steps N] [hydra overrides ...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.runs import project_copy
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from odpipe.core.runtime import load_params
from odpipe.devtools.project import run_dvc
from odpipe.engine.checkpoints import checkpoint_step, latest

BARE = (  # model_main_tf2.py as users run it, with the one tf-slim bridge TF 2.15 needs
    "import runpy, sys; import odpipe.detect.tfcompat; sys.argv[0] = 'model_main_tf2.py'; "
    "runpy.run_module('object_detection.model_main_tf2', run_name='__main__', alter_sys=True)"
)
STEP_LINE = re.compile(r"step (\d+)/\d+ ")


def logged_steps(events: Path) -> list[tuple[int, float]]:
    """(step, wall time) of every loop train_loop logged, from its event files."""
    seen = {}
    for path in sorted(events.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            if any(v.tag == "steps_per_sec" for v in event.summary.value):
                seen[int(event.step)] = event.wall_time
    return sorted(seen.items())


def steps_per_second(points: list[tuple[int, float]], paused: float = 0.0) -> float:
    """From the first logged loop (after tracing) to the last, less ``paused`` seconds."""
    (first, start), (last, end) = points[0], points[-1]
    return (last - first) / (end - start - paused)


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.monotonic() - start, proc.stdout


def first_step_after(cmd: list[str], cwd: Path, interrupt_at: int | None = None) -> tuple[float, int]:
    """Seconds from starting ``cmd`` to its first logged step, and that step; with
    ``interrupt_at``, Ctrl-C once a logged step reaches it."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    first = None
    for line in proc.stdout:
        if found := STEP_LINE.search(line):
            step = int(found.group(1))
            first = first or (time.monotonic() - start, step)
            if interrupt_at is None or step >= interrupt_at:
                proc.send_signal(signal.SIGINT)
                break
    proc.communicate()  # drain what it prints on the way out
    if first is None:
        raise RuntimeError(f"{' '.join(cmd)} logged no step")
    return first


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    args, overrides = parser.parse_known_args()
    tmp = Path(tempfile.mkdtemp(prefix="odpipe-train-speed-"))
    try:
        work = project_copy(tmp / "project", [f"train.num_steps={args.steps}", *overrides])
        run_dvc(work, "repro", "tfrecord", "pipeline_config")
        params = load_params(work)
        config = work / params.paths.pipeline_config
        loop = params.train.steps_per_loop

        bare_dir = tmp / "bare"
        bare_wall, _ = timed(
            [
                sys.executable,
                "-c",
                BARE,
                f"--pipeline_config_path={config}",
                f"--model_dir={bare_dir}",
                f"--checkpoint_every_n={loop}",
                "--record_summaries=false",
            ],
            work,
        )
        stage_wall, _ = timed([sys.executable, "stages/train.py"], work)
        (stage_dir,) = (work / params.paths.train_work).iterdir()
        val_rows = [json.loads(line) for line in (stage_dir / "val.jsonl").read_text().splitlines()]
        bare_rate = steps_per_second(logged_steps(bare_dir / "train"))
        stage_points = logged_steps(stage_dir / "train")
        # Evaluations between the first and the last logged loop paused the training measured.
        within = sum(r["val/seconds"] for r in val_rows if stage_points[0][0] <= r["step"] < stage_points[-1][0])
        stage_rate = steps_per_second(stage_points, within)
        paused = sum(row["val/seconds"] for row in val_rows)
        training_seconds = stage_points[-1][1] - stage_points[0][1] - within + paused

        # Resume: a run interrupted after a checkpoint, restarted; against a fresh start.
        resume_cmd = [sys.executable, "stages/train.py", "train.seed=1"]
        fresh_first, _ = first_step_after(resume_cmd, work, interrupt_at=3 * loop)
        (interrupted,) = [f for f in (work / params.paths.train_work).iterdir() if f != stage_dir]
        restored = checkpoint_step(latest(interrupted))
        resume_first, resumed_step = first_step_after(resume_cmd, work)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"{args.steps} steps, batch {params.train.batch_size}, {params.model.image_size} px, {os.cpu_count()} CPU(s)")
    print(
        f"steps/s, training only:   stage {stage_rate:.2f}  bare model_main_tf2 {bare_rate:.2f}  "
        f"ratio {stage_rate / bare_rate:.3f}x  (goal >= 0.95x)"
    )
    print(
        f"wall time, whole process: stage {stage_wall:.0f} s  bare {bare_wall:.0f} s  "
        f"ratio {bare_wall / stage_wall:.3f}x as fast (stage includes val evaluation and export of the best)"
    )
    print(
        f"val evaluation: {len(val_rows)} evaluations every {params.train.eval_every} steps, {paused:.0f} s, "
        f"{100 * paused / training_seconds:.1f}% of training time  (goal <= 10%)"
    )
    print(
        f"first step after start: fresh {fresh_first:.1f} s, resumed from step {restored} "
        f"(first new step {resumed_step}) {resume_first:.1f} s, ratio {resume_first / fresh_first:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
