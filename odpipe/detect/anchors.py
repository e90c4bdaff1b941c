"""Anchors fitted to the train split's boxes (``pipeline_config.anchors: fit``).

An anchor-based detector only learns a box well from anchors it overlaps: SSD's matcher takes
anchors at IoU 0.5 or more, and a box no anchor fits is left to ``force_match_for_each_row``'s
single, poorly overlapping anchor. The base configs' anchors are tuned for COCO; a dataset of
small or elongated objects (licence plates, people from above) is better served by anchors of
its own shapes. Here the train split's box shapes are clustered (k-means with 1 - IoU, the
YOLO recipe) and turned into the OD API's anchor-generator settings.

Everything works on shapes (w, h) "in anchor space": relative to the shorter side of the model
input, where an anchor of scale ``s`` and aspect ratio ``r`` is ``s * sqrt(r)`` wide and
``s / sqrt(r)`` high (the OD API's SSD generators scale their base anchor by the input's shorter
side, so ``r`` is a width/height ratio in input pixels). A fixed-shape resizer stretches every
image to its own shape, so a box's normalised (w, h) maps to the same place for every image; an
aspect-preserving resizer keeps the box's pixel shape, taken relative to the image's longer side
(the padded square EfficientDet's ``pad_to_max_dimension`` makes). IoU of origin-centred shapes
is unchanged by stretching either axis, so clusters and IoUs do not depend on this choice; the
ratios and scales do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from object_detection.protos import pipeline_pb2

from odpipe.core.files import iter_csv
from odpipe.detect.pipeline_config import architecture, input_size

MODES = ("base", "fit")
FITTED_GENERATORS = ("ssd_anchor_generator", "multiscale_anchor_generator")
# min_scale and max_scale come from these percentiles of the boxes' scales, not their extremes:
# one tiny or full-image outlier must not stretch every layer's anchors. Boxes beyond them still
# match the nearest layer (a scale within a factor 1.4 of an anchor's keeps IoU >= 0.5).
SCALE_PERCENTILES = (5.0, 95.0)
# Anchors smaller than about a stride of SSD's finest feature map (1/20 of the input at 320)
# leave most boxes of that size between grid points; a scale above 1 is larger than the image.
SCALE_BOUNDS = (0.05, 0.95)
# Ratios are snapped to quarter octaves (2 ** (k / 4)): clusters of near-equal shape give one
# ratio, a ratio and its inverse stay symmetric (2 and 0.5), and 1:8 to 8:1 bounds the extremes.
RATIO_STEPS_PER_OCTAVE = 4
RATIO_BOUNDS = (1 / 8, 8.0)
KMEANS_ITERATIONS = 100


@dataclass(frozen=True)
class BoxShapes:
    """The train split's boxes as shapes: ``normalised`` (n, 2) width and height over the image's,
    and ``image_sizes`` (n, 2) the width and height of each box's image; ``source`` names the
    file they came from, for errors."""

    source: str
    normalised: np.ndarray
    image_sizes: np.ndarray

    def __len__(self) -> int:
        return len(self.normalised)


def read_box_shapes(path: Path | str) -> BoxShapes:
    """Box shapes of a split's CSV (``convert``'s layout, one row per box). A row with no class is
    a negative image and has no box; degenerate boxes (zero width or height) are skipped too."""
    normalised, sizes = [], []
    for row in iter_csv(path):
        if not row.get("class"):
            continue
        width, height = float(row["width"]), float(row["height"])
        w, h = float(row["xmax"]) - float(row["xmin"]), float(row["ymax"]) - float(row["ymin"])
        if w > 0 and h > 0 and width > 0 and height > 0:
            normalised.append((w / width, h / height))
            sizes.append((width, height))
    return BoxShapes(
        source=str(path),
        normalised=np.asarray(normalised, dtype=np.float64).reshape(-1, 2),
        image_sizes=np.asarray(sizes, dtype=np.float64).reshape(-1, 2),
    )


def anchor_space(shapes: BoxShapes, config: pipeline_pb2.TrainEvalPipelineConfig) -> np.ndarray:
    """(n, 2) box shapes as the model's anchor generator sees them (see the module docstring)."""
    resizer = getattr(config.model, architecture(config)).image_resizer
    if resizer.HasField("fixed_shape_resizer"):
        height, width = input_size(config)
        return shapes.normalised * np.array([width, height]) / min(width, height)
    pixels = shapes.normalised * shapes.image_sizes
    return pixels / shapes.image_sizes.max(axis=1, keepdims=True)


