"""Run an exported model over a split and score it with pycocotools' COCO metrics."""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from odpipe.core.boxes import Box, iou_matrix
from odpipe.detect.detectors import Detector
from odpipe.detect.records import ImageBoxes

# COCOeval.stats, in its own order, under names that DVC and MLflow both accept.
COCO_STATS = (
    "map",
    "map_50",
    "map_75",
    "map_small",
    "map_medium",
    "map_large",
    "ar_1",
    "ar_10",
    "ar_100",
    "ar_small",
    "ar_medium",
    "ar_large",
)


@dataclass(frozen=True)
class Detection:
    """One predicted box in pixel coordinates of the original image."""

    class_id: int
    score: float
    xmin: float
    ymin: float
    xmax: float
    ymax: float


def class_name(categories: Mapping[int, str], class_id: int) -> str:
    """The class's name; an id missing from the label map keeps its number as its name."""
    return categories.get(class_id, str(class_id))


def as_boxes(detections: Sequence[Detection], categories: Mapping[int, str]) -> list[Box]:
    """Detections as labelled boxes, to draw or to write."""
    return [Box(class_name(categories, d.class_id), d.xmin, d.ymin, d.xmax, d.ymax) for d in detections]


def score_captions(boxes: Sequence[Box], detections: Sequence[Detection]) -> list[str]:
    return [f"{b.label} {d.score:.2f}" for b, d in zip(boxes, detections, strict=True)]


def comparison_row(
    record: ImageBoxes,
    encoded: bytes,
    detections: Sequence[Detection],
    categories: Mapping[int, str],
    threshold: float,
) -> tuple[bytes, tuple[Box, ...], list[Box], list[str]]:
    """One row of ``report.side_by_side``: the image, its boxes, and the detections kept at
    ``threshold`` captioned with their scores."""
    kept = [d for d in detections if d.score >= threshold]
    boxes = as_boxes(kept, categories)
    return encoded, record.labelled_boxes(), boxes, score_captions(boxes, kept)


def decode(encoded: tf.Tensor) -> tf.Tensor:
    """An encoded JPEG, PNG, GIF or BMP as a [height, width, 3] uint8 image."""
    return tf.io.decode_image(encoded, channels=3, expand_animations=False)


def decode_error(err: tf.errors.InvalidArgumentError) -> str:
    """Why TensorFlow refused an image, for a person: Pillow accepts a few files TensorFlow's
    decoder does not (a PNG cut short after its pixel data, its checksums gone)."""
    return f"TensorFlow cannot decode the image ({err.message.split('}} ')[-1]})"


def decoded(images: Iterable[bytes]) -> tf.data.Dataset:
    """The images decoded on tf.data's threads, several ahead of the model: decoding overlaps
    inference, and only the prefetched images are in memory, whatever the split's size. A
    generator of bytes (files read as they are needed) keeps the encoded split out of memory
    too."""
    encoded = tf.data.Dataset.from_generator(lambda: iter(images), output_signature=tf.TensorSpec((), tf.string))
    return encoded.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)


def same_size_batches(images: Iterable[tf.Tensor], size: int) -> Iterator[list[tf.Tensor]]:
    """Consecutive images of one shape, at most ``size`` at a time, in order: one call takes one
    shape, and padding images to a common size would change what the model sees."""
    batch: list[tf.Tensor] = []
    for image in images:
        if batch and (len(batch) == size or image.shape != batch[0].shape):
            yield batch
            batch = []
        batch.append(image)
    if batch:
        yield batch


def image_detections(
    outputs: Mapping[str, np.ndarray], index: int, image_shape: tf.TensorShape, min_score: float
) -> list[Detection]:
    """Image ``index`` of a batch's outputs as detections at or above ``min_score``, its
    normalised boxes scaled back to the image's pixels."""
    height, width = int(image_shape[0]), int(image_shape[1])
    count = int(outputs["num_detections"][index])
    boxes = outputs["detection_boxes"][index][:count]
    classes = outputs["detection_classes"][index][:count].astype(int)
    scores = outputs["detection_scores"][index][:count]
    return [
        Detection(
            int(c), float(s), float(b[1] * width), float(b[0] * height), float(b[3] * width), float(b[2] * height)
        )
        for b, c, s in zip(boxes, classes, scores, strict=True)
        if s >= min_score
    ]


def detect_batch(detector: Detector, images: Sequence[tf.Tensor], min_score: float) -> list[list[Detection]]:
    """Detections of each of a batch of decoded images of one shape."""
    outputs = detector(images)
    return [image_detections(outputs, i, image.shape, min_score) for i, image in enumerate(images)]


