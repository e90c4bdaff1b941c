"""Write ``pipeline.config`` by editing the OD API's own proto, never its text.

The base config (a project file, or later a zoo model's) is parsed into ``TrainEvalPipelineConfig``;
only the fields odpipe owns are set; the result is written with ``text_format`` and proven
buildable with ``model_builder`` before the stage succeeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from object_detection.builders import model_builder
from object_detection.protos import pipeline_pb2

from odpipe import tfcompat  # noqa: F401  (tf-slim bridge for the OD API)


@dataclass(frozen=True)
class PipelineSettings:
    """Everything odpipe sets in a pipeline.config; the rest stays as in the base."""

    num_classes: int
    image_size: int
    batch_size: int
    num_steps: int
    learning_rate: float
    warmup_steps: int
    max_detections: int
    nms_iou_threshold: float
    label_map_path: str
    train_input: str
    eval_input: str
    fine_tune_checkpoint: str | None = None
    fine_tune_checkpoint_type: str = "detection"


def load_pipeline(path: Path) -> pipeline_pb2.TrainEvalPipelineConfig:
    config = pipeline_pb2.TrainEvalPipelineConfig()
    try:
        text_format.Parse(path.read_text(), config)
    except text_format.ParseError as err:
        raise ValueError(f"{path}: not a valid pipeline.config ({err})") from err
    return config


def _set_schedule(config: pipeline_pb2.TrainEvalPipelineConfig, settings: PipelineSettings) -> None:
    """Base rate, warm-up and total steps, kept consistent with ``num_steps``."""
    optimizer = config.train_config.optimizer
    which = optimizer.WhichOneof("optimizer")
    if which is None:
        raise ValueError("base pipeline.config has no train_config.optimizer")
    learning_rate = getattr(optimizer, which).learning_rate
    schedule = learning_rate.WhichOneof("learning_rate")
    if schedule == "cosine_decay_learning_rate":
        cosine = learning_rate.cosine_decay_learning_rate
        cosine.learning_rate_base = settings.learning_rate
        cosine.total_steps = settings.num_steps
        cosine.warmup_steps = min(settings.warmup_steps, settings.num_steps)
        cosine.warmup_learning_rate = min(cosine.warmup_learning_rate, settings.learning_rate)
    elif schedule == "constant_learning_rate":
        learning_rate.constant_learning_rate.learning_rate = settings.learning_rate
    else:
        raise ValueError(f"learning-rate schedule {schedule!r} is not supported yet; use cosine or constant")


def apply_settings(
    base: pipeline_pb2.TrainEvalPipelineConfig, settings: PipelineSettings
) -> pipeline_pb2.TrainEvalPipelineConfig:
    """A copy of ``base`` with odpipe's settings applied (SSD models)."""
    config = pipeline_pb2.TrainEvalPipelineConfig()
    config.CopyFrom(base)
    arch = config.model.WhichOneof("model")
    if arch != "ssd":
        raise ValueError(f"meta-architecture {arch!r} is not supported yet (only 'ssd')")
    ssd = config.model.ssd
    ssd.num_classes = settings.num_classes
    resizer = ssd.image_resizer.fixed_shape_resizer
    resizer.height = resizer.width = settings.image_size
    nms = ssd.post_processing.batch_non_max_suppression
    nms.max_total_detections = settings.max_detections
    nms.max_detections_per_class = settings.max_detections
    nms.iou_threshold = settings.nms_iou_threshold

    train = config.train_config
    train.batch_size = settings.batch_size
    train.num_steps = settings.num_steps
    _set_schedule(config, settings)
    if settings.fine_tune_checkpoint:
        train.fine_tune_checkpoint = settings.fine_tune_checkpoint
        train.fine_tune_checkpoint_type = settings.fine_tune_checkpoint_type
    else:
        train.ClearField("fine_tune_checkpoint")

    config.train_input_reader.label_map_path = settings.label_map_path
    config.train_input_reader.tf_record_input_reader.ClearField("input_path")
    config.train_input_reader.tf_record_input_reader.input_path.append(settings.train_input)
    del config.eval_input_reader[:]
    eval_reader = config.eval_input_reader.add()
    eval_reader.label_map_path = settings.label_map_path
    eval_reader.shuffle = False
    eval_reader.num_epochs = 1
    eval_reader.tf_record_input_reader.input_path.append(settings.eval_input)
    return config


def validate(config: pipeline_pb2.TrainEvalPipelineConfig) -> None:
    """Build the model as training will; a bad config fails here, not an hour later."""
    model_builder.build(model_config=config.model, is_training=True)


def write_pipeline(config: pipeline_pb2.TrainEvalPipelineConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text_format.MessageToString(config))
