"""MLflow logging: what tracking costs a training, and what several writers at once cost, the
local sqlite store against a team's tracking server (PostgreSQL, ``--workers`` uvicorn workers,
artifacts proxied: ``odpipe.devtools.servers``, started here on 127.0.0.1), side by side in one run.

- A training's logging: a fixed CPU workload of ``--steps`` steps (numpy matrix products, sized
  once so that a step takes ``--step-ms``, about a step of the default detection training on 2
  cores: 3500 steps in 12 minutes) that logs what the train stage logs, as it logs it: the 6
  scalars of a loop (losses, learning rate, steps/s) every ``--every`` steps
  (``train.steps_per_loop``) through ``RunLogger``, the run created and ended as the stage does.
  Without tracking, with the sqlite store and with the server, in turns (``--repeats``, the
  order rotated): the time inside the logging calls as a share of the loop (goal: server <= 2%),
  the median loop time against the loop without tracking (wall clock, as noisy as the machine),
  and creating and ending the run apart (once a training).
- ``--writers`` processes at once, each logging ``--values`` values of a metric to a run of its
  own: one ``log_metric`` call per value (as a naive user would), then one ``log_batch``; sqlite
  against the server: wall time from the first start to the last end, the ratio, failed calls,
  and whether every value landed.
Usage: python benchmarks/mlflow_logging.py [--steps N] [--every N] [--step-ms MS] [--repeats N]
    [--writers N] [--values N] [--workers N] [--keep]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

from harness.children import RESULT, main_or_child
from harness.report import finish, goal_row, header, print_goals
from harness.runs import run_folder

SCALARS = ("learning_rate", "loss/box/offset", "loss/box/scale", "loss/object_center", "loss/total_loss")
SIZE = 256  # matrix side of the workload's products
STORES = ("sqlite", "server")


def workload(products: int):
    """One training step's stand-in: ``products`` matrix products (BLAS on every core, as TF)."""
    import numpy as np

    a = np.random.default_rng(0).standard_normal((SIZE, SIZE), dtype=np.float32) / SIZE**0.5

    def step() -> float:
        b = a
        for _ in range(products):
            b = a @ b
        return float(b[0, 0])

    return step


def calibrated(step_ms: float) -> tuple[int, float]:
    """The number of products that makes a step take ``step_ms``, and one product's ms."""
    one = workload(1)
    for _ in range(20):
        one()
    start = time.perf_counter()
    for _ in range(200):
        one()
    ms = (time.perf_counter() - start) * 1000 / 200
    return max(1, round(step_ms / ms)), ms


def train(uri: str | None, steps: int, every: int, products: int, root: Path) -> dict:
    """The loop with its logging as the train stage does it (``uri`` None: no tracking): loop
    seconds, seconds inside the logging calls and their count, and milliseconds to create and
    end the run."""
    from odpipe.engine.mlflow_runs import RunLogger, create_run

    step = workload(products)
    logger, begin_ms = None, 0.0
    if uri is not None:
        start = time.perf_counter()
        logger = RunLogger(uri)
        params = {f"train.setting_{i}": str(i) for i in range(30)}  # about what the stage logs
        logger.start(lambda client: create_run(client, "bench-training", root, params, {}))
        begin_ms = (time.perf_counter() - start) * 1000
    in_calls, calls, since = 0.0, 0, time.perf_counter()
    start = time.perf_counter()
    for s in range(1, steps + 1):
        loss = step()
        if s % every == 0 and logger is not None:
            now = time.perf_counter()
            scalars = {name: abs(loss) / (i + 1) for i, name in enumerate(SCALARS)}
            logger.metrics({**scalars, "steps_per_sec": every / (now - since)}, s)
            in_calls += time.perf_counter() - now
            calls += 1
            since = time.perf_counter()
    loop = time.perf_counter() - start
    end_ms = 0.0
    if logger is not None:
        start = time.perf_counter()
        logger.terminate("FINISHED")
        end_ms = (time.perf_counter() - start) * 1000
        if logger.failures:
            raise RuntimeError(f"{logger.failures} MLflow call(s) failed against {uri}")
    return {"loop_s": loop, "in_calls_s": in_calls, "calls": calls, "start_end_ms": begin_ms + end_ms}


