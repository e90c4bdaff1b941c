from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from odpipe.core.files import write_csv
from odpipe.data.annotations import CSV_COLUMNS
from odpipe.detect.anchors import (
    BoxShapes,
    anchor_space,
    fit_anchors,
    kmeans_shapes,
    read_box_shapes,
    set_anchors,
    summary_line,
)
from odpipe.detect.pipeline_config import apply_settings, build_model, load_pipeline, write_pipeline
from tests.conftest import ROOT, pipeline_settings

BASE = ROOT / "conf" / "model" / "base" / "ssd_mobilenet_v2_small.config"
ZOO_LIKE = ROOT / "tests" / "data" / "pipeline_configs"


def _train_csv(path: Path, boxes: list[tuple[float, float]], image: tuple[int, int] = (200, 100)) -> Path:
    """A train CSV in convert's layout: one box of normalised size (w, h) per image of
    ``image`` (width, height) pixels, plus a negative image (a row without a class)."""
    width, height = image
    rows = [{"filename": "negative.jpg", "width": width, "height": height}]
    for i, (w, h) in enumerate(boxes):
        x, y = 3 + i % 7, 5 + i % 3
        rows.append(
            {
                "filename": f"{i}.jpg",
                "width": width,
                "height": height,
                "xmin": x,
                "ymin": y,
                "xmax": x + w * width,
                "ymax": y + h * height,
                "class": "thing",
                "class_id": 1,
            }
        )
    write_csv(rows, CSV_COLUMNS, path)
    return path


def _shapes(boxes: list[tuple[float, float]]) -> BoxShapes:
    normalised = np.array(boxes, dtype=float).reshape(-1, 2)
    return BoxShapes("train.csv", normalised, np.full_like(normalised, 100.0))


def _ssd(num_classes: int = 3):
    """The built-in SSD base as the stage edits it (a square 96-pixel input)."""
    return apply_settings(load_pipeline(BASE), pipeline_settings(num_classes=num_classes))


def test_box_shapes_are_normalised_and_negatives_skipped(tmp_path: Path) -> None:
    csv = _train_csv(tmp_path / "train.csv", [(0.25, 0.5), (0.1, 0.1)])
    shapes = read_box_shapes(csv)
    assert len(shapes) == 2  # the negative image has no box
    np.testing.assert_allclose(shapes.normalised, [[0.25, 0.5], [0.1, 0.1]])
    np.testing.assert_allclose(shapes.image_sizes, [[200, 100], [200, 100]])


def test_identical_square_boxes_give_ratio_one_and_their_scale() -> None:
    config, summary = fit_anchors(_ssd(), _shapes([(0.2, 0.2)] * 40), clusters=5)
    generator = config.model.ssd.anchor_generator.ssd_anchor_generator
    assert list(generator.aspect_ratios) == [1.0]
    assert generator.min_scale == pytest.approx(0.2) and generator.max_scale == pytest.approx(0.2)
    assert summary["clusters"] == [[0.2, 0.2]]  # identical boxes: one cluster, not five copies
    assert summary["boxes"] == 40
    assert summary["mean_iou_fitted"] == pytest.approx(1.0)
    assert summary["mean_iou_fitted"] > summary["mean_iou_base"]
    assert summary["base"]["aspect_ratios"] == [1.0, 2.0, 0.5]  # the base's, for the record


def test_wide_and_tall_boxes_give_ratios_two_and_a_half() -> None:
    boxes = [(0.2, 0.1), (0.22, 0.11), (0.1, 0.2), (0.11, 0.22)] * 10 + [(0.05, 0.1), (0.3, 0.15)] * 5  # small objects
    config, summary = fit_anchors(_ssd(), _shapes(boxes), clusters=3)
    ratios = list(config.model.ssd.anchor_generator.ssd_anchor_generator.aspect_ratios)
    assert {0.5, 1.0, 2.0} <= set(ratios) and ratios == sorted(ratios)
    scales = np.sqrt(np.prod(boxes, axis=1))
    generator = config.model.ssd.anchor_generator.ssd_anchor_generator
    assert scales.min() - 1e-3 <= generator.min_scale < generator.max_scale <= scales.max() + 1e-3  # 3 decimals
    assert summary["mean_iou_fitted"] > summary["mean_iou_base"]


def test_ratios_are_those_of_the_model_input_not_of_the_image(tmp_path: Path) -> None:
    """A box half as wide as its 200x100 image and the whole height is square in pixels, but
    the square fixed-shape resizer stretches it to 1:2."""
    shapes = read_box_shapes(_train_csv(tmp_path / "train.csv", [(0.25, 0.5)] * 8))
    np.testing.assert_allclose(anchor_space(shapes, _ssd()), [[0.25, 0.5]] * 8)
    fpn = apply_settings(load_pipeline(ZOO_LIKE / "efficientdet_d0.config"), pipeline_settings(image_size=128))
    np.testing.assert_allclose(anchor_space(shapes, fpn), [[0.25, 0.25]] * 8)  # aspect kept, padded square


