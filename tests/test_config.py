"""conf/ is the single source of truth: params.yaml is its composition, every group composes,
and each stage is handed only what dvc.yaml declares for it."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError

from odpipe.project import code_deps, stage_names
from odpipe.runtime import PARAMS_FILE, compose_config, compose_params, declared_params, load_params, select_keys
from odpipe.track import TrackSettings
from odpipe.trackers import ByteTrackParams, CentroidParams

from .conftest import ROOT


def test_committed_params_yaml_is_the_fresh_composition_of_conf(tmp_path: Path) -> None:
    compose_params(ROOT, [], tmp_path / PARAMS_FILE)
    assert (ROOT / PARAMS_FILE).read_text() == (tmp_path / PARAMS_FILE).read_text(), (
        "params.yaml is stale: run `make params`"
    )


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
        for group in ("dataset", "model", "augment", "video", "experiment")
        for p in sorted((ROOT / "conf" / group).glob("*.yaml"))
    ],
)
def test_every_config_group_option_composes(override: str, tmp_path: Path) -> None:
    compose_params(ROOT, [override, *REQUIRED.get(override, [])], tmp_path / PARAMS_FILE)
    cfg = OmegaConf.load(tmp_path / PARAMS_FILE)
    for name in stage_names(ROOT):
        select_keys(cfg, declared_params(name, ROOT / "dvc.yaml"))


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
    for name, stage in stages.items():
        script = f"stages/{name}.py"
        assert stage["cmd"] == f"python {script}"
        assert script in stage["deps"]
        assert (ROOT / script).exists()


def test_every_stage_depends_on_all_the_code_it_imports() -> None:
    """A change to any module a stage runs must rerun that stage (and only those)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        missing = code_deps(ROOT, f"stages/{name}.py") - set(stage["deps"])
        assert not missing, f"dvc.yaml stage {name} lacks deps {sorted(missing)}: run `make deps`"


def test_track_defaults_in_conf_are_the_code_defaults() -> None:
    """`odpipe track` runs on the code's defaults and the stage on conf's: one set of numbers."""
    track = compose_config(ROOT, []).track
    assert OmegaConf.to_container(track.bytetrack) == asdict(ByteTrackParams())
    assert OmegaConf.to_container(track.centroid) == asdict(CentroidParams())
    assert TrackSettings.from_config(track) == TrackSettings(tracker=asdict(ByteTrackParams()), lines=[], zones=[])
