from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from odpipe.core.boxes import Box
from odpipe.core.draw import sample_grid, side_by_side
from odpipe.data.synthetic import generate
from odpipe.detect.clean import ClassRules, CleanPolicy, account, clean, issues_as_dicts, report
from odpipe.detect.formats import read_dataset
from odpipe.detect.report import markdown
from odpipe.detect.split_files import SplitTally
from tests.conftest import CLASSES


def _out(root: Path) -> Path:
    return root.with_name(root.name + "_clean")


def _report(root: Path, splits: dict[str, list[int]] | None = None) -> tuple[str, object]:
    """The Markdown report of ``root``; ``splits`` puts kept samples (by position) in val and
    test, the rest in train."""
    index, parsed = read_dataset(root, "auto", {})
    result = clean(root, _out(root), index=index, parsed=parsed, rules=ClassRules(CLASSES), policy=CleanPolicy())
    chosen = {name: [result.kept[i] for i in positions] for name, positions in (splits or {}).items()}
    taken = {id(s) for samples in chosen.values() for s in samples}
    chosen["train"] = [s for s in result.kept if id(s) not in taken]
    tally = SplitTally()
    for name, samples in chosen.items():
        for sample in samples:
            tally.add(name, sample.annotation)
    files, _ = account(root, index, parsed, result.dropped)
    summary = report(result, tally, CLASSES, files=files, fmt=parsed.format)
    return markdown(summary, issues_as_dicts(result), "grid.jpg"), result


def test_report_names_each_decision_and_counts_per_class(spec, tmp_path: Path) -> None:
    images = generate(spec, tmp_path)
    images[0].write_bytes(b"")
    text, result = _report(tmp_path)
    assert f"{spec.num_images} images in: {spec.num_images - 1} kept, 1 dropped." in text
    assert "| image_empty | 1 |" in text
    # every file: the images and their XML, the empty image and its XML dropped
    assert f"## Files ({2 * spec.num_images} found under dataset.path)" in text
    assert f"| kept | {2 * (spec.num_images - 1)} |" in text and "| dropped: image_empty | 2 |" in text
    assert f"`{images[0].name}`: **image_empty**" in text
    assert "| split | images | boxes | circle | square | triangle |" in text
    assert "![samples with their boxes](grid.jpg)" in text

    images = {s.image: (_out(tmp_path) / s.image).read_bytes() for s in result.kept}
    grid = sample_grid([s.annotation for s in result.kept], images, CLASSES, tile=64, columns=2)
    assert grid.size == (128, 128)


def test_a_clean_dataset_says_so(spec, tmp_path: Path) -> None:
    generate(spec, tmp_path)
    text, _ = _report(tmp_path)
    assert "No image was dropped." in text and "Nothing was changed." in text
    assert "Every class has boxes in every split." in text


def test_classes_missing_from_a_split_are_named(spec, tmp_path: Path) -> None:
    generate(spec, tmp_path)
    _, result = _report(tmp_path)
    few = min(range(len(result.kept)), key=lambda i: len({b.label for b in result.kept[i].annotation.boxes}))
    text, result = _report(tmp_path, {"val": [few]})
    val_classes = {b.label for b in result.kept[few].annotation.boxes}
    missing = ", ".join(sorted(set(CLASSES) - val_classes))
    assert missing and f"- val has no box of: {missing}" in text


def test_side_by_side_puts_truth_left_and_captioned_predictions_right() -> None:
    image = Image.new("RGB", (100, 50), (0, 0, 0))
    encoded = io.BytesIO()
    image.save(encoded, format="PNG")
    truth = [Box("circle", 10, 10, 40, 40)]
    predicted = [Box("square", 60, 10, 90, 40)]
    grid = np.asarray(side_by_side([(encoded.getvalue(), truth, predicted, ["square 0.91"])], list(CLASSES), tile=100))
    assert grid.shape == (100, 200, 3)
    left, right = grid[:, :100], grid[:, 100:]
    # Each panel has its own boxes only: the truth box at x 10..40, the prediction at 60..90.
    assert left[25, 10].any() and not left[25, 60].any()
    assert right[25, 60].any() and not right[25, 10].any()
