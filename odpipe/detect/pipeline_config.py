"""Write ``pipeline.config`` by editing the OD API's own proto, never its text.

The base config (the built-in model's, or a TF2 Detection Zoo model's own) is parsed into
``TrainEvalPipelineConfig``; only the fields odpipe owns are set, each where the model's
meta-architecture keeps it (``num_classes`` sits in a different message for SSD, Faster R-CNN
and CenterNet); the result is written with ``text_format`` and proven buildable, and the
fine-tune checkpoint proven restorable, before the stage succeeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf
from google.protobuf import json_format, text_format
from object_detection.builders import model_builder
from object_detection.protos import pipeline_pb2, preprocessor_pb2, train_pb2

from odpipe.detect import tfcompat  # noqa: F401  (tf-slim bridge for the OD API)
from odpipe.detect.backbones import CENTER_NET_MOBILENET_V2

ARCHITECTURES = ("ssd", "faster_rcnn", "center_net")


class CheckpointError(ValueError):
    """The fine-tune checkpoint is missing or does not fit the model."""


@dataclass(frozen=True)
class PipelineSettings:
    """Everything odpipe sets in a pipeline.config; the rest stays as in the base.

    ``None`` keeps the base model's own value: its input size, and its learning rate scaled
    linearly to ``batch_size`` (zoo configs are tuned for TPU batches of 64 to 512), with its
    warm-up scaled to ``num_steps``.
    """

    num_classes: int
    batch_size: int
    num_steps: int
    max_detections: int
    nms_iou_threshold: float
    label_map_path: str
    train_input: str
    eval_input: str
    image_size: int | None = None
    depth_multiplier: float | None = None  # SSD or CenterNet MobileNetV2 width: the model-size knob of a sweep
    learning_rate: float | None = None
    warmup_steps: int | None = None
    fine_tune_checkpoint: str | None = None
    fine_tune_checkpoint_type: str = "detection"
    augmentation: tuple[dict, ...] | None = None  # OD API data_augmentation_options; None keeps the base's


def load_pipeline(path: Path) -> pipeline_pb2.TrainEvalPipelineConfig:
    config = pipeline_pb2.TrainEvalPipelineConfig()
    try:
        text_format.Parse(path.read_text(), config)
    except text_format.ParseError as err:
        raise ValueError(f"{path}: not a valid pipeline.config ({err})") from err
    return config


def architecture(config: pipeline_pb2.TrainEvalPipelineConfig) -> str:
    arch = config.model.WhichOneof("model")
    if arch not in ARCHITECTURES:
        raise ValueError(f"meta-architecture {arch!r} is not supported; odpipe edits {', '.join(ARCHITECTURES)}")
    return arch


def _set_schedule(config: pipeline_pb2.TrainEvalPipelineConfig, settings: PipelineSettings) -> None:
    """Base rate, warm-up and decay steps, made consistent with ``num_steps`` and ``batch_size``.

    Steps in the base schedule (warm-up, decay, boundaries) scale by ``num_steps`` over the
    base's own ``num_steps``, so a 2000-step fine-tune keeps the shape of a 50000-step recipe.
    """
    train = config.train_config
    optimizer = train.optimizer
    which = optimizer.WhichOneof("optimizer")
    if which is None:
        raise ValueError("base pipeline.config has no train_config.optimizer")
    learning_rate = getattr(optimizer, which).learning_rate
    step_ratio = settings.num_steps / train.num_steps if train.num_steps else 1.0
    batch_ratio = settings.batch_size / train.batch_size if train.batch_size else 1.0

    def rescale(base: float) -> tuple[float, float]:
        """The new base rate, and the factor the schedule's other rates follow it by."""
        new = settings.learning_rate if settings.learning_rate is not None else base * batch_ratio
        return new, (new / base if base else 1.0)

    def steps(base: int) -> int:
        return max(1, round(base * step_ratio)) if base else 0

    schedule = learning_rate.WhichOneof("learning_rate")
    if schedule == "cosine_decay_learning_rate":
        cosine = learning_rate.cosine_decay_learning_rate
        cosine.learning_rate_base, factor = rescale(cosine.learning_rate_base)
        cosine.warmup_learning_rate *= factor
        cosine.total_steps = settings.num_steps
        warmup = settings.warmup_steps if settings.warmup_steps is not None else steps(cosine.warmup_steps)
        cosine.warmup_steps = min(warmup, settings.num_steps)
        cosine.hold_base_rate_steps = min(steps(cosine.hold_base_rate_steps), settings.num_steps - cosine.warmup_steps)
    elif schedule == "constant_learning_rate":
        constant = learning_rate.constant_learning_rate
        constant.learning_rate, _ = rescale(constant.learning_rate)
    elif schedule == "exponential_decay_learning_rate":
        exponential = learning_rate.exponential_decay_learning_rate
        exponential.initial_learning_rate, factor = rescale(exponential.initial_learning_rate)
        exponential.burnin_learning_rate *= factor
        exponential.decay_steps = steps(exponential.decay_steps)
        exponential.burnin_steps = min(steps(exponential.burnin_steps), settings.num_steps)
    elif schedule == "manual_step_learning_rate":
        manual = learning_rate.manual_step_learning_rate
        manual.initial_learning_rate, factor = rescale(manual.initial_learning_rate)
        for point in manual.schedule:
            point.step = steps(point.step)
            point.learning_rate *= factor
    else:
        raise ValueError(f"base pipeline.config has no learning-rate schedule under optimizer.{which}")


