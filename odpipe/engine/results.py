"""What every task's evaluate stage does with its results: complete the training's MLflow run
(every upstream param, the metrics, the reports as artifacts, the model), decide the quality gate
against the versions registered on the same split, write the metrics file DVC reads, and register
the model when the gate passes (or fail the stage, with ``evaluate.strict_gate``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from odpipe.core.files import write_json
from odpipe.core.manifest import sha256_file
from odpipe.core.runtime import EVERY_STAGE
from odpipe.engine.gate import GateMetric, QualityGateError, quality_gate
from odpipe.engine.mlflow_runs import (
    best_registered,
    flatten,
    log_artifacts,
    log_metrics,
    numeric,
    open_client,
    read_run_id,
    register_version,
    resolve_tracking_uri,
    run_for_evaluation,
    run_status,
)

log = logging.getLogger(__name__)
# Logs the evaluated export to a run as an MLflow model: (client, run id) -> logged model id.
LogModel = Callable[[MlflowClient, str], str]


def record_results(
    cfg: DictConfig,
    report: dict,
    *,
    metric: GateMetric,
    split_file: Path,
    artifacts: Iterable[Path],
    log_model: LogModel,
    version_tags: Mapping[str, float],
    extra_metrics: Mapping[str, float] | None = None,
) -> dict:
    """Gate ``report[metric.key]``, write the report (with the gate's decision) to
    ``paths.evaluate_report`` and record everything in the run, the model included whatever the
    gate says (anybody may load, serve or register any run's model later); returns the report. A
    registered version is tagged with ``version_tags`` (the metrics it is compared on) and the
    split's digest (``split_file``), so versions are compared on the same images."""
    client = open_client(resolve_tracking_uri(cfg.mlflow.tracking_uri, Path.cwd()))
    params = flatten({k: v for k, v in OmegaConf.to_container(cfg).items() if k not in EVERY_STAGE})
    run_id = run_for_evaluation(
        client, read_run_id(Path(cfg.paths.mlflow_run)), params, cfg.mlflow.experiment_name, Path.cwd()
    )
    options = cfg.evaluate
    split_sha256 = sha256_file(split_file)
    best = None
    if options.min_improvement is not None:
        best = best_registered(client, options.registered_model, split_sha256, metric.key)
    floor = options[metric.floor_key.split(".")[-1]]
    gate = quality_gate(report[metric.key], floor, options.min_improvement, best, metric)
    log.info("quality gate: %s", gate.reason)
    # The run's id among the metrics: `dvc exp show` (and a colleague after `dvc exp pull`) sees
    # which MLflow run holds the experiment's model and history.
    report = report | gate.as_report() | {"mlflow_run_id": run_id}
    write_json(report, cfg.paths.evaluate_report)
    with run_status(client, run_id):
        log_metrics(client, run_id, numeric(report))
        if extra_metrics:
            log_metrics(client, run_id, dict(extra_metrics))
        client.set_tag(run_id, "odpipe.gate", gate.reason)
        log_artifacts(client, run_id, list(artifacts))
        model_id = log_model(client, run_id)
        if gate.passed:
            name = options.registered_model
            version = register_version(client, name, model_id, run_id, version_tags, split_sha256)
            log.info("registered %s version %s", name, version)
        elif gate.passed is False and options.strict_gate:
            raise QualityGateError(f"quality gate failed (evaluate.strict_gate): {gate.reason}")
    return report
