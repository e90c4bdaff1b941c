"""The human side of clean_split: a Markdown report and a grid of samples with their boxes,
which is how users check their labels before spending hours training on them."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

from PIL import Image, ImageDraw

from odpipe.annotations import Annotation, Box

# COCO's own size buckets (box area in pixels), so the report and the metrics agree.
SIZE_BUCKETS = (("small", 32**2), ("medium", 96**2), ("large", float("inf")))
Colour = tuple[int, int, int]
BACKGROUND: Colour = (32, 32, 32)  # behind the tiles of every grid and gallery
TEXT: Colour = (255, 255, 255)
LINE = 16  # pixels: one line of Pillow's default font, with room around it
GAP = 4  # pixels between tiles and around text
PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240))


def size_bucket(area: float) -> str:
    return next(name for name, upper in SIZE_BUCKETS if area < upper)


def box_sizes(annotations: Sequence[Annotation]) -> dict[str, int]:
    counts = {name: 0 for name, _ in SIZE_BUCKETS}
    for annotation in annotations:
        for box in annotation.boxes:
            counts[size_bucket((box.xmax - box.xmin) * (box.ymax - box.ymin))] += 1
    return counts


def markdown(summary: Mapping, issues: Mapping[str, Sequence[Mapping]], grid_name: str, max_rows: int = 50) -> str:
    """The report: totals, reasons, per split and class counts, box sizes, decisions."""
    changes = {**summary["fixed_by_reason"]}
    changes |= {f"unused annotation: {k}": v for k, v in summary["unused_annotations_by_reason"].items()}
    lines = [
        "# Dataset cleaning and split report",
        "",
        f"{summary['images_in']} images in: {summary['kept']} kept, {summary['dropped']} dropped.",
        "",
        *count_table(("reason", "images dropped"), summary["dropped_by_reason"], "No image was dropped."),
        *count_table(("change", "count"), changes, "Nothing was changed."),
        "| split | images | boxes | " + " | ".join(summary["classes"]) + " |",
        "|---|---|---|" + "---|" * len(summary["classes"]),
    ]
    for name, split in summary["splits"].items():
        per_class = " | ".join(str(split["boxes_per_class"].get(c, 0)) for c in summary["classes"])
        lines.append(f"| {name} | {split['images']} | {split['boxes']} | {per_class} |")
    lines += ["", *_coverage(summary)]
    sizes = summary["box_sizes"]
    lines += ["", "Box sizes (COCO buckets): " + ", ".join(f"{k} {v}" for k, v in sizes.items()), ""]
    lines += [f"![samples with their boxes]({grid_name})", ""]
    return "\n".join(lines + decisions(issues, max_rows))


def decisions(issues: Mapping[str, Sequence[Mapping]], max_rows: int) -> list[str]:
    """The report's last part: each decision taken on a file, by kind, the first ``max_rows`` of each."""
    lines = ["## Decisions", ""]
    for kind, entries in issues.items():
        lines.append(f"### {kind} ({len(entries)})")
        lines += [f"- `{e['file']}`: **{e['reason']}**, {e['detail']}" for e in entries[:max_rows]]
        if len(entries) > max_rows:
            lines.append(f"- ... {len(entries) - max_rows} more in issues.json")
        lines.append("")
    return lines


def mask_markdown(summary: Mapping, issues: Mapping[str, Sequence[Mapping]], grid_name: str, max_rows: int = 50) -> str:
    """The segment task's report: totals, reasons, per split the images holding each class and
    the share of its pixels, the classes a split lacks, decisions."""
    names = summary["classes"]
    lines = [
        "# Dataset cleaning and split report (segmentation)",
        "",
        f"{summary['images_in']} images in ({summary['format']} masks): {summary['kept']} kept, "
        f"{summary['dropped']} dropped.",
        "",
        *count_table(("reason", "dropped"), summary["dropped_by_reason"], "No image was dropped."),
        *count_table(("note", "images"), summary["notes_by_reason"], "No mask needed a note."),
        "Images holding each class (share of the split's labelled pixels):",
        "",
        "| split | images | " + " | ".join(names) + " | void pixels |",
        "|---|---|" + "---|" * (len(names) + 1),
    ]
    for name, split in summary["splits"].items():
        total = sum(split["pixels"].values()) or 1
        cells = " | ".join(f"{split['images_with'][c]} ({100 * split['pixels'][c] / total:.1f}%)" for c in names)
        lines.append(f"| {name} | {split['images']} | {cells} | {split['void_pixels']} |")
    missing = [
        f"- {split} has no pixel of: {', '.join(classes)}" for split, classes in summary["classes_missing"].items()
    ]
    lines += ["", *(missing or ["Every class is in every split."]), "", f"![samples with their masks]({grid_name})", ""]
    return "\n".join(lines + decisions(issues, max_rows))