def _set_image_size(model, size: int) -> None:
    """A square input of ``size``: both sides for a fixed-shape resizer, both bounds (and so a
    padded square) for a keep-aspect-ratio one."""
    resizer = model.image_resizer
    kind = resizer.WhichOneof("image_resizer_oneof")
    if kind == "fixed_shape_resizer":
        resizer.fixed_shape_resizer.height = resizer.fixed_shape_resizer.width = size
    elif kind == "keep_aspect_ratio_resizer":
        resizer.keep_aspect_ratio_resizer.min_dimension = resizer.keep_aspect_ratio_resizer.max_dimension = size
    else:
        raise ValueError(f"image resizer {kind!r} cannot be resized by model.image_size; set model.image_size=null")


def input_size(config: pipeline_pb2.TrainEvalPipelineConfig) -> tuple[int, int]:
    """(height, width) the model's resizer produces."""
    resizer = getattr(config.model, architecture(config)).image_resizer
    if resizer.HasField("fixed_shape_resizer"):
        return resizer.fixed_shape_resizer.height, resizer.fixed_shape_resizer.width
    side = resizer.keep_aspect_ratio_resizer.max_dimension
    return side, side


def _set_post_processing(config: pipeline_pb2.TrainEvalPipelineConfig, settings: PipelineSettings) -> None:
    """Detections per image and NMS IoU, where each meta-architecture keeps them."""
    arch = architecture(config)
    if arch == "center_net":  # peaks of a heat map, no NMS
        config.model.center_net.object_center_params.max_box_predictions = settings.max_detections
        return
    model = getattr(config.model, arch)
    nms = (model.post_processing if arch == "ssd" else model.second_stage_post_processing).batch_non_max_suppression
    nms.max_total_detections = settings.max_detections
    nms.max_detections_per_class = settings.max_detections
    nms.iou_threshold = settings.nms_iou_threshold
    if arch == "faster_rcnn":
        model.first_stage_max_proposals = max(model.first_stage_max_proposals, settings.max_detections)


def max_detections(config: pipeline_pb2.TrainEvalPipelineConfig) -> int:
    """Detections per image, from where ``_set_post_processing`` put them."""
    arch = architecture(config)
    if arch == "center_net":
        return config.model.center_net.object_center_params.max_box_predictions
    model = getattr(config.model, arch)
    nms = (model.post_processing if arch == "ssd" else model.second_stage_post_processing).batch_non_max_suppression
    return nms.max_total_detections


def _boxes_only(config: pipeline_pb2.TrainEvalPipelineConfig) -> None:
    """odpipe's data carries boxes only: drop keypoint, mask and DensePose tasks a zoo model
    (e.g. a CenterNet ``_kpts`` one) brings, or its input pipeline would ask for them."""
    if architecture(config) == "center_net":
        center_net = config.model.center_net
        for field in ("keypoint_estimation_task", "mask_estimation_task", "densepose_estimation_task"):
            center_net.ClearField(field)
        center_net.ClearField("keypoint_label_map_path")
    for reader in (config.train_input_reader, *config.eval_input_reader):
        reader.ClearField("num_keypoints")
        reader.load_instance_masks = False
    for field in ("keypoint_edge", "parameterized_metric"):
        config.eval_config.ClearField(field)


def augmentation_options(options: tuple[dict, ...]) -> list[preprocessor_pb2.PreprocessingStep]:
    """``[{random_horizontal_flip: {}}, {random_adjust_brightness: {max_delta: 0.2}}]`` as the
    OD API's ``PreprocessingStep`` messages; a misspelt option fails here, naming itself."""
    steps = []
    for option in options:
        try:
            steps.append(json_format.ParseDict(dict(option), preprocessor_pb2.PreprocessingStep()))
        except json_format.ParseError as err:
            raise ValueError(f"augment.online: {option} is not an OD API preprocessing step ({err})") from err
    return steps


