"""A team's pipelines, all three tasks', logging to one MLflow server on PostgreSQL at the same
moment (tests.helpers.team runs them; test_mlflow_server tests the server itself)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from odpipe.core.runtime import load_params
from odpipe.detect.pipeline_config import load_pipeline
from odpipe.devtools.project import experiments
from odpipe.engine.mlflow_runs import DATA_VERSION_TAG
from tests.helpers.team import SWEEP_RATES, TeamRuns


def test_a_queued_sweep_and_the_other_tasks_log_to_one_server_at_once(team_runs: TeamRuns, tmp_path: Path) -> None:
    """A team's day (tests.helpers.team): a detection sweep of two experiments (`dvc exp run
    --queue`, `dvc queue start -j 2`: both workers create the experiment at once, each in a
    temporary copy of the repo) and segmentation's and classification's pipelines, launched
    together against one server. Every run is FINISHED and they were all running at one moment;
    nothing went to a local store; each sweep run's artifacts, its own, are readable through the
    server. The sweep stops at train: segmentation and classification go on to evaluate and
    register (their modules read their runs, versions and models through this server)."""
    client = MlflowClient(team_runs.url)
    sweep = team_runs.sweep
    swept = experiments(sweep)
    assert sorted(exp["params"]["train"]["learning_rate"] for exp in swept.values()) == list(SWEEP_RATES)
    assert not (sweep / "mlflow.db").exists() and not (sweep / "mlruns").exists()
    experiment = client.get_experiment_by_name("odpipe")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # proxied: no storage credentials
    smoke = load_params(sweep).train
    runs = []
    for name, exp in swept.items():
        (run,) = client.search_runs([experiment.experiment_id], f"attributes.run_name = '{name}'")
        runs.append(run)
        assert run.data.tags["mlflow.source.git.commit"] and run.data.tags[DATA_VERSION_TAG]
        assert run.data.params["train.steps_per_loop"] == str(smoke.steps_per_loop)  # the params train reads
        losses = client.get_metric_history(run.info.run_id, "loss/total_loss")
        assert losses and max(m.step for m in losses) == smoke.num_steps  # trained to the end
        # train logs the params it reads; the learning rate reaches it through pipeline.config
        folder = tmp_path / name
        folder.mkdir()
        config = load_pipeline(Path(client.download_artifacts(run.info.run_id, "pipeline.config", str(folder))))
        optimizer = config.train_config.optimizer
        schedule = getattr(optimizer, optimizer.WhichOneof("optimizer")).learning_rate  # the default's: cosine
        rate = exp["params"]["train"]["learning_rate"]
        assert schedule.cosine_decay_learning_rate.learning_rate_base == pytest.approx(rate)
    assert len({r.data.tags[DATA_VERSION_TAG] for r in runs}) == 1  # same data, same TFRecords
    for run_id in team_runs.task_runs.values():
        run = client.get_run(run_id)
        assert client.get_experiment(run.info.experiment_id).name != experiment.name  # each task its own
        runs.append(run)
    assert [r.info.status for r in runs] == ["FINISHED"] * 4
    starts, ends = [r.info.start_time for r in runs], [r.info.end_time for r in runs]
    assert max(starts) < min(ends), f"the four runs were never all running at once: {starts=} {ends=}"