def detect(detector: Detector, encoded: bytes, min_score: float = 0.0) -> list[Detection]:
    """Detections for one encoded image, boxes scaled back to its pixel size."""
    return detect_batch(detector, [decode(encoded)], min_score)[0]


def detect_all(
    detector: Detector, images: Iterable[bytes], min_score: float
) -> tuple[list[list[Detection]], dict[str, float]]:
    """Detections of every image, in order, and the speed on this machine.

    Images are decoded in parallel ahead of the model (``decoded``) and sent ``images_per_call``
    at a time: one by one for the OD API's export, whose input is fixed to a batch of 1.

    - ``latency_ms_p50/p90/p99``: the model call per image, from the decoded image to its
      detections (a batched call's time shared equally by its images); decoding, which
      runs meanwhile on other threads, is not in it.
    - ``images_per_second``: end-to-end throughput, images over the wall time of the whole
      loop, reading and decoding included, as evaluating a split actually goes.

    The first call initialises the graph, so it is made once more first and not counted.
    """
    detections: list[list[Detection]] = []
    seconds: list[float] = []
    started = None
    for batch in same_size_batches(decoded(images), detector.images_per_call):
        if started is None:
            detector(batch)  # warm-up
            started = time.perf_counter()
        start = time.perf_counter()
        detections += detect_batch(detector, batch, min_score)
        seconds += [(time.perf_counter() - start) / len(batch)] * len(batch)
    if started is None:
        return detections, {}
    wall = time.perf_counter() - started
    ms = np.asarray(seconds) * 1000
    speed = {f"latency_ms_p{q}": float(np.percentile(ms, q)) for q in (50, 90, 99)}
    speed["images_per_second"] = float(len(ms) / wall)
    return detections, speed


def _xywh(xmin: float, ymin: float, xmax: float, ymax: float) -> list[float]:
    return [xmin, ymin, xmax - xmin, ymax - ymin]


def coco_ground_truth(records: Sequence[ImageBoxes], categories: dict[int, str]) -> dict:
    """The split as a COCO dataset; a box ``record.ignored()`` (a crowd, a VOC difficult
    object) is a crowd to pycocotools, which then counts a detection on it as neither a hit nor
    a false alarm, and missing it as no miss."""
    images, annotations = [], []
    for image_id, record in enumerate(records, start=1):
        images.append({"id": image_id, "file_name": record.filename, "width": record.width, "height": record.height})
        for box, label, ignored in zip(record.boxes, record.labels, record.ignored(), strict=True):
            xywh = _xywh(*box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": label,
                    "bbox": xywh,
                    "area": xywh[2] * xywh[3],
                    "iscrowd": ignored,
                }
            )
    return {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": n} for i, n in sorted(categories.items())],
    }


def coco_detections(detections: Sequence[Sequence[Detection]]) -> list[dict]:
    """Detections of image i (0-based) under COCO image id i + 1, as in coco_ground_truth."""
    return [
        {
            "image_id": image_id,
            "category_id": d.class_id,
            "bbox": _xywh(d.xmin, d.ymin, d.xmax, d.ymax),
            "score": d.score,
        }
        for image_id, image_detections in enumerate(detections, start=1)
        for d in image_detections
    ]


def per_class_ap(evaluator: COCOeval, categories: dict[int, str]) -> dict[str, float]:
    """AP@[.5:.95] of each class, from pycocotools' own precision array (area all, 100
    detections), as ``ap/<class>``; -1 for a class without ground truth, as pycocotools does.

    The key holds the real class name, whatever its characters: the report is for people and
    DVC, which take any key; only the keys MLflow sees are cleaned (``runs.metric_key``)."""
    precision = evaluator.eval["precision"]  # [iou, recall, class, area, max_dets]
    result = {}
    for k, category_id in enumerate(evaluator.params.catIds):
        values = precision[:, :, k, 0, -1]
        values = values[values > -1]
        result[f"ap/{categories[category_id]}"] = float(values.mean()) if values.size else -1.0
    return result