def _coverage(summary: Mapping) -> list[str]:
    """Which classes each split lacks (splits are not stratified, so that they stay stable:
    a class missing from test is not evaluated), and what the group pattern matched."""
    lines = [f"- {split} has no box of: {', '.join(classes)}" for split, classes in summary["classes_missing"].items()]
    lines = lines or ["Every class has boxes in every split."]
    if summary["group_pattern_matches"]:
        lines += ["", f"clean_split.group_pattern matched {summary['group_pattern_matches']} images."]
    return lines


def draw_boxes(
    image: Image.Image,
    boxes: Sequence[Box],
    classes: Sequence[str],
    scale: float = 1.0,
    captions: Sequence[str] | None = None,
) -> None:
    """Draw labelled boxes in place, one colour per class (the same in every picture); each
    box is captioned with its label unless ``captions`` says otherwise (e.g. with a score)."""
    draw = ImageDraw.Draw(image)
    for i, box in enumerate(boxes):
        colour = PALETTE[classes.index(box.label) % len(PALETTE)] if box.label in classes else (255, 255, 255)
        xy = (box.xmin * scale, box.ymin * scale, box.xmax * scale, box.ymax * scale)
        draw.rectangle(xy, outline=colour, width=2)
        draw.text((xy[0] + 2, xy[1] + 1), captions[i] if captions else box.label, fill=colour)


def count_table(header: tuple[str, str], counts: Mapping[str, int], empty: str) -> list[str]:
    """A two-column Markdown table of counts, or one sentence when there is nothing to count."""
    if not counts:
        return [empty, ""]
    return [f"| {header[0]} | {header[1]} |", "|---|---|", *(f"| {k} | {v} |" for k, v in counts.items()), ""]


def open_rgb(encoded: bytes) -> Image.Image:
    with Image.open(io.BytesIO(encoded)) as opened:
        return opened.convert("RGB")


def _tile(
    image: Image.Image, boxes: Sequence[Box], classes: Sequence[str], tile: int, captions: Sequence[str] | None = None
) -> Image.Image:
    """``image`` scaled to fit a ``tile``-pixel square, with its boxes drawn at that scale."""
    scale = tile / max(image.size)
    scaled = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    draw_boxes(scaled, boxes, classes, scale, captions)
    return scaled


def sample_grid(
    annotations: Sequence[Annotation],
    images: Mapping[str, bytes],
    classes: Sequence[str],
    tile: int = 256,
    columns: int = 4,
    rows: int | None = None,
) -> Image.Image:
    """Up to ``columns`` × ``rows`` (default square) images with their boxes and labels drawn,
    each scaled into a tile."""
    chosen = list(annotations)[: columns * (rows or columns)]
    rows = max(1, -(-len(chosen) // columns))
    grid = Image.new("RGB", (columns * tile, rows * tile), BACKGROUND)
    for i, annotation in enumerate(chosen):
        image = _tile(open_rgb(images[annotation.filename]), annotation.boxes, classes, tile)
        grid.paste(image, ((i % columns) * tile, (i // columns) * tile))
    return grid


def side_by_side(
    rows: Sequence[tuple[bytes, Sequence[Box], Sequence[Box], Sequence[str]]],
    classes: Sequence[str],
    tile: int = 320,
) -> Image.Image:
    """One row per image: ground truth on the left, predictions (captioned, e.g. with their
    scores) on the right, so a wrong or missed box is seen at a glance."""
    grid = Image.new("RGB", (2 * tile, max(1, len(rows)) * tile), BACKGROUND)
    for row, (encoded, truth, predicted, captions) in enumerate(rows):
        image = open_rgb(encoded)
        grid.paste(_tile(image, truth, classes, tile), (0, row * tile))
        grid.paste(_tile(image, predicted, classes, tile, captions), (tile, row * tile))
    return grid
