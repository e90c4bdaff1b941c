"""The human side of detection's clean_split: a Markdown report (totals, reasons, per split and
class counts, box sizes, decisions), read beside the sample grid before hours of training."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from odpipe.core.boxes import SIZE_BUCKETS, size_bucket
from odpipe.data.annotations import Annotation
from odpipe.data.cleaning import count_table, decisions, files_table


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
        f"Read as {summary['format']}; classes: {', '.join(summary['classes'])}.",
        "",
        *files_table(summary["files"]),
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


def _coverage(summary: Mapping) -> list[str]:
    """Which classes each split lacks (splits are not stratified, so that they stay stable:
    a class missing from test is not evaluated), and what the group pattern matched."""
    lines = [f"- {split} has no box of: {', '.join(classes)}" for split, classes in summary["classes_missing"].items()]
    lines = lines or ["Every class has boxes in every split."]
    if summary["group_pattern_matches"]:
        lines += ["", f"clean_split.group_pattern matched {summary['group_pattern_matches']} images."]
    return lines
