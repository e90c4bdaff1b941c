"""train (classify): Keras fit on the train records, resumable, scored on val (top-1) after every
epoch; a pretrained backbone frozen first, then fine-tuned; the selected checkpoint (best on val,
or last) is the stage's output."""

import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from odpipe.classify import models
from odpipe.classify import train as training
from odpipe.classify.clean import check_min_per_class, train_counts
from odpipe.classify.models import CLASSIFY_MODELS
from odpipe.classify.records import COUNTS
from odpipe.classify.train import (
    SELECT,
    class_weights,
    compiled_model,
    phases,
    predict_split,
    split_batches,
    train_dataset,
    val_scores,
)
from odpipe.core.manifest import folder_digest
from odpipe.core.runtime import stage
from odpipe.engine import keras_loop
from odpipe.engine.keras_loop import EpochSchedule, check_strategy, check_task_model, fit_epochs, start_strategy
from odpipe.engine.mlflow_runs import flatten
from odpipe.engine.train_run import epoch_reporters, publish, train_run, work_and_inputs

log = logging.getLogger(__name__)
MODEL_CODE = (models, training, keras_loop)  # what builds and trains the weights
WEIGHT_KEYS = ("batch_size", "epochs", "learning_rate", "label_smoothing", "class_weights", "mixed_precision", "seed")


@stage("train")
def main(cfg: DictConfig) -> None:
    train, model_cfg, size = (
        OmegaConf.to_container(cfg.train),
        OmegaConf.to_container(cfg.model),
        cfg.classify.image_size,
    )
    check_task_model(model_cfg, "classify", CLASSIFY_MODELS)
    check_strategy(train["strategy"], "classify")
    records = Path(cfg.paths.tfrecord)
    names = json.loads(Path(cfg.paths.classes).read_text())["names"]
    per_class = train_counts(json.loads(Path(cfg.paths.clean_split_report).read_text()), names)
    check_min_per_class(per_class, cfg.classify.min_per_class)
    weights = class_weights([per_class[n] for n in names], train["class_weights"])
    schedule = EpochSchedule.from_config(train, json.loads((records / COUNTS).read_text())["train"])
    strategy = start_strategy(train)
    data_version = folder_digest(records)
    chosen = {key: train[key] for key in WEIGHT_KEYS}
    work, inputs = work_and_inputs(
        cfg.paths.train_work, data_version, model_cfg, chosen, MODEL_CODE, image_size=str(size)
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
            model = compiled_model(model_cfg, len(names), size, train, schedule.epochs * schedule.steps_per_epoch)
        data = train_dataset(
            records,
            batch_size=train["batch_size"],
            image_size=size,
            num_classes=len(names),
            weights=weights,
            seed=train["seed"],
        )
        val = split_batches(records, "val", size, train["batch_size"])

        def validate() -> dict[str, float]:
            return val_scores(*predict_split(model, val), names)

        on_losses, on_val = epoch_reporters(run, schedule.epochs, SELECT, "top-1")
        prepare = phases(model, model_cfg, schedule.epochs, train["label_smoothing"])
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
            prepare=prepare,
        )
        publish(run, outcome, schedule.keep, cfg.paths)


if __name__ == "__main__":
    main()