def coco_metrics(ground_truth: dict, detections: list[dict]) -> tuple[dict[str, float], str]:
    """pycocotools' box metrics, per-class AP and its printed summary table.

    With no detections at all every metric is 0 (pycocotools refuses an empty result list).
    """
    categories = {c["id"]: c["name"] for c in ground_truth["categories"]}
    if not detections:
        zeros = {name: 0.0 for name in COCO_STATS} | {f"ap/{name}": 0.0 for name in categories.values()}
        return zeros, "no detections"
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        gt = COCO()
        gt.dataset = ground_truth
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(detections), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # pycocotools reports -1 where a metric has no ground truth (e.g. no small objects).
    stats = {name: float(value) for name, value in zip(COCO_STATS, np.asarray(evaluator.stats), strict=True)}
    stats |= per_class_ap(evaluator, categories)
    table = "\n".join(line for line in summary.getvalue().splitlines() if line.startswith(" Average"))
    return stats, table


FORMAT_METRICS = ("map", "map_50", "map_75", "latency_ms_p50", "images_per_second")


def format_scores(model_format: str, metrics: Mapping[str, float], size_bytes: int) -> dict[str, float]:
    """One export format's line of the comparison in evaluate.json (``<format>/map``, ...): what
    a smaller or quantised model costs in mAP and gains in size and latency, measured alike."""
    values = {key: metrics[key] for key in FORMAT_METRICS if key in metrics} | {"size_mb": size_bytes / 1e6}
    return {f"{model_format}/{key}": value for key, value in values.items()}


BACKGROUND = "background"


def best_of(row: np.ndarray, allowed: np.ndarray) -> int | None:
    """The index of the highest value of ``row`` where ``allowed`` (the first of equals)."""
    candidates = np.flatnonzero(allowed)
    return int(candidates[np.argmax(row[candidates])]) if candidates.size else None


def greedy_match(
    record: ImageBoxes, detections: Sequence[Detection], iou_threshold: float, same_class: bool
) -> list[tuple[Detection, int | None]]:
    """Each detection that counts, best score first, with the index of the ground-truth box it
    takes (None for none), as pycocotools matches: the box of highest IoU at or above
    ``iou_threshold`` among those not yet taken, of the detection's own class when
    ``same_class`` (COCO's matching) or of any class (a confusion matrix's, which must see a
    box found as the wrong class). Boxes that count come first: only a detection that finds
    none of them may take an ignored box (``record.ignored()``), which any number may take;
    such detections are left out, neither hits nor false alarms."""
    ordered = sorted(detections, key=lambda d: -d.score)
    if not ordered:
        return []
    boxes = np.asarray(record.boxes, dtype=float).reshape(-1, 4)
    ignored = np.asarray(record.ignored(), dtype=bool)
    found = np.asarray([(d.xmin, d.ymin, d.xmax, d.ymax) for d in ordered], dtype=float)
    iou = iou_matrix(found, boxes, ignored)
    allowed = iou >= iou_threshold
    if same_class:
        classes = np.asarray([d.class_id for d in ordered])
        allowed &= classes[:, None] == np.asarray(record.labels, dtype=int)[None, :]
    taken = np.zeros(len(boxes), dtype=bool)
    result = []
    for d, row, ok in zip(ordered, iou, allowed, strict=True):
        best = best_of(row, ok & ~ignored & ~taken)
        if best is not None:
            taken[best] = True
            result.append((d, best))
        elif not (ok & ignored).any():
            result.append((d, None))
    return result


def confusion_pairs(
    records: Sequence[ImageBoxes],
    detections: Sequence[Sequence[Detection]],
    categories: Mapping[int, str],
    iou_threshold: float,
    score_threshold: float,
) -> list[dict[str, str]]:
    """One ``{actual, predicted}`` pair per ground-truth box and per kept detection.

    Detections at or above ``score_threshold`` are matched greedily, best score first, to
    the unmatched ground-truth box of highest IoU (any class) at or above ``iou_threshold``.
    A missed box pairs with ``background`` as predicted, a false alarm with ``background`` as
    actual: the confusion matrix's background row and column (DVC's confusion template).
    Ignored boxes (crowds, difficult objects) are in no pair, nor the detections they take,
    as in the COCO metrics.
    """
    pairs = []
    for record, found in zip(records, detections, strict=True):
        kept = [d for d in found if d.score >= score_threshold]
        ignored = record.ignored()
        matched = greedy_match(record, kept, iou_threshold, same_class=False)
        for d, box in matched:
            actual = BACKGROUND if box is None else categories[record.labels[box]]
            pairs.append({"actual": actual, "predicted": class_name(categories, d.class_id)})
        found_boxes = {box for _, box in matched}
        missed = (i for i in range(len(record.boxes)) if i not in found_boxes and not ignored[i])
        pairs += [{"actual": categories[record.labels[i]], "predicted": BACKGROUND} for i in missed]
    return pairs