def test_kmeans_is_deterministic_and_copes_with_few_boxes() -> None:
    rng = np.random.default_rng(1)
    boxes = rng.uniform(0.05, 0.6, size=(300, 2))
    first, again = kmeans_shapes(boxes, 5, seed=7), kmeans_shapes(boxes.copy(), 5, seed=7)
    np.testing.assert_array_equal(first, again)
    assert first.shape == (5, 2)
    areas = first[:, 0] * first[:, 1]
    assert list(areas) == sorted(areas)
    few = kmeans_shapes(np.array([[0.1, 0.3], [0.3, 0.1]]), 5)
    np.testing.assert_allclose(few, [[0.1, 0.3], [0.3, 0.1]])  # two boxes, two clusters
    config, summary = fit_anchors(_ssd(), _shapes([(0.3, 0.1)]), clusters=5)
    assert summary["clusters"] == [[0.3, 0.1]]
    ratios = config.model.ssd.anchor_generator.ssd_anchor_generator.aspect_ratios
    assert list(ratios) == pytest.approx([1.0, 2.83])  # 3:1 snapped to 2 ** 1.5


def test_the_fitted_ssd_builds_and_keeps_the_fitted_anchors(tmp_path: Path) -> None:
    base = _ssd(num_classes=3)
    boxes = [(0.3, 0.15), (0.15, 0.3), (0.2, 0.2), (0.5, 0.5), (0.1, 0.1)] * 6
    config, summary = fit_anchors(base, _shapes(boxes), clusters=5)
    assert base.model.ssd.anchor_generator == load_pipeline(BASE).model.ssd.anchor_generator  # a copy was edited
    write_pipeline(config, tmp_path / "pipeline.config")
    generator = load_pipeline(tmp_path / "pipeline.config").model.ssd.anchor_generator.ssd_anchor_generator
    assert list(generator.aspect_ratios) == pytest.approx(summary["fitted"]["aspect_ratios"])
    assert (generator.min_scale, generator.max_scale) == (
        pytest.approx(summary["fitted"]["min_scale"]),
        pytest.approx(summary["fitted"]["max_scale"]),
    )
    model = build_model(config)
    built = model._anchor_generator
    ratios = len(summary["fitted"]["aspect_ratios"])
    assert built.num_anchors_per_location() == [3] + [ratios + 1] * 5  # lowest layer's 3 fixed boxes, + interpolated
    assert built._box_specs[1][0][0] == pytest.approx(
        summary["fitted"]["min_scale"] + 0.2 * (summary["fitted"]["max_scale"] - summary["fitted"]["min_scale"])
    )


def test_fpn_ssds_get_ratios_only() -> None:
    base = apply_settings(
        load_pipeline(ZOO_LIKE / "ssd_mobilenet_v2_fpnlite.config"), pipeline_settings(image_size=128)
    )
    config, summary = fit_anchors(base, _shapes([(0.2, 0.4)] * 10 + [(0.1, 0.1)] * 10), clusters=2)
    generator = config.model.ssd.anchor_generator.multiscale_anchor_generator
    assert list(generator.aspect_ratios) == [0.5, 1.0]
    assert generator.anchor_scale == base.model.ssd.anchor_generator.multiscale_anchor_generator.anchor_scale
    assert set(summary["fitted"]) == {"aspect_ratios"}
    build_model(config)


def test_centernet_has_nothing_to_fit_and_faster_rcnn_is_refused(tmp_path: Path) -> None:
    empty = read_box_shapes(_train_csv(tmp_path / "train.csv", []))
    centernet = load_pipeline(ZOO_LIKE / "centernet_resnet50_fpn_kpts.config")
    config, summary = fit_anchors(centernet, empty, clusters=5)
    assert config == centernet
    assert summary["generator"] is None and "anchor-free" in summary["note"]
    assert "anchor-free" in summary_line(summary)
    with pytest.raises(ValueError, match="ssd_anchor_generator and multiscale_anchor_generator.*grid_anchor_generator"):
        fit_anchors(load_pipeline(ZOO_LIKE / "faster_rcnn_resnet50.config"), _shapes([(0.2, 0.2)]), clusters=5)


def test_a_train_split_without_boxes_is_named(tmp_path: Path) -> None:
    csv = _train_csv(tmp_path / "train.csv", [])  # a negative image only
    with pytest.raises(ValueError, match=f"{csv}: no boxes"):
        fit_anchors(_ssd(), read_box_shapes(csv), clusters=5)
    header_only = tmp_path / "header.csv"
    write_csv([], CSV_COLUMNS, header_only)
    with pytest.raises(ValueError, match=f"{header_only}: no boxes"):
        set_anchors(_ssd(), read_box_shapes(header_only), "fit", 5)


def test_base_keeps_the_anchors_and_reports_their_fit() -> None:
    base = _ssd()
    config, summary = set_anchors(base, _shapes([(0.2, 0.2)] * 3), "base", 5)
    assert config == base
    assert summary["anchors"] == "base" and 0 < summary["mean_iou_base"] < 1 and "fitted" not in summary
    assert "base" in summary_line(summary)
    with pytest.raises(ValueError, match="base, fit"):
        set_anchors(base, _shapes([(0.2, 0.2)]), "auto", 5)