def apply_settings(
    base: pipeline_pb2.TrainEvalPipelineConfig, settings: PipelineSettings
) -> pipeline_pb2.TrainEvalPipelineConfig:
    """A copy of ``base`` with odpipe's settings applied."""
    config = pipeline_pb2.TrainEvalPipelineConfig()
    config.CopyFrom(base)
    model = getattr(config.model, architecture(config))
    model.num_classes = settings.num_classes
    if settings.image_size is not None:
        _set_image_size(model, settings.image_size)
    if settings.depth_multiplier is not None:
        arch, extractor = architecture(config), model.feature_extractor.type
        if not (arch == "ssd" or (arch == "center_net" and extractor in CENTER_NET_MOBILENET_V2)):
            raise ValueError(
                f"model.depth_multiplier applies to SSD and CenterNet MobileNetV2 models only, not this {arch} "
                f"model's {extractor!r} backbone; set it to null"
            )
        model.feature_extractor.depth_multiplier = settings.depth_multiplier
    _set_post_processing(config, settings)
    _boxes_only(config)

    train = config.train_config
    _set_schedule(config, settings)  # before batch_size and num_steps: it scales from the base's
    train.batch_size = settings.batch_size
    train.num_steps = settings.num_steps
    train.use_bfloat16 = False  # zoo configs are written for TPUs; bfloat16 is slow or unsupported on CPU/GPU
    if settings.augmentation is not None:
        del train.data_augmentation_options[:]
        train.data_augmentation_options.extend(augmentation_options(settings.augmentation))
    if settings.image_size is not None:  # EfficientDet's crop-and-pad makes squares of the input size
        for step in train.data_augmentation_options:
            if step.HasField("random_scale_crop_and_pad_to_square"):
                step.random_scale_crop_and_pad_to_square.output_size = settings.image_size
    if settings.fine_tune_checkpoint:
        train.fine_tune_checkpoint = settings.fine_tune_checkpoint
        train.fine_tune_checkpoint_type = settings.fine_tune_checkpoint_type
        train.fine_tune_checkpoint_version = train_pb2.V2
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
    config.eval_config.ClearField("metrics_set")
    config.eval_config.metrics_set.append("coco_detection_metrics")
    config.eval_config.batch_size = 1
    return config


def build_model(config: pipeline_pb2.TrainEvalPipelineConfig):
    """The detection model with its variables created, by one forward pass on a blank image
    (Keras creates variables lazily: without it a checkpoint cannot be checked against it)."""
    model = model_builder.build(model_config=config.model, is_training=False)
    height, width = input_size(config)
    images, shapes = model.preprocess(tf.zeros([1, height, width, 3], tf.float32))
    model.predict(images, shapes)
    return model


def restore_fine_tune_checkpoint(model, config: pipeline_pb2.TrainEvalPipelineConfig) -> None:
    """Restore into ``model`` exactly what train_loop will restore from the config's
    fine-tune checkpoint, failing clearly when it is missing or was saved by another
    architecture."""
    checkpoint = config.train_config.fine_tune_checkpoint
    checkpoint_type = config.train_config.fine_tune_checkpoint_type
    if not tf.io.gfile.exists(f"{checkpoint}.index"):
        raise CheckpointError(f"fine-tune checkpoint {checkpoint} is missing ({checkpoint}.index does not exist)")
    objects = model.restore_from_objects(fine_tune_checkpoint_type=checkpoint_type)
    try:
        tf.train.Checkpoint(**objects).restore(checkpoint).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError) as err:
        detail = str(err).splitlines()[0][:300]
        raise CheckpointError(
            f"fine-tune checkpoint {checkpoint} does not match this {architecture(config)} model "
            f"(restoring its {checkpoint_type!r} variables failed: {detail}); "
            "pick the model entry the checkpoint belongs to, or set model.fine_tune=false"
        ) from err


def validate(config: pipeline_pb2.TrainEvalPipelineConfig) -> None:
    """Build the model as training will and restore its fine-tune checkpoint: a bad config or
    checkpoint fails here, not an hour later."""
    model = build_model(config)
    if config.train_config.fine_tune_checkpoint:
        restore_fine_tune_checkpoint(model, config)


def write_pipeline(config: pipeline_pb2.TrainEvalPipelineConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text_format.MessageToString(config))