def writer(argv: list[str]) -> dict:
    """A child: its own run, then, once every writer is ready, ``values`` values of ``loss``:
    one ``log_metric`` call each, or one ``log_batch`` (``how``). Failed calls are counted, not
    raised: a naive script would die there, the count says how often."""
    uri, experiment_id, values, how = argv[0], argv[1], int(argv[2]), argv[3]
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from odpipe.devtools.servers import wait_for_go

    client = MlflowClient(uri)
    run_id = client.create_run(experiment_id).info.run_id
    stamp = int(time.time() * 1000)
    wait_for_go()
    start, errors = time.time(), 0
    if how == "log_metric":
        for step in range(values):
            try:
                client.log_metric(run_id, "loss", 1 / (step + 1), timestamp=stamp, step=step)
            except Exception:  # sqlite's "database is locked", HTTP errors
                errors += 1
    else:
        try:
            client.log_batch(run_id, metrics=[Metric("loss", 1 / (s + 1), stamp, s) for s in range(values)])
        except Exception:
            errors += 1
    end = time.time()
    client.set_terminated(run_id)
    return {"run_id": run_id, "start": start, "end": end, "errors": errors}


def writers(uri: str, count: int, values: int, how: str, work: Path) -> dict:
    """``count`` writer processes at once against ``uri``: wall seconds (first start to last
    end), failed calls, and the values that landed against those sent."""
    from mlflow.tracking import MlflowClient

    from odpipe.devtools.servers import run_together
    from odpipe.engine.mlflow_runs import open_client

    client = open_client(uri)
    name = f"bench-writers-{how}-{time.monotonic_ns()}"
    location = (work / "mlruns" / name).as_uri() if uri.startswith("sqlite") else None
    experiment_id = client.create_experiment(name, artifact_location=location)
    script = str(Path(__file__).resolve())
    command = [sys.executable, script, "--writer", uri, experiment_id, str(values), how]
    folder = work / f"writers-{how}-{uri.split(':')[0]}"
    folder.mkdir()
    outputs = run_together([command] * count, folder)
    results = [
        json.loads(next(ln.split(maxsplit=1)[1] for ln in o.splitlines() if ln.startswith(RESULT))) for o in outputs
    ]
    client = MlflowClient(uri)
    landed = sum(len(client.get_metric_history(r["run_id"], "loss")) for r in results)
    return {
        "wall_s": max(r["end"] for r in results) - min(r["start"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "landed": landed,
        "sent": count * values,
    }


def summarize(runs: dict[str, list[dict]]) -> dict:
    """Print each store's training against no tracking, and return the figures with goal rows.
    The loop blocks in each logging call (``RunLogger`` is synchronous), so the share of the
    loop spent inside them is what logging adds to it: the goal is on that share. The wall-clock
    difference of the medians also holds what runs beside (MLflow's threads, the server sharing
    the machine), but on a shared machine its noise (the spread of the turns without tracking,
    printed) is larger than the goal: it is shown for information."""
    none = statistics.median(r["loop_s"] for r in runs["none"])
    spread = max(r["loop_s"] for r in runs["none"]) / min(r["loop_s"] for r in runs["none"]) - 1
    heads = f"{'loop s':>7s} {'wall vs none':>12s} {'in calls':>9s} {'ms/call':>8s} {'run start+end ms':>17s}"
    print(f"  {'store':8s} {heads}")
    print(f"  {'none':8s} {none:7.2f}   (turns spread {spread:.1%})")
    summary: dict = {"none_loop_s": none, "none_spread": spread, "goals": []}
    for mode in STORES:
        loop = statistics.median(r["loop_s"] for r in runs[mode])
        in_calls = sum(r["in_calls_s"] for r in runs[mode])
        share = in_calls / sum(r["loop_s"] for r in runs[mode])
        per_call = 1000 * in_calls / sum(r["calls"] for r in runs[mode])
        begin_end = statistics.median(r["start_end_ms"] for r in runs[mode])
        summary[mode] = {"loop_s": loop, "share_in_calls": share, "ms_per_call": per_call, "start_end_ms": begin_end}
        print(f"  {mode:8s} {loop:7.2f} {loop / none - 1:+12.2%} {share:9.3%} {per_call:8.1f} {begin_end:17.0f}")
        note = f"{share:.2%} in {per_call:.0f} ms calls; wall clock {loop / none - 1:+.1%}, noise {spread:.0%}"
        target = 1.02 if mode == "server" else None
        summary["goals"].append(
            goal_row(f"training: loop with logging calls to {mode} / loop", 1 + share, target, True, note)
        )
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps per run")
    parser.add_argument("--every", type=int, default=100, help="log every this many steps (train.steps_per_loop)")
    parser.add_argument("--step-ms", type=float, default=200.0, help="one step's time (default training: ~200 ms)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--values", type=int, default=1000, help="values each writer logs (log_batch: <= 1000)")
    parser.add_argument("--workers", type=int, default=2, help="the server's uvicorn workers")
    parser.add_argument("--json", type=Path, help="results file (default: mlflow_logging.json in the run folder)")
    parser.add_argument("--keep", action="store_true", help="keep the run folder's stores")
    args = parser.parse_args()

    from odpipe.devtools.servers import TrackingServer, postgres_cluster

    results: dict = {**header(), "args": vars(args) | {"json": None}, "goals": []}
    with run_folder("mlflow", args.keep) as (tmp, logs), postgres_cluster(logs) as db:
        with TrackingServer(db, tmp / "artifacts", logs, workers=args.workers) as server:
            uvloop = importlib.util.find_spec("uvloop") is not None
            print(
                f"server: {server.url}, PostgreSQL, {args.workers} workers, uvloop {'yes' if uvloop else 'no'} "
                "(without it, each request on a kept-alive connection waits ~40 ms: uvicorn#3149)"
            )
            uris = {"none": None, "sqlite": f"sqlite:///{tmp / 'mlflow.db'}", "server": server.url}
            products, product_ms = calibrated(args.step_ms)
            print(
                f"\ntraining: {args.steps} steps of {products} products {SIZE}x{SIZE} "
                f"({products * product_ms:.0f} ms), {len(SCALARS) + 1} metrics logged every {args.every} steps, "
                f"{args.repeats} turns",
                flush=True,
            )
            runs: dict[str, list[dict]] = {mode: [] for mode in uris}
            order = list(uris)
            for turn in range(args.repeats):
                for mode in order[turn % len(order) :] + order[: turn % len(order)]:  # rotated
                    run = train(uris[mode], args.steps, args.every, products, tmp)
                    runs[mode].append(run)
                    print(f"    turn {turn + 1} {mode:7s} {run['loop_s']:7.2f} s", flush=True)
            results["training"] = summarize(runs)
            results["goals"] += results["training"].pop("goals")
            results["training"]["runs"] = runs

            print(f"\n{args.writers} writers at once, {args.values} values each", flush=True)
            results["writers"] = {}
            for how in ("log_metric", "log_batch"):
                measured = {store: writers(uris[store], args.writers, args.values, how, tmp) for store in STORES}
                results["writers"][how] = measured
                for store, m in measured.items():
                    print(
                        f"  {how:10s} {store:7s} {m['wall_s']:7.2f} s  {m['landed']}/{m['sent']} landed, "
                        f"{m['errors']} failed calls",
                        flush=True,
                    )
                sqlite, served = measured["sqlite"], measured["server"]
                results["goals"].append(
                    goal_row(
                        f"{args.writers} writers, {how}: server / sqlite wall time",
                        served["wall_s"] / sqlite["wall_s"],
                        note=f"{served['wall_s']:.1f} s against {sqlite['wall_s']:.1f} s",
                    )
                )
    print_goals(results["goals"])
    return finish(results, args.json or tmp / "mlflow_logging.json", args.keep)


if __name__ == "__main__":
    main_or_child(main, {"--writer": writer})
