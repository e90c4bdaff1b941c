"""Every broken input gets a decision and a reason code; nothing is lost silently."""

from __future__ import annotations

from pathlib import Path

from odpipe.annotations import Annotation, Box, write_voc
from odpipe.cleaning import clean_voc_folder, report
from odpipe.synthetic import generate

from .conftest import CLASSES


def _reasons(issues) -> dict[str, str]:
    return {issue.file: issue.reason for issue in issues}


def test_broken_inputs_are_dropped_or_fixed_with_a_reason(spec, tmp_path: Path) -> None:
    images = generate(spec, tmp_path)
    # 0: truncated JPEG; 1: XML that does not parse; 2: no XML; 3: one box beyond the
    # right edge and one entirely outside; 4: a box of a class not configured; plus an
    # orphan XML with no image.
    images[0].write_bytes(images[0].read_bytes()[:200])
    images[1].with_suffix(".xml").write_text("<annotation><size>")
    images[2].with_suffix(".xml").unlink()
    write_voc(
        Annotation(images[3].name, 10_000, 10_000, (Box("circle", 50, 10, 900, 40), Box("square", 500, 500, 600, 600))),
        images[3].with_suffix(".xml"),
    )
    write_voc(Annotation(images[4].name, 128, 128, (Box("hexagon", 1, 1, 20, 20),)), images[4].with_suffix(".xml"))
    write_voc(Annotation("ghost.jpg", 64, 64, (Box("circle", 1, 1, 9, 9),)), tmp_path / "ghost.xml")

    result = clean_voc_folder(tmp_path, CLASSES)

    dropped = _reasons(result.dropped)
    assert dropped[images[0].name] == "image_unreadable"
    assert dropped[images[1].name] == "annotation_invalid"
    assert dropped[images[2].name] == "no_annotation"
    assert dropped[images[4].name] == "no_valid_boxes"
    assert dropped["ghost.xml"] == "image_missing"
    fixed = [(i.file, i.reason) for i in result.fixed]
    assert (images[3].name, "size_mismatch") in fixed
    assert (images[3].name, "box_clipped") in fixed
    assert (images[3].name, "box_empty") in fixed
    assert (images[4].name, "unknown_class") in fixed

    kept = {s.image: s for s in result.kept}
    clipped = kept[images[3].name].annotation
    assert len(clipped.boxes) == 1 and clipped.boxes[0].xmax == clipped.width

    summary = report(result, {"train": result.kept})
    assert summary["images_in"] == len(images) == summary["kept"] + summary["dropped"]
    assert summary["dropped"] == 4


def test_image_extensions_match_in_any_case_and_subfolders(spec, tmp_path: Path) -> None:
    images = generate(spec, tmp_path / "a" / "b")
    renamed = images[0].rename(images[0].with_suffix(".JPG"))
    result = clean_voc_folder(tmp_path, CLASSES)
    assert len(result.kept) == spec.num_images
    assert f"a/b/{renamed.name}" in {s.image for s in result.kept}
