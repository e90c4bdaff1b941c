"""TFLite models for phones and edge devices, by the OD API's own path: its TFLite inference
graph (``export_tflite_graph_lib_tf2``, which ends in the ``TFLite_Detection_PostProcess`` op for
SSD), converted by ``tf.lite.TFLiteConverter`` as float, float16 or int8.

The OD API supports SSD and CenterNet with a ``fixed_shape_resizer`` only: the TFLite input has
one fixed shape, [1, height, width, 3] float pixel values (0-255).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import tensorflow as tf
from object_detection import export_tflite_graph_lib_tf2
from object_detection.builders import model_builder
from object_detection.protos import pipeline_pb2

from odpipe.detect import tfcompat  # noqa: F401  (tf-slim bridge for the OD API)
from odpipe.detect.detectors import fixed_shape_input
from odpipe.detect.evaluate import decode
from odpipe.detect.pipeline_config import architecture, input_size, max_detections

QUANTIZATIONS = ("none", "float16", "int8")
SUPPORTED = ("ssd", "center_net")
# Ops int8 leaves in float. CenterNet keeps a heat-map cell as a peak when |cell - its 3x3 max
# pool| < 1e-6; in int8 that tolerance rounds to 0, no cell passes, and the model finds nothing.
FLOAT_OPS = ["ABS", "LESS"]


class PixelInputSSDModule(export_tflite_graph_lib_tf2.SSDModule):
    """The OD API's TFLite SSD module with the model's own preprocessing in front, as its
    CenterNet module has: the .tflite file takes pixel values, and an app does not have to know
    each feature extractor's normalisation (MobileNet's [-1, 1], ResNet's channel means, ...)."""

    @tf.function
    def inference_fn(self, image: tf.Tensor):
        preprocessed, _ = self._model.preprocess(image)
        return super().inference_fn(preprocessed)


def check_supported(config: pipeline_pb2.TrainEvalPipelineConfig) -> None:
    """Refuse, before any work, a model the OD API's TFLite path cannot export."""
    kind = architecture(config)
    if kind not in SUPPORTED:
        raise ValueError(
            f"export.formats has tflite, which the OD API supports for SSD and CenterNet models only; "
            f"this model is {kind} (drop tflite from export.formats, or pick an SSD or CenterNet model)"
        )
    resizer = getattr(config.model, kind).image_resizer.WhichOneof("image_resizer_oneof")
    if resizer != "fixed_shape_resizer":
        raise ValueError(
            f"export.formats has tflite, which needs a fixed_shape_resizer (one input shape); "
            f"this model's pipeline.config has a {resizer}"
        )


def inference_module(config: pipeline_pb2.TrainEvalPipelineConfig) -> tuple[tf.Module, tf.train.Checkpoint]:
    """The OD API's TFLite inference module for ``config`` and the checkpoint that fills it; as
    many detections as the SavedModel gives."""
    limit = max_detections(config)
    if architecture(config) == "ssd":
        model = model_builder.build(config.model, is_training=False)
        return PixelInputSSDModule(config, model, limit, use_regular_nms=False), tf.train.Checkpoint(model=model)
    module = export_tflite_graph_lib_tf2.CenterNetModule(config, limit, include_keypoints=False)
    return module, tf.train.Checkpoint(model=module.get_model())


def tflite_graph(config: pipeline_pb2.TrainEvalPipelineConfig, checkpoint_dir: Path, out_dir: Path) -> None:
    """The inference graph as a SavedModel that the TFLite converter reads, from the latest
    checkpoint in ``checkpoint_dir`` (the folder ``export`` writes)."""
    module, checkpoint = inference_module(config)
    status = checkpoint.restore(tf.train.latest_checkpoint(str(checkpoint_dir))).expect_partial()
    height, width = input_size(config)
    function = module.inference_fn.get_concrete_function(tf.TensorSpec([1, height, width, 3], tf.float32, name="input"))
    status.assert_existing_objects_matched()
    tf.saved_model.save(module, str(out_dir), signatures=function)


def calibration_data(images: Iterable[bytes], size: tuple[int, int]) -> Callable[[], Iterator[list[tf.Tensor]]]:
    """int8's representative dataset: images decoded and resized to the model's input as
    ``TFLiteDetector`` feeds them."""

    def samples() -> Iterator[list[tf.Tensor]]:
        for encoded in images:
            yield [fixed_shape_input(decode(encoded), size)]

    return samples


@contextmanager
def converter_output_held() -> Iterator[None]:
    """The converter's MLIR passes print, straight to the process's stdout and stderr and not
    through Python, a summary of every op they left alone (ordinary constants) and their
    quantisation settings: held back, and shown only when the conversion fails."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    failed = False
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 1)
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, original in zip((1, 2), saved, strict=True):
                os.dup2(original, fd)
                os.close(original)
            if failed:
                held.seek(0)
                sys.stderr.write(held.read().decode(errors="replace")[-5000:])


def convert(graph_dir: Path, quantize: str, calibration: Callable[[], Iterator[list[tf.Tensor]]] | None) -> bytes:
    """The .tflite bytes: float32 (``none``), float16 weights, or int8 weights and activations
    calibrated on ``calibration`` (float input and output kept, so one app code reads all three)."""
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"export.tflite.quantize is {quantize!r}: one of {', '.join(QUANTIZATIONS)}")
    converter = tf.lite.TFLiteConverter.from_saved_model(str(graph_dir))
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        if calibration is None:
            raise ValueError("int8 quantisation needs calibration images")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = calibration
        # int8 wherever an int8 kernel exists, float elsewhere (SSD's post-processing op).
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
        # The converter's own way to keep chosen ops in float (selective quantisation).
        options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=FLOAT_OPS)
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=calibration, debug_options=options
        )
        return debugger.get_nondebug_quantized_model()
    return converter.convert()


def export_tflite(
    config: pipeline_pb2.TrainEvalPipelineConfig,
    checkpoint_dir: Path,
    out_file: Path,
    quantize: str,
    calibration_images: Iterable[bytes] = (),
) -> None:
    """``out_file``: the checkpoint as a .tflite model. The intermediate graph is temporary."""
    check_supported(config)
    calibration = calibration_data(calibration_images, input_size(config)) if quantize == "int8" else None
    with tempfile.TemporaryDirectory(prefix="odpipe-tflite-") as tmp:
        tflite_graph(config, checkpoint_dir, Path(tmp))
        with converter_output_held():
            model = convert(Path(tmp), quantize, calibration)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_bytes(model)
