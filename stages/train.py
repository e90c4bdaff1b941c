"""train: model_lib_v2.train_loop on pipeline.config, losses streamed to MLflow and DVC plots."""

import logging
from pathlib import Path

import tensorflow as tf
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from odpipe.files import fresh_dir, write_csv
from odpipe.manifest import folder_digest
from odpipe.pipeline_config import load_pipeline
from odpipe.runtime import stage
from odpipe.tracking import (
    DATA_VERSION_TAG,
    create_run,
    flatten,
    log_artifacts,
    log_metrics,
    resolve_tracking_uri,
    run_status,
    write_run_file,
)
from odpipe.training import Progress, check_schedule, train

log = logging.getLogger(__name__)


@stage("train")
def main(cfg: DictConfig) -> None:
    pipeline_config = Path(cfg.paths.pipeline_config)
    num_steps = load_pipeline(pipeline_config).train_config.num_steps
    check_schedule(num_steps, cfg.train.steps_per_loop)
    tf.keras.utils.set_random_seed(cfg.train.seed)

    model_dir = fresh_dir(cfg.paths.train)
    uri = resolve_tracking_uri(cfg.mlflow.tracking_uri, Path.cwd())
    client = MlflowClient(uri)
    params = flatten({k: v for k, v in OmegaConf.to_container(cfg).items() if k != "paths"})
    data_version = {DATA_VERSION_TAG: folder_digest(Path(cfg.paths.tfrecord))}
    run_id = create_run(client, cfg.mlflow.experiment_name, Path.cwd(), params, data_version)
    write_run_file(Path(cfg.paths.mlflow_run), run_id, uri)
    log.info("MLflow run %s at %s", run_id, uri)

    progress = Progress(num_steps)
    history: list[dict] = []

    def on_scalars(step: int, scalars: dict[str, float]) -> None:
        log_metrics(client, run_id, scalars, step)
        history.append({"step": step, **scalars})
        log.info(progress.line(step, scalars))

    with run_status(client, run_id):
        inputs = [
            cfg.paths.pipeline_config,
            cfg.paths.label_map,
            f"{cfg.paths.base_model}/source.json",
            cfg.paths.clean_split_report,
            cfg.paths.clean_split_markdown,
            cfg.paths.clean_split_grid,
            cfg.paths.augment_preview,
        ]
        log_artifacts(client, run_id, [Path(p) for p in inputs])
        train(pipeline_config, model_dir, cfg.train.steps_per_loop, cfg.train.checkpoint_max_to_keep, on_scalars)
        columns = ["step", *sorted({key for row in history for key in row} - {"step"})]
        write_csv(history, columns, cfg.paths.train_plot)


if __name__ == "__main__":
    main()
