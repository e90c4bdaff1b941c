"""TFLite export: what is refused before any work, and the pieces the export stage composes.
The conversions themselves (SSD float and int8, scored by evaluate) run in test_finetune, on the
SSD trained there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from odpipe.detect.detectors import load_detector
from odpipe.detect.evaluate import format_scores
from odpipe.detect.export import check_formats, spread
from odpipe.detect.pipeline_config import load_pipeline
from odpipe.detect.tflite import check_supported, convert, converter_output_held
from tests.conftest import ROOT

BASE = ROOT / "conf" / "model" / "base"


def test_ssd_and_centernet_with_a_fixed_shape_are_supported() -> None:
    for name in ("ssd_mobilenet_v2_small", "centernet_mobilenet_v2_fpn_small"):
        check_supported(load_pipeline(BASE / f"{name}.config"))


def test_other_meta_architectures_are_refused_by_name() -> None:
    config = load_pipeline(BASE / "ssd_mobilenet_v2_small.config")
    config.model.faster_rcnn.num_classes = 3  # the model oneof: now a Faster R-CNN
    with pytest.raises(ValueError, match=r"SSD and CenterNet models only; this model is faster_rcnn"):
        check_supported(config)


def test_a_resizer_without_one_fixed_shape_is_refused() -> None:
    config = load_pipeline(BASE / "ssd_mobilenet_v2_small.config")
    config.model.ssd.image_resizer.keep_aspect_ratio_resizer.max_dimension = 320
    with pytest.raises(ValueError, match=r"needs a fixed_shape_resizer .* has a keep_aspect_ratio_resizer"):
        check_supported(config)


def test_formats_are_checked_and_the_saved_model_is_kept() -> None:
    check_formats(["saved_model", "tflite"])
    with pytest.raises(ValueError, match=r"unknown onnx; the formats are saved_model, tflite"):
        check_formats(["saved_model", "onnx"])
    with pytest.raises(ValueError, match=r"must keep saved_model"):
        check_formats(["tflite"])


def test_an_unknown_quantisation_is_refused_before_converting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"export.tflite.quantize is 'int4': one of none, float16, int8"):
        convert(tmp_path, "int4", None)


def test_calibration_images_spread_over_the_whole_split() -> None:
    names = [f"{folder}/{i}.jpg" for folder in "abcd" for i in range(25)]
    sample = spread(names, 8)
    assert len(sample) == 8 and {n[0] for n in sample} == set("abcd")
    assert spread(names[:3], 8) == names[:3] and spread(names, 0) == [] and spread([], 5) == []


def test_a_missing_format_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"tflite/model.tflite: the export has no tflite model"):
        load_detector(tmp_path, "tflite")
    with pytest.raises(ValueError, match=r"unknown model format 'onnx'"):
        load_detector(tmp_path, "onnx")


def test_each_format_reports_the_same_keys() -> None:
    metrics = {"map": 0.5, "map_50": 0.9, "map_75": 0.4, "map_small": 0.1, "latency_ms_p50": 7.0}
    assert format_scores("tflite", metrics, 2_500_000) == {
        "tflite/map": 0.5,
        "tflite/map_50": 0.9,
        "tflite/map_75": 0.4,
        "tflite/latency_ms_p50": 7.0,
        "tflite/size_mb": 2.5,
    }


def test_the_converters_native_output_is_held_back_unless_it_fails(capfd) -> None:
    with converter_output_held():
        os.write(1, b"Summary on the non-converted ops\n")
        os.write(2, b"fully_quantize: 0\n")
    assert capfd.readouterr() == ("", "")
    with pytest.raises(RuntimeError, match="conversion failed"), converter_output_held():
        os.write(2, b"error: 'tf.Foo' op is neither a custom op nor a flex op\n")
        raise RuntimeError("conversion failed")
    assert "neither a custom op nor a flex op" in capfd.readouterr().err
