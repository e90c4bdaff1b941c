"""train (segment): Keras fit on random crops of the train records, resumable, scored on val
(mIoU) after every epoch; the selected checkpoint (best on val, or last) is the stage's output."""

import json
import logging
import math
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from odpipe import keras_training, seg_losses, seg_models, seg_training
from odpipe.checkpoints import inputs_digest
from odpipe.distribute import check_batch, enable_memory_growth, make_strategy
from odpipe.keras_training import EpochSchedule, check_strategy, check_task_model, fit_epochs, seed_everything
from odpipe.manifest import folder_digest, sha256_file
from odpipe.mask_records import COUNTS
from odpipe.project import project_root
from odpipe.runs import flatten
from odpipe.runtime import stage
from odpipe.seg_export import SegmenterModule
from odpipe.seg_losses import class_weights
from odpipe.seg_models import SEGMENT_MODELS
from odpipe.seg_training import SELECT, compiled_model, score_split, split_pairs, train_dataset, val_scores
from odpipe.train_run import publish, train_run

log = logging.getLogger(__name__)
MODEL_CODE = (seg_models, seg_losses, seg_training, keras_training)  # what builds and trains the weights


@stage("train")
def main(cfg: DictConfig) -> None:
    train, model_cfg = cfg.train, OmegaConf.to_container(cfg.model)
    check_task_model(model_cfg, "segment", SEGMENT_MODELS)
    check_strategy(train.strategy, "segment")
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
    params = flatten({"train": OmegaConf.to_container(train), "model": model_cfg})
    with train_run(work, inputs, train.resume, cfg.mlflow, params, data_version, SELECT, unit="epoch") as run:
        with strategy.scope():
            total = schedule.epochs * schedule.steps_per_epoch
            model = compiled_model(model_cfg, len(names), OmegaConf.to_container(train), weights, total)
        data = train_dataset(records, train.batch_size, cfg.segment.tile_size, train.seed)
        module = SegmenterModule(model, cfg.segment.tile_size, cfg.segment.tile_overlap)  # the export's inference

        def validate() -> dict[str, float]:
            metrics, _ = score_split(module, split_pairs(records, "val"), names)
            return val_scores(metrics)

        def on_losses(epoch: int, losses: dict[str, float]) -> None:
            run.mlflow.metrics(losses, epoch)

        def on_val(epoch: int, metrics: dict[str, float]) -> None:
            run.mlflow.metrics(metrics, epoch)
            best = run.journal.best or {"step": epoch, "metrics": metrics}
            log.info(
                "epoch %d/%d: loss %.4f  val mIoU %.4f  (best %.4f at epoch %d)",
                epoch,
                schedule.epochs,
                run.journal.losses[-1]["loss"],
                metrics.get(SELECT, math.nan),
                best["metrics"][SELECT],
                best["step"],
            )

        outcome = fit_epochs(model, data, validate, work, schedule, run.journal, train.batch_size, on_losses, on_val)
        publish(run, outcome, schedule.keep, cfg.paths)


if __name__ == "__main__":
    main()
