"""One start-up path for every stage: Hydra over params.yaml, logging, the stage's own params.

A stage script is ``@stage("train") def main(cfg): ...``. The decorator makes it a Hydra app
whose config is the composed ``params.yaml`` (so ``python stages/train.py train.num_steps=50``
works by hand), and hands the function only the settings every stage gets (``paths``, and
``mlflow``: where records go, never what is computed) plus the keys that ``dvc.yaml`` declares
for that stage. Reading anything else raises, which keeps dvc.yaml's ``params`` honest: a value
a stage uses but DVC does not track would silently go stale.
"""

from __future__ import annotations

import functools
import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import hydra
import yaml
from omegaconf import DictConfig, OmegaConf

PARAMS_FILE = "params.yaml"
DVC_FILE = "dvc.yaml"
CONF_DIR = "conf"
# Each task is a pipeline of its own: a dvc.yaml and the params.yaml composed for it, in this
# folder of the project (conf/task/<task>.yaml). Detection, the first, kept the root.
TASK_FOLDERS = {"detect": ".", "segment": "segment", "classify": "classify"}
_ABSENT = object()
# Handed to every stage undeclared. `mlflow` says where runs are recorded: train logs there while
# it runs, but a new experiment name must not retrain hours of work (evaluate declares it and
# re-logs the results into the new place).
EVERY_STAGE = ("paths", "mlflow")

# Hydra's defaults write timestamped run folders and log files and may chdir: DVC cannot
# track those and they litter the repo. Put first so that a user's own overrides still win.
_HYDRA_IN_PLACE = (
    "hydra.run.dir=.",
    "hydra.output_subdir=null",
    "hydra.job.chdir=false",
    "hydra/job_logging=none",
    "hydra/hydra_logging=none",
)


def declared_params(stage_name: str, dvc_yaml: Path) -> list[str]:
    """The params.yaml keys that dvc.yaml lists for ``stage_name``."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    if stage_name not in stages:
        raise KeyError(f"{dvc_yaml}: no stage named {stage_name!r}")
    keys: list[str] = []
    for entry in stages[stage_name].get("params", []):
        if isinstance(entry, str):
            keys.append(entry)
        else:  # {other_file.yaml: [keys]}
            for file_keys in entry.values():
                keys.extend(file_keys)
    return keys


def select_keys(cfg: DictConfig, keys: list[str]) -> DictConfig:
    """A struct-mode copy of ``cfg`` holding only ``EVERY_STAGE`` and ``keys`` (dotted)."""
    selected = OmegaConf.create({k: OmegaConf.to_container(cfg[k], resolve=True) for k in EVERY_STAGE if k in cfg})
    for key in keys:
        value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=True)
        if value is _ABSENT:
            raise KeyError(f"dvc.yaml declares param {key!r}, which {PARAMS_FILE} does not have")
        if isinstance(value, DictConfig):
            value = OmegaConf.to_container(value, resolve=True)
        OmegaConf.update(selected, key, value, force_add=True)
    OmegaConf.set_struct(selected, True)
    OmegaConf.set_readonly(selected, True)
    return selected


def setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stdout,
        force=True,
    )
    # TensorFlow's logger has a handler of its own, so each of its lines came out twice; the
    # OD API also logs every layer it builds at INFO. Route it through ours, warnings only.
    tf_logger = logging.getLogger("tensorflow")
    tf_logger.handlers.clear()
    tf_logger.setLevel(logging.WARNING)
    tf_logger.addFilter(_not_noise)
    # absl (the OD API's own logging) reports SavedModel renames and eval steps at INFO.
    logging.getLogger("absl").setLevel(logging.WARNING)
    # Keras' learning-phase API, which the OD API's evaluation still calls, warns on every use.
    warnings.filterwarnings("ignore", message=r".*learning_phase.* is deprecated", category=UserWarning)


# TF's warnings about the OD API's own code, which a user can do nothing about: "X is deprecated
# and will be removed", and Keras' complaints when a SavedModel of the OD API's model classes is
# written (export: the inference graph and the TFLite graph).
NOISE = (
    "is deprecated and will be removed",
    "Skipping full serialization of Keras layer",
    "arguments contain non-serializable objects",
)


def _not_noise(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not any(notice in message for notice in NOISE)


def stage(stage_name: str) -> Callable[[Callable[[DictConfig], None]], Callable[[], None]]:
    """Decorate a stage's ``main(cfg)``; see the module docstring."""

    def decorate(task: Callable[[DictConfig], None]) -> Callable[[], None]:
        @functools.wraps(task)
        def main() -> None:
            # DVC runs a stage in the folder of its dvc.yaml, which holds the task's params.yaml
            # (the project root for detection, segment/ for segmentation; in an experiment, the
            # temporary copy's), so that is where both are read from.
            root = Path.cwd()
            sys.argv[1:1] = list(_HYDRA_IN_PLACE)

            @hydra.main(config_path=str(root), config_name=Path(PARAMS_FILE).stem, version_base=None)
            def app(cfg: DictConfig) -> None:
                setup_logging()
                logging.getLogger(f"odpipe.{stage_name}").info("stage %s starting", stage_name)
                task(select_keys(cfg, declared_params(stage_name, root / DVC_FILE)))

            app()

        return main

    return decorate


def load_params(root: Path) -> DictConfig:
    """The whole composed params.yaml, for code outside a stage (tracking, benchmarks)."""
    return OmegaConf.load(root / PARAMS_FILE)


def compose_config(root: Path, overrides: list[str]) -> DictConfig:
    """``conf/`` composed with Hydra overrides, in memory (for benchmarks and tests that need
    one group's settings without a params.yaml)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(root / CONF_DIR), version_base=None):
        return compose("config", overrides=overrides)


def compose_params(root: Path, overrides: list[str], output: Path) -> None:
    """Compose ``conf/`` into ``output`` with DVC's own function, so ``make params`` (for plain
    ``dvc repro``) writes byte for byte what ``dvc exp run -S ...`` would."""
    from dvc.utils.hydra import compose_and_dump

    compose_and_dump(output, str(root / CONF_DIR), None, "config", str(root / ".dvc" / "hydra_plugins"), overrides)


def task_folder(root: Path, overrides: list[str]) -> Path:
    """The pipeline folder of the task that ``overrides`` choose (``task=segment``), detection's by default."""
    chosen = [o.split("=", 1)[1] for o in overrides if o.startswith("task=")]
    task = chosen[-1] if chosen else "detect"
    if task not in TASK_FOLDERS:
        raise ValueError(f"task={task}: the tasks are {sorted(TASK_FOLDERS)}")
    return root / TASK_FOLDERS[task]


if __name__ == "__main__":  # python -m odpipe.core.runtime [task=segment] [override ...] -> <task folder>/params.yaml
    _root = Path.cwd()
    compose_params(_root, sys.argv[1:], task_folder(_root, sys.argv[1:]) / PARAMS_FILE)