def iou_wh(boxes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """(n, k) IoU of (n, 2) and (k, 2) shapes placed with the same centre: how well an anchor's
    shape fits a box, leaving aside where the grid puts it."""
    inter = np.minimum(boxes[:, None, 0], anchors[None, :, 0]) * np.minimum(boxes[:, None, 1], anchors[None, :, 1])
    union = (boxes[:, 0] * boxes[:, 1])[:, None] + (anchors[:, 0] * anchors[:, 1])[None, :] - inter
    return inter / union


def mean_best_iou(boxes: np.ndarray, anchors: np.ndarray) -> float:
    """Mean over boxes of the IoU with their best-fitting anchor shape: YOLO's "avg IoU" figure
    for comparing anchor sets on a dataset."""
    return float(iou_wh(boxes, anchors).max(axis=1).mean())


def kmeans_shapes(boxes: np.ndarray, k: int, seed: int = 0, iterations: int = KMEANS_ITERATIONS) -> np.ndarray:
    """Up to ``k`` cluster shapes of (n, 2) ``boxes`` under the distance 1 - IoU, sorted by area.

    1 - IoU rather than Euclidean distance so that small and large boxes weigh alike (YOLO v2's
    anchor clustering). Seeded k-means++ start, median updates (robust to outliers), an empty
    cluster keeps its centre. Fewer distinct shapes than ``k`` give that many clusters, so
    identical boxes give one.
    """
    if len(boxes) == 0:
        raise ValueError("no boxes to cluster")
    if k < 1:
        raise ValueError(f"need at least one cluster, got {k}")
    k = min(k, len(np.unique(boxes, axis=0)))
    rng = np.random.default_rng(seed)
    centres = boxes[[rng.integers(len(boxes))]]
    while len(centres) < k:  # k-means++: far (low-IoU) shapes are likelier next centres
        distance = 1.0 - iou_wh(boxes, centres).max(axis=1)
        weights = distance**2
        if weights.sum() <= 0:  # shapes distinct only in the last bits: nothing farther to pick
            break
        centres = np.vstack([centres, boxes[rng.choice(len(boxes), p=weights / weights.sum())]])
    assignment = None
    k = len(centres)
    for _ in range(iterations):
        nearest = iou_wh(boxes, centres).argmax(axis=1)
        if assignment is not None and np.array_equal(nearest, assignment):
            break
        assignment = nearest
        for cluster in range(k):
            members = boxes[assignment == cluster]
            if len(members):
                centres[cluster] = np.median(members, axis=0)
    order = np.lexsort((centres[:, 0], centres[:, 0] * centres[:, 1]))
    return centres[order]


def box_scales(boxes: np.ndarray) -> np.ndarray:
    """sqrt(w * h): the anchor scale of each shape, whatever its aspect ratio."""
    return np.sqrt(boxes[:, 0] * boxes[:, 1])


def fit_scale_range(boxes: np.ndarray) -> tuple[float, float]:
    """SSD's min_scale and max_scale: the ``SCALE_PERCENTILES`` of the boxes' scales, clamped to
    ``SCALE_BOUNDS``, rounded to 3 decimals."""
    low, high = np.percentile(box_scales(boxes), SCALE_PERCENTILES)
    low, high = (float(np.clip(v, *SCALE_BOUNDS)) for v in (low, high))
    return round(low, 3), round(max(low, high), 3)


def fit_aspect_ratios(clusters: np.ndarray) -> list[float]:
    """The clusters' width/height ratios snapped to quarter octaves, distinct, with 1.0, sorted."""
    ratios = np.clip(clusters[:, 0] / clusters[:, 1], *RATIO_BOUNDS)
    octaves = np.round(np.log2(ratios) * RATIO_STEPS_PER_OCTAVE) / RATIO_STEPS_PER_OCTAVE
    return sorted({round(float(2.0**o), 2) for o in octaves} | {1.0})


def _generator(config: pipeline_pb2.TrainEvalPipelineConfig):
    """The model's anchor generator message and its kind; (None, None) for an anchor-free model."""
    arch = architecture(config)
    if arch == "center_net":
        return None, None
    model = getattr(config.model, arch)
    message = model.anchor_generator if arch == "ssd" else model.first_stage_anchor_generator
    kind = message.WhichOneof("anchor_generator_oneof")
    if kind is None:
        raise ValueError(f"the base pipeline.config's {arch} model has no anchor generator")
    return getattr(message, kind), kind


def _ssd_anchor_shapes(generator) -> np.ndarray:
    """Every (w, h) an ``ssd_anchor_generator`` places, as the OD API's create_ssd_anchors does:
    linear scales per layer (or explicit ``scales``), three fixed boxes in the lowest layer, an
    extra box between each layer's scale and the next's."""
    layers = generator.num_layers
    scales = list(generator.scales) or [
        generator.min_scale + (generator.max_scale - generator.min_scale) * i / max(layers - 1, 1)
        for i in range(layers)
    ]
    scales.append(1.0)
    specs = []
    for layer in range(layers):
        if layer == 0 and generator.reduce_boxes_in_lowest_layer:
            specs += [(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)]
            continue
        specs += [(scales[layer], ratio) for ratio in generator.aspect_ratios]
        if generator.interpolated_scale_aspect_ratio > 0:
            specs.append((np.sqrt(scales[layer] * scales[layer + 1]), generator.interpolated_scale_aspect_ratio))
    spec = np.array(specs)
    root = np.sqrt(spec[:, 1])
    return np.stack(
        [spec[:, 0] * root * generator.base_anchor_width, spec[:, 0] / root * generator.base_anchor_height], 1
    )


def _multiscale_anchor_shapes(generator, input_hw: tuple[int, int]) -> np.ndarray:
    """Every (w, h) a ``multiscale_anchor_generator`` places: ``anchor_scale`` strides per level,
    ``scales_per_octave`` steps between levels, in input pixels over the input's shorter side."""
    shapes = []
    for level in range(generator.min_level, generator.max_level + 1):
        for step in range(generator.scales_per_octave):
            size = generator.anchor_scale * 2.0**level * 2.0 ** (step / generator.scales_per_octave)
            shapes += [(size * np.sqrt(r), size / np.sqrt(r)) for r in generator.aspect_ratios]
    return np.array(shapes) / min(input_hw)


def anchor_shapes(config: pipeline_pb2.TrainEvalPipelineConfig) -> np.ndarray | None:
    """(m, 2) anchor shapes of the model in anchor space; None for a generator not modelled here."""
    generator, kind = _generator(config)
    if kind == "ssd_anchor_generator":
        return _ssd_anchor_shapes(generator)
    if kind == "multiscale_anchor_generator":
        return _multiscale_anchor_shapes(generator, input_size(config))
    return None


def _settings(generator, kind: str) -> dict:
    if kind == "ssd_anchor_generator":
        settings = {"min_scale": round(generator.min_scale, 4), "max_scale": round(generator.max_scale, 4)}
        if generator.scales:  # explicit per-layer scales override min_scale and max_scale
            settings["scales"] = [round(s, 4) for s in generator.scales]
        return settings | {"aspect_ratios": [round(r, 4) for r in generator.aspect_ratios]}
    return {"aspect_ratios": [round(r, 4) for r in getattr(generator, "aspect_ratios", [])]}


def describe_anchors(config: pipeline_pb2.TrainEvalPipelineConfig, shapes: BoxShapes) -> dict:
    """What ``anchors: base`` leaves in place, and how well it fits the boxes (when it can tell)."""
    generator, kind = _generator(config)
    summary: dict = {"anchors": "base", "architecture": architecture(config), "generator": kind, "boxes": len(shapes)}
    if kind is None:
        summary["note"] = "anchor-free model: no anchors"
        return summary
    summary["base"] = _settings(generator, kind)
    anchors = anchor_shapes(config)
    if anchors is not None and len(shapes):
        summary["mean_iou_base"] = round(mean_best_iou(anchor_space(shapes, config), anchors), 4)
    return summary


def fit_anchors(
    config: pipeline_pb2.TrainEvalPipelineConfig, shapes: BoxShapes, clusters: int, seed: int = 0
) -> tuple[pipeline_pb2.TrainEvalPipelineConfig, dict]:
    """A copy of ``config`` with anchors fitted to ``shapes``, and a JSON-able summary.

    ``ssd_anchor_generator`` gets min_scale, max_scale (explicit ``scales`` are cleared, or they
    would win) and aspect_ratios; ``multiscale_anchor_generator`` (FPN SSDs, EfficientDet) only
    aspect_ratios, its scales being tied to the pyramid's strides. CenterNet is anchor-free and
    comes back unchanged. Anything else (Faster R-CNN's grid_anchor_generator) is refused.
    """
    fitted = pipeline_pb2.TrainEvalPipelineConfig()
    fitted.CopyFrom(config)
    generator, kind = _generator(fitted)
    summary: dict = {"anchors": "fit", "architecture": architecture(config), "generator": kind, "boxes": len(shapes)}
    if kind is None:
        summary["note"] = "anchor-free model: nothing to fit, config unchanged"
        return fitted, summary
    if kind not in FITTED_GENERATORS:
        raise ValueError(
            f"pipeline_config.anchors=fit supports {' and '.join(FITTED_GENERATORS)} (SSD models; CenterNet has "
            f"no anchors), not {architecture(config)}'s {kind}; set pipeline_config.anchors=base"
        )
    if not len(shapes):
        raise ValueError(f"{shapes.source}: no boxes to fit anchors to (pipeline_config.anchors=fit)")
    boxes = anchor_space(shapes, fitted)
    centres = kmeans_shapes(boxes, clusters, seed=seed)
    summary["base"] = _settings(generator, kind)
    summary["mean_iou_base"] = round(mean_best_iou(boxes, anchor_shapes(fitted)), 4)
    del generator.aspect_ratios[:]
    generator.aspect_ratios.extend(fit_aspect_ratios(centres))
    if kind == "ssd_anchor_generator":
        generator.min_scale, generator.max_scale = fit_scale_range(boxes)
        del generator.scales[:]
    summary["fitted"] = _settings(generator, kind)
    summary["mean_iou_fitted"] = round(mean_best_iou(boxes, anchor_shapes(fitted)), 4)
    summary["clusters"] = [[round(float(w), 4), round(float(h), 4)] for w, h in centres]
    summary["clusters_mean_iou"] = round(mean_best_iou(boxes, centres), 4)
    return fitted, summary


def set_anchors(
    config: pipeline_pb2.TrainEvalPipelineConfig, shapes: BoxShapes, mode: str, clusters: int, seed: int = 0
) -> tuple[pipeline_pb2.TrainEvalPipelineConfig, dict]:
    """``pipeline_config.anchors``: ``base`` keeps the config's anchors (and reports their fit),
    ``fit`` fits them to the boxes."""
    if mode == "fit":
        return fit_anchors(config, shapes, clusters, seed)
    if mode == "base":
        return config, describe_anchors(config, shapes)
    raise ValueError(f"pipeline_config.anchors must be one of {', '.join(MODES)}, not {mode!r}")


def summary_line(summary: dict) -> str:
    """One log line of a summary."""
    text = f"anchors {summary['anchors']} ({summary['generator'] or 'none'}, {summary['boxes']} train boxes)"
    if "note" in summary:
        return f"{text}: {summary['note']}"
    if "fitted" in summary:
        text += ": " + ", ".join(f"{key} {value}" for key, value in summary["fitted"].items())
    if "mean_iou_base" in summary:
        text += f"; mean IoU of a box to its best anchor shape: base {summary['mean_iou_base']:.3f}"
    if "mean_iou_fitted" in summary:
        text += f", fitted {summary['mean_iou_fitted']:.3f}"
    return text
