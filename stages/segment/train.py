"""train (segment): Keras fit on random crops of the train records, resumable, scored on val
(mIoU) after every epoch; the selected checkpoint (best on val, or last) is the stage's output."""

import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from odpipe.core.manifest import folder_digest
from odpipe.core.runtime import stage
from odpipe.engine import keras_loop
from odpipe.engine.keras_loop import EpochSchedule, check_strategy, check_task_model, fit_epochs, start_strategy
from odpipe.engine.mlflow_runs import flatten
from odpipe.engine.train_run import epoch_reporters, publish, train_run, work_and_inputs
from odpipe.segment import losses, models
from odpipe.segment import train as training
from odpipe.segment.export import SegmenterModule
from odpipe.segment.losses import class_weights
from odpipe.segment.models import SEGMENT_MODELS
from odpipe.segment.records import COUNTS
from odpipe.segment.train import SELECT, compiled_model, score_split, split_pairs, train_dataset, val_scores

log = logging.getLogger(__name__)
MODEL_CODE = (models, losses, training, keras_loop)  # what builds and trains the weights
WEIGHT_KEYS = ("batch_size", "epochs", "learning_rate", "loss", "class_weights", "mixed_precision", "seed")


@stage("train")
def main(cfg: DictConfig) -> None:
    train, model_cfg = OmegaConf.to_container(cfg.train), OmegaConf.to_container(cfg.model)
    check_task_model(model_cfg, "segment", SEGMENT_MODELS)
    check_strategy(train["strategy"], "segment")
    records, tile = Path(cfg.paths.tfrecord), cfg.segment.tile_size
    names = json.loads(Path(cfg.paths.classes).read_text())["names"]
    train_pixels = json.loads(Path(cfg.paths.clean_split_report).read_text())["splits"]["train"]["pixels"]
    weights = class_weights([train_pixels[n] for n in names], train["class_weights"])
    schedule = EpochSchedule.from_config(train, json.loads((records / COUNTS).read_text())["train"])
    strategy = start_strategy(train)
    data_version = folder_digest(records)
    chosen = {key: train[key] for key in WEIGHT_KEYS}
    work, inputs = work_and_inputs(
        cfg.paths.train_work, data_version, model_cfg, chosen, MODEL_CODE, tile_size=str(tile)
    )
    replicas = strategy.num_replicas_in_sync
    log.info("%d replica(s), %d steps an epoch; checkpoints in %s", replicas, schedule.steps_per_epoch, work)
    params = flatten({"train": train, "model": model_cfg})
    with train_run(
        work,
        inputs,
        resume=train["resume"],
        mlflow_config=cfg.mlflow,
        params=params,
        data_version=data_version,
        select=SELECT,
        unit="epoch",
    ) as run:
        with strategy.scope():
            model = compiled_model(model_cfg, len(names), train, weights, schedule.epochs * schedule.steps_per_epoch)
        data = train_dataset(records, train["batch_size"], tile, train["seed"])
        module = SegmenterModule(model, tile, cfg.segment.tile_overlap)  # the export's inference

        def validate() -> dict[str, float]:
            metrics, _ = score_split(module, split_pairs(records, "val"), names)
            return val_scores(metrics)

        on_losses, on_val = epoch_reporters(run, schedule.epochs, SELECT, "mIoU")
        outcome = fit_epochs(
            model,
            data,
            validate,
            work,
            schedule,
            run.journal,
            batch_size=train["batch_size"],
            on_losses=on_losses,
            on_val=on_val,
        )
        publish(run, outcome, schedule.keep, cfg.paths)


if __name__ == "__main__":
    main()
