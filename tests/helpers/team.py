"""A team's day on one MLflow server: a detection sweep queued with `dvc queue start -j 2`, a
segmentation and a classification pipeline, all launched at the same moment against that server,
each in its own copy of the repo (three people's workspaces).

Each is first brought to where it begins to log (the data stages before ``train``; the sweep's
experiments queued), side by side, then all are released together, so that their MLflow runs
really overlap: the server takes the writes of four trainings and two evaluations at once. Only
``dvc`` runs in the threads: composing params uses Hydra's global state, so it is done first."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from odpipe.core.runtime import PARAMS_FILE, TASK_FOLDERS, compose_params, load_params
from odpipe.devtools.project import copy_project, run_dvc, stage_names
from odpipe.engine.mlflow_runs import TRACKING_URI_ENV, read_run_id

SMOKE = ["experiment=smoke"]
SWEEP_RATES = (0.01, 0.03)  # the detection sweep: train.learning_rate
# A gate every smoke model passes, so that each task registers a version with the gate's tags.
GATES = {"segment": "evaluate.min_miou=0.0", "classify": "evaluate.min_value=0.0"}
EXPERIMENT = "gated"  # the name of each task's experiment
LOGS_FROM = "train"  # the first stage of each pipeline that logs to MLflow


@dataclass(frozen=True)
class TeamRuns:
    """The server's URL and the projects after the runs: ``sweep``, the detection project whose
    queue ran the sweep (its experiments are refs; its workspace is not changed by them);
    ``tasks``, by task, a copy of the repo after the task's `dvc exp run` (every stage ran), and
    ``task_runs`` the run it logged to: the tests that read a project may go on to run its
    stages against the project's own store, which rewrites the run file."""

    url: str
    sweep: Path
    tasks: dict[str, Path]
    task_runs: dict[str, str]  # the MLflow run each task's stages logged to (read before any test ran)


def together(*jobs: Callable[[], None]) -> None:
    """Each job in a thread of its own, all started at once; the first failure is raised once
    all have ended."""
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(job) for job in jobs]
    for future in futures:
        future.result()


def copy_with_params(root: Path, work: Path, task: str) -> Path:
    """A copy of the repo with ``task``'s smoke params composed (Hydra's global state: one thread)."""
    project = copy_project(root, work)
    folder = TASK_FOLDERS[task]
    compose_params(project, [f"task={task}", *SMOKE], project / folder / PARAMS_FILE)
    return project


def queue_sweep(project: Path) -> None:
    """The detection project's data made and the sweep's experiments queued (to ``train``)."""
    run_dvc(project, "repro", "tfrecord", "pipeline_config", timeout=900)
    rates = ",".join(str(rate) for rate in SWEEP_RATES)
    run_dvc(project, "exp", "run", "--queue", "-S", SMOKE[0], "-S", f"train.learning_rate={rates}", "train")


def run_queue(project: Path, tracking_uri: str, seconds: float = 1500) -> None:
    """`dvc queue start -j 2` logging to ``tracking_uri``, until the queue is empty; fails with
    the failed experiments' logs, or if the queue's temporary copies are left behind."""
    run_dvc(project, "queue", "start", "-j", "2", env={TRACKING_URI_ENV: tracking_uri})
    deadline = time.monotonic() + seconds
    while re.search(r"\b(Queued|Running)\b", status := run_dvc(project, "queue", "status").stdout):
        assert time.monotonic() < deadline, f"the queue did not finish in {seconds:.0f} s:\n{status}"
        time.sleep(5)
    failed = re.findall(r"^(\S+)\s.*Failed", status, re.M)
    assert not failed, status + "\n".join(run_dvc(project, "queue", "logs", n).stdout[-3000:] for n in failed)
    assert not list((project / ".dvc" / "tmp" / "exps").glob("tmp*")), "the queue's temporary copies are still there"


def prepare_task(project: Path, task: str) -> None:
    """``task``'s stages before the first that logs run."""
    folder = TASK_FOLDERS[task]
    stages = stage_names(project / folder)
    run_dvc(project, "repro", *(f"{folder}/dvc.yaml:{s}" for s in stages[: stages.index(LOGS_FROM)]), timeout=900)


def run_task(project: Path, task: str, tracking_uri: str) -> None:
    """``task``'s `dvc exp run` with its gate, logging to ``tracking_uri``: every stage from the
    first that logs runs (the ones before are already done), and nothing goes to a local store."""
    folder = TASK_FOLDERS[task]
    gate = f"{folder}/{PARAMS_FILE}:{GATES[task]}"
    proc = run_dvc(
        project, "exp", "run", f"{folder}/dvc.yaml", "-n", EXPERIMENT, "-S", gate,
        timeout=1500, env={TRACKING_URI_ENV: tracking_uri},
    )  # fmt: skip
    ran = {name.split(":")[-1] for name in re.findall(r"Running stage '([\w:/.-]+)'", proc.stdout)}
    stages = stage_names(project / folder)
    assert ran == set(stages[stages.index(LOGS_FROM) :]), proc.stdout[-3000:]
    local = [p for p in (project / folder / "mlflow.db", project / folder / "mlruns") if p.exists()]
    assert not local, f"{task} logged to a local store: {local}"


def logged_run(project: Path, task: str) -> str:
    """The MLflow run that ``task``'s stages in ``project`` last logged to (its run file)."""
    folder = project / TASK_FOLDERS[task]
    return read_run_id(folder / load_params(folder).paths.mlflow_run)


def run_at_once(root: Path, work: Path, tracking_uri: str) -> TeamRuns:
    """The sweep and the segment and classify pipelines prepared side by side, then launched
    together against the server at ``tracking_uri``."""
    sweep = copy_with_params(root, work / "sweep", "detect")
    projects = {task: copy_with_params(root, work / task, task) for task in GATES}
    together(lambda: queue_sweep(sweep), *(lambda t=t, p=p: prepare_task(p, t) for t, p in projects.items()))
    together(
        lambda: run_queue(sweep, tracking_uri),
        *(lambda t=t, p=p: run_task(p, t, tracking_uri) for t, p in projects.items()),
    )
    return TeamRuns(tracking_uri, sweep, projects, {t: logged_run(p, t) for t, p in projects.items()})
