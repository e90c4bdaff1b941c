"""train: model_lib_v2.train_loop on pipeline.config, resumable, evaluated on val as it goes;
the selected checkpoint (best on val, or last) becomes the stage's output."""

import logging
from pathlib import Path

import tensorflow as tf
from omegaconf import DictConfig, OmegaConf

from odpipe.core.manifest import folder_digest, sha256_file
from odpipe.core.runtime import stage
from odpipe.data.records import shard_pattern
from odpipe.detect.backbones import backbone_init, code_digest
from odpipe.detect.pipeline_config import load_pipeline
from odpipe.detect.train import Progress, Schedule, check_val_data, fit
from odpipe.engine.checkpoints import work_folder
from odpipe.engine.distribute import Cluster, check_batch, check_shards, enable_memory_growth, make_strategy
from odpipe.engine.journal import Journal, resume_point
from odpipe.engine.mlflow_runs import flatten
from odpipe.engine.train_run import publish, train_run

log = logging.getLogger(__name__)


@stage("train")
def main(cfg: DictConfig) -> None:
    cluster = Cluster.from_env(cfg.train.strategy)
    # Before the strategy: MultiWorkerMirroredStrategy waits for every worker to connect.
    check_shards(len(tf.io.gfile.glob(shard_pattern(cfg.paths.tfrecord, "train"))), cluster.num_workers)
    enable_memory_growth()
    strategy = make_strategy(cfg.train.strategy, cfg.train.devices)
    use_tpu = cfg.train.strategy == "tpu"
    pipeline_config = Path(cfg.paths.pipeline_config)
    config = load_pipeline(pipeline_config)
    check_batch(config.train_config.batch_size, strategy.num_replicas_in_sync)
    schedule = Schedule(
        num_steps=config.train_config.num_steps,
        steps_per_loop=cfg.train.steps_per_loop,
        eval_every=cfg.train.eval_every,
        patience=cfg.train.patience,
        keep=cfg.train.keep,
        checkpoint_max_to_keep=cfg.train.checkpoint_max_to_keep,
        max_minutes=cfg.train.max_minutes,
    )
    check_val_data(list(config.eval_input_reader[0].tf_record_input_reader.input_path), schedule)
    tf.keras.utils.set_random_seed(cfg.train.seed)

    # Everything that decides the weights names the work folder; the rest (logging, selection,
    # patience, devices) may change and training still continues from its checkpoints.
    data_version = folder_digest(Path(cfg.paths.tfrecord))
    inputs = {
        "pipeline.config": sha256_file(pipeline_config),
        "label_map": sha256_file(Path(cfg.paths.label_map)),
        "base_model": sha256_file(Path(cfg.paths.base_model) / "source.json"),
        "data": data_version,
        "seed": str(cfg.train.seed),
        "backbone_init": cfg.model.backbone_init,
        "model_code": code_digest(),
    }
    work = work_folder(cfg.paths.train_work, inputs)
    log.info("%s with %d replica(s); checkpoints in %s", cluster.task, strategy.num_replicas_in_sync, work)
    if not cluster.is_chief:  # trains in step with the chief; records, outputs and resume are the chief's
        restored, step = resume_point(work)
        journal = Journal.open(work, step, writable=False)
        with backbone_init(cfg.model.backbone_init, config):
            outcome = fit(
                pipeline_config, work, schedule, strategy, journal, restored=restored, chief=False, use_tpu=use_tpu
            )
        log.info("%s done at step %d", cluster.task, outcome.last_step)
        return

    params = flatten({"train": OmegaConf.to_container(cfg.train), "model": {"backbone_init": cfg.model.backbone_init}})
    with train_run(
        work,
        inputs,
        resume=cfg.train.resume,
        mlflow_config=cfg.mlflow,
        params=params,
        data_version=data_version,
        select="val/map",
    ) as run:
        progress = Progress(schedule.num_steps, run.first_step, schedule.max_minutes, run.journal.elapsed)

        def on_losses(step: int, scalars: dict[str, float]) -> None:
            run.mlflow.metrics(scalars, step)
            log.info(progress.line(step, scalars))

        def on_val(step: int, metrics: dict[str, float]) -> None:
            run.mlflow.metrics(metrics, step)
            log.info("val at step %d: %s", step, "  ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items())))

        logged = (pipeline_config, cfg.paths.label_map, Path(cfg.paths.base_model) / "source.json")
        run.mlflow.artifacts(Path(p) for p in logged)
        with backbone_init(cfg.model.backbone_init, config):  # ImageNet weights for training's model only
            outcome = fit(
                pipeline_config,
                work,
                schedule,
                strategy,
                run.journal,
                restored=run.restored,
                chief=True,
                on_losses=on_losses,
                on_val=on_val,
                use_tpu=use_tpu,
            )
        publish(run, outcome, schedule.keep, cfg.paths)


if __name__ == "__main__":
    main()
