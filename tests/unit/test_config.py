"""conf/ is the single source of truth: params.yaml is its composition, every group composes,
and each stage is handed only what dvc.yaml declares for it."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError

from odpipe.core.runtime import (
    PARAMS_FILE,
    TASK_FOLDERS,
    compose_config,
    compose_params,
    declared_params,
    load_params,
    select_keys,
)
from odpipe.devtools.deps import pipeline_folders, stage_code_deps
from odpipe.devtools.project import stage_names, stage_script
from odpipe.video.track import TrackSettings
from odpipe.video.trackers import ByteTrackParams, CentroidParams
from tests.conftest import ROOT


@pytest.mark.parametrize("task", sorted(TASK_FOLDERS))
def test_committed_params_yaml_is_the_fresh_composition_of_conf(task: str, tmp_path: Path) -> None:
    compose_params(ROOT, [f"task={task}"], tmp_path / PARAMS_FILE)
    committed = ROOT / TASK_FOLDERS[task] / PARAMS_FILE
    assert committed.read_text() == (tmp_path / PARAMS_FILE).read_text(), (
        f"{committed.relative_to(ROOT)} is stale: run `make params TASK={task}`"
    )


def _task_of(override: str) -> str:
    """The task a config group option belongs to: segmentation and classification models and
    datasets say so."""
    group, name = override.split("=")
    text = (ROOT / "conf" / group / f"{name}.yaml").read_text()
    for task in ("segment", "classify"):
        if f"task: {task}" in text or f"source: synthetic_{task}" in text:
            return task
    return "detect"


# Values a config group leaves to the user (`???`), as a user would give them.
REQUIRED = {
    "dataset=local": ["dataset.path=/data/labelimg", "dataset.classes=[cat,dog]"],
    "dataset=archive": ["dataset.path=https://example.org/data.zip", "dataset.classes=[cat,dog]"],
    "video=local": ["video.path=/data/cam1.mp4"],
}


@pytest.mark.parametrize(
    "override",
    [
        f"{group}={p.stem}"
        for group in ("dataset", "model", "augment", "video", "experiment", "task", "mlflow")
        for p in sorted((ROOT / "conf" / group).glob("*.yaml"))
    ],
)
def test_every_config_group_option_composes(override: str, tmp_path: Path) -> None:
    task = override.split("=")[1] if override.startswith("task=") else _task_of(override)
    overrides = [f"task={task}", override, *REQUIRED.get(override, [])]
    compose_params(ROOT, list(dict.fromkeys(overrides)), tmp_path / PARAMS_FILE)
    cfg = OmegaConf.load(tmp_path / PARAMS_FILE)
    folder = ROOT / TASK_FOLDERS[task]
    for name in stage_names(folder):
        select_keys(cfg, declared_params(name, folder / "dvc.yaml"))


@pytest.mark.parametrize("task", sorted(TASK_FOLDERS))
def test_the_smoke_experiment_composes_for_every_task(task: str, tmp_path: Path) -> None:
    compose_params(ROOT, [f"task={task}", "experiment=smoke"], tmp_path / PARAMS_FILE)
    cfg = OmegaConf.load(tmp_path / PARAMS_FILE)
    assert cfg.dataset.num_images == 36  # the shared part
    folder = ROOT / TASK_FOLDERS[task]
    for name in stage_names(folder):
        select_keys(cfg, declared_params(name, folder / "dvc.yaml"))


@pytest.mark.parametrize("task", sorted(TASK_FOLDERS))
def test_mlflow_server_sends_every_tasks_runs_to_one_server_under_its_own_experiment(task: str) -> None:
    local, server = (compose_config(ROOT, [f"task={task}", f"mlflow={store}"]).mlflow for store in ("local", "server"))
    assert local.tracking_uri == "sqlite:///mlflow.db"
    assert server.tracking_uri.startswith("http://") and server.experiment_name == local.experiment_name


def test_stage_config_refuses_undeclared_keys() -> None:
    cfg = select_keys(load_params(ROOT), declared_params("train", ROOT / "dvc.yaml"))
    assert cfg.train.eval_every and cfg.paths.export
    assert cfg.mlflow.experiment_name  # where runs go: every stage may read it
    with pytest.raises(ConfigAttributeError):
        _ = cfg.train.batch_size  # pipeline.config carries it to train
    with pytest.raises(ConfigAttributeError):
        _ = cfg.dataset


def test_declaring_a_missing_param_is_an_error() -> None:
    with pytest.raises(KeyError, match="no_such_key"):
        select_keys(load_params(ROOT), ["train.no_such_key"])


def test_every_stage_has_a_script_listed_as_a_dependency() -> None:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert list(stages) == [
        "ingest",
        "clean_split",
        "convert",
        "tfrecord",
        "base_model",
        "pipeline_config",
        "train",
        "export",
        "video",
        "track",
        "evaluate",
    ]
    for folder in pipeline_folders(ROOT):
        for name, stage in yaml.safe_load((folder / "dvc.yaml").read_text())["stages"].items():
            script = stage_script(stage["cmd"])
            assert Path(script).stem == name, f"{folder}/dvc.yaml: stage {name} runs {script}"
            assert script in stage["deps"]
            assert (folder / script).exists()


def test_every_stage_depends_on_all_the_code_it_imports() -> None:
    """A change to any module a stage runs must rerun that stage (and only those)."""
    for folder in pipeline_folders(ROOT):
        stages = yaml.safe_load((folder / "dvc.yaml").read_text())["stages"]
        for name, code in stage_code_deps(ROOT, folder).items():
            missing = set(code) - set(stages[name]["deps"])
            assert not missing, f"{folder}/dvc.yaml stage {name} lacks deps {sorted(missing)}: run `make deps`"


def test_track_defaults_in_conf_are_the_code_defaults() -> None:
    """`odpipe track` runs on the code's defaults and the stage on conf's: one set of numbers."""
    track = compose_config(ROOT, []).track
    assert OmegaConf.to_container(track.bytetrack) == asdict(ByteTrackParams())
    assert OmegaConf.to_container(track.centroid) == asdict(CentroidParams())
    assert TrackSettings.from_config(track) == TrackSettings(tracker=asdict(ByteTrackParams()), lines=[], zones=[])
