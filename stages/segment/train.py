"""train (segment): Keras fit on random crops of the train records, resumable, scored on val
(mIoU) after every epoch; the selected checkpoint (best on val, or last) is the stage's output."""

import json
import logging
import math
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from odpipe import seg_losses, seg_models, seg_training
from odpipe.checkpoints import empty, exclusive, inputs_digest, publishing
from odpipe.distribute import check_batch, enable_memory_growth, make_strategy
from odpipe.files import write_csv, write_json
from odpipe.journal import Journal, resume_point, rows_table
from odpipe.manifest import folder_digest, sha256_file
from odpipe.mask_records import COUNTS
from odpipe.project import project_root
from odpipe.runs import (
    DATA_VERSION_TAG,
    RESUMED_AT_TAG,
    RESUMED_FROM_TAG,
    RunLogger,
    create_run,
    flatten,
    resolve_tracking_uri,
    write_run_file,
)
from odpipe.runtime import stage
from odpipe.seg_export import SegmenterModule
from odpipe.seg_losses import class_weights
from odpipe.seg_training import (
    SELECT,
    EpochSchedule,
    check_segment_model,
    check_strategy,
    compiled_model,
    fit_epochs,
    score_split,
    seed_everything,
    split_pairs,
    train_dataset,
    val_scores,
)

log = logging.getLogger(__name__)
MODEL_CODE = (seg_models, seg_losses, seg_training)  # what builds and trains the weights


@stage("train")
def main(cfg: DictConfig) -> None:
    train, model_cfg = cfg.train, OmegaConf.to_container(cfg.model)
    check_segment_model(model_cfg)
    check_strategy(train.strategy)
    records = Path(cfg.paths.tfrecord)
    names = json.loads(Path(cfg.paths.classes).read_text())["names"]
    train_pixels = json.loads(Path(cfg.paths.clean_split_report).read_text())["splits"]["train"]["pixels"]
    weights = class_weights([train_pixels[n] for n in names], train.class_weights)
    examples = json.loads((records / COUNTS).read_text())["train"]
    schedule = EpochSchedule(
        epochs=train.epochs,
        steps_per_epoch=max(1, examples // train.batch_size),
        patience=train.patience,
        keep=train.keep,
        max_minutes=train.max_minutes,
    )
    enable_memory_growth()
    strategy = make_strategy(train.strategy, train.devices)
    check_batch(train.batch_size, strategy.num_replicas_in_sync)
    seed_everything(train.seed)

    data_version = folder_digest(records)
    inputs = {
        "data": data_version,
        "model": json.dumps(model_cfg, sort_keys=True),
        "train": json.dumps(
            {
                k: train[k]
                for k in ("batch_size", "epochs", "learning_rate", "loss", "class_weights", "mixed_precision", "seed")
            },
            sort_keys=True,
        ),
        "tile_size": str(cfg.segment.tile_size),
        "model_code": inputs_digest({m.__name__: sha256_file(Path(m.__file__)) for m in MODEL_CODE}),
    }
    work = project_root(Path.cwd()) / cfg.paths.train_work / inputs_digest(inputs)[:16]
    log.info(
        "%d replica(s), %d steps an epoch; checkpoints in %s",
        strategy.num_replicas_in_sync,
        schedule.steps_per_epoch,
        work,
    )
    with exclusive(work):
        if not train.resume:
            empty(work)
        write_json(inputs, work / "inputs.json")
        restored, first_epoch = resume_point(work)
        journal = Journal.open(work, first_epoch, select=SELECT)
        uri = resolve_tracking_uri(cfg.mlflow.tracking_uri, Path.cwd())
        mlflow = RunLogger(uri)
        previous, tags = journal.run_id, {DATA_VERSION_TAG: data_version}
        if restored and previous:
            tags |= {RESUMED_FROM_TAG: previous, RESUMED_AT_TAG: str(first_epoch)}
            log.info("resuming from epoch %d (%s); MLflow run %s continues", first_epoch, restored, previous)
        params = flatten({"train": OmegaConf.to_container(train), "model": model_cfg})
        run_id = mlflow.start(lambda client: create_run(client, cfg.mlflow.experiment_name, Path.cwd(), params, tags))
        if restored and previous:
            mlflow.close_interrupted(previous)
        journal.set_run(run_id)
        mlflow.history(journal.losses + journal.val)

        with strategy.scope():
            total = schedule.epochs * schedule.steps_per_epoch
            model = compiled_model(model_cfg, len(names), OmegaConf.to_container(train), weights, total)
        data = train_dataset(records, train.batch_size, cfg.segment.tile_size, train.seed)
        module = SegmenterModule(model, cfg.segment.tile_size, cfg.segment.tile_overlap)  # the export's inference

        def validate() -> dict[str, float]:
            metrics, _ = score_split(module, split_pairs(records, "val"), names)
            return val_scores(metrics)

        def on_losses(epoch: int, losses: dict[str, float]) -> None:
            mlflow.metrics(losses, epoch)

        def on_val(epoch: int, metrics: dict[str, float]) -> None:
            mlflow.metrics(metrics, epoch)
            best = journal.best or {"step": epoch, "metrics": metrics}
            log.info(
                "epoch %d/%d: loss %.4f  val mIoU %.4f  (best %.4f at epoch %d)",
                epoch,
                schedule.epochs,
                journal.losses[-1]["loss"],
                metrics.get(SELECT, math.nan),
                best["metrics"][SELECT],
                best["step"],
            )

        with mlflow.status():
            outcome = fit_epochs(model, data, validate, work, schedule, journal, train.batch_size, on_losses, on_val)
            selection = outcome.selection(schedule.keep)
            log.info("exporting the %s checkpoint: %s", schedule.keep, selection)
            with publishing(Path(cfg.paths.train)) as out:
                outcome.copy_to(out)
                write_json(selection, out / Path(cfg.paths.train_selection).name)
                write_run_file(out / Path(cfg.paths.mlflow_run).name, run_id, uri)
            write_csv(*rows_table(journal.losses), cfg.paths.train_plot)
            write_csv(*rows_table(journal.val), cfg.paths.val_plot)
            mlflow.metrics({"train/last_epoch": outcome.last_step, "train/seconds": outcome.elapsed}, outcome.last_step)
            mlflow.tags({"odpipe.selected_epoch": str(outcome.step), "odpipe.stop": outcome.stop})
        mlflow.report()


if __name__ == "__main__":
    main()
