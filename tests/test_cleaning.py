"""A corpus of broken inputs, built here, one case per problem: each gets a decision and a
reason code, and every image that came in is accounted for."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from odpipe.annotations import Annotation, Box, write_voc
from odpipe.cleaning import ClassRules, clean_folder, report
from odpipe.synthetic import generate

from .conftest import CLASSES

RULES = ClassRules(CLASSES)


def _clean(root: Path, rules: ClassRules = RULES, keep_negatives: bool = False, drop_difficult: bool = False):
    return clean_folder(root, "auto", {}, rules, keep_negatives, drop_difficult)[1]


def _decisions(result) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for issue in [*result.dropped, *result.unused, *result.fixed]:
        found.setdefault(issue.file, set()).add(issue.reason)
    return found


def _save(image: Image.Image, path: Path, fmt: str, **kwargs) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    path.write_bytes(buffer.getvalue())


def _voc(path: Path, width: int, height: int, *boxes: Box) -> None:
    write_voc(Annotation(path.with_suffix(".jpg").name, width, height, boxes), path.with_suffix(".xml"))


@pytest.fixture
def corpus(spec, tmp_path: Path) -> tuple[Path, list[Path]]:
    images = generate(spec, tmp_path)
    # 0 truncated JPEG; 1 XML that does not parse; 2 no XML; 3 one box over the edge, one
    # outside, a wrong size; 4 an unknown class only; 5 zero bytes; 6 a copy of image 7.
    images[0].write_bytes(images[0].read_bytes()[:200])
    images[1].with_suffix(".xml").write_text("<annotation><size>")
    images[2].with_suffix(".xml").unlink()
    _voc(
        images[3],
        10_000,
        10_000,
        Box("circle", 50, 10, 900, 40),
        Box("square", 500, 500, 600, 600),
        Box("square", 40, 40, 20, 60),
    )
    _voc(images[4], 0, 0, Box("hexagon", 1, 1, 20, 20))
    images[5].write_bytes(b"")
    images[6].write_bytes(images[7].read_bytes())
    _voc(tmp_path / "ghost.jpg", 64, 64, Box("circle", 1, 1, 9, 9))
    return tmp_path, images


def test_each_broken_input_gets_its_reason(corpus) -> None:
    root, images = corpus
    result = _clean(root)
    decisions = _decisions(result)
    assert decisions[images[0].name] == {"image_unreadable"}
    assert decisions[images[1].name] == {"annotation_invalid"}
    assert decisions[images[2].name] == {"no_annotation"}
    assert {"size_mismatch", "box_clipped", "box_empty"} <= decisions[images[3].name]
    assert decisions[images[4].name] == {"unknown_class", "no_valid_boxes"}
    assert decisions[images[5].name] == {"image_empty"}
    assert decisions[images[6].name] == {"duplicate"} or decisions[images[7].name] == {"duplicate"}
    assert decisions["ghost.xml"] == {"image_missing"}

    clipped = next(s for s in result.kept if s.image == images[3].name).annotation
    assert (clipped.width, clipped.height) != (10_000, 10_000)
    assert len(clipped.boxes) == 1 and clipped.boxes[0].xmax == clipped.width


def test_every_image_is_kept_or_dropped_exactly_once(corpus) -> None:
    root, images = corpus
    result = _clean(root)
    kept = {s.source for s in result.kept}
    dropped = [i.file for i in result.dropped]
    assert len(dropped) == len(set(dropped))
    assert kept.isdisjoint(dropped)
    assert kept | set(dropped) == {p.name for p in images}
    summary = report(result, {"train": result.kept}, CLASSES)
    assert summary["images_in"] == len(images) == summary["kept"] + summary["dropped"]


def test_negatives_are_kept_or_dropped_by_config(corpus) -> None:
    root, images = corpus
    kept = {s.source: s for s in _clean(root, keep_negatives=True).kept}
    assert kept[images[2].name].annotation.boxes == ()


def test_class_rules_rename_merge_ignore_and_refuse(spec, tmp_path: Path) -> None:
    images = generate(spec, tmp_path)
    _voc(images[0], 0, 0, Box("moto", 1, 1, 30, 30), Box("motorbike", 40, 40, 80, 80), Box("person", 5, 5, 9, 9))
    rules = ClassRules(
        ["motorcycle", *CLASSES], rename={"moto": "motorcycle", "motorbike": "motorcycle"}, ignore=["person"]
    )
    result = _clean(tmp_path, rules)
    sample = next(s for s in result.kept if s.source == images[0].name)
    assert [b.label for b in sample.annotation.boxes] == ["motorcycle", "motorcycle"]
    assert "class_ignored" in _decisions(result)[images[0].name]
    with pytest.raises(ValueError, match="person"):
        _clean(tmp_path, ClassRules(["motorcycle"], rename=rules.rename, unknown="error"))


def test_difficult_boxes_are_carried_or_dropped(spec, tmp_path: Path) -> None:
    images = generate(spec, tmp_path)
    _voc(images[0], 0, 0, Box("circle", 1, 1, 30, 30, difficult=True, truncated=True), Box("square", 40, 40, 80, 80))
    kept = next(s for s in _clean(tmp_path).kept if s.source == images[0].name)
    assert kept.annotation.boxes[0].difficult and kept.annotation.boxes[0].truncated
    kept = next(s for s in _clean(tmp_path, drop_difficult=True).kept if s.source == images[0].name)
    assert [b.label for b in kept.annotation.boxes] == ["square"]


@pytest.mark.parametrize(
    ("mode", "fmt", "suffix", "converted"),
    [
        ("RGB", "JPEG", ".jpg", False),
        ("RGB", "PNG", ".png", False),
        ("L", "JPEG", ".jpg", True),
        ("RGBA", "PNG", ".png", True),
        ("CMYK", "JPEG", ".jpeg", True),
        ("I;16", "PNG", ".png", True),
        ("RGB", "BMP", ".bmp", True),
        ("RGB", "WEBP", ".webp", True),
    ],
)
def test_image_modes_are_converted_only_when_needed(tmp_path: Path, mode: str, fmt: str, suffix: str, converted: bool):
    pixels = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    image = (
        Image.fromarray(pixels).convert(mode)
        if mode != "I;16"
        else Image.fromarray(pixels[..., 0].astype(np.uint16) * 256)
    )
    path = tmp_path / f"photo de café{suffix}"  # spaces and non-ASCII in the name
    _save(image, path, fmt)
    write_voc(Annotation(path.name, 64, 48, (Box("circle", 2, 2, 30, 30),)), path.with_suffix(".xml"))
    result = _clean(tmp_path)
    (sample,) = result.kept
    data = result.images[sample.image]
    with Image.open(io.BytesIO(data)) as out:
        assert out.mode == "RGB" and out.size == (64, 48)
        assert out.format == ("JPEG" if converted else fmt)
    assert (data == path.read_bytes()) is not converted
    assert sample.source == path.name
    assert sample.image.endswith(suffix if not converted or suffix in (".jpg", ".jpeg") else ".jpg")


def test_exif_rotation_follows_what_the_labelling_tool_showed(tmp_path: Path) -> None:
    """A phone photo stored 64x48 with 'rotate 90' in EXIF is shown (and labelled) 48x64."""
    image = Image.new("RGB", (64, 48), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 8, 8))  # a white corner to follow
    exif = Image.Exif()
    exif[0x0112] = 6
    _save(image, tmp_path / "phone.jpg", "JPEG", exif=exif.tobytes())
    write_voc(Annotation("phone.jpg", 48, 64, (Box("circle", 40, 0, 48, 8),)), tmp_path / "phone.xml")
    result = _clean(tmp_path)
    (sample,) = result.kept
    assert "exif_rotated" in _decisions(result)["phone.jpg"]
    with Image.open(io.BytesIO(result.images[sample.image])) as out:
        assert out.size == (48, 64)
        assert np.asarray(out)[2:6, 42:46].mean() > 200  # the white corner is where the box is
    assert "size_mismatch" not in _decisions(result)["phone.jpg"]


@pytest.mark.parametrize(
    "payload",
    [
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
        "<annotation><filename>&lol2;</filename></annotation>",
        '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><annotation>&xxe;</annotation>',
    ],
)
def test_xml_entities_are_refused(spec, tmp_path: Path, payload: str) -> None:
    images = generate(spec, tmp_path)
    images[0].with_suffix(".xml").write_text(payload)
    result = _clean(tmp_path)
    assert _decisions(result)[images[0].name] == {"annotation_invalid"}
    assert len(result.kept) == spec.num_images - 1


def test_image_extensions_match_in_any_case_and_subfolders(spec, tmp_path: Path) -> None:
    images = generate(spec, tmp_path / "a" / "b")
    renamed = images[0].rename(images[0].with_suffix(".JPG"))
    result = _clean(tmp_path)
    assert len(result.kept) == spec.num_images
    assert f"a/b/{renamed.name}" in {s.image for s in result.kept}


def test_issues_file_is_json_serialisable(corpus) -> None:
    from odpipe.cleaning import issues_as_dicts

    json.dumps(issues_as_dicts(_clean(corpus[0])))
