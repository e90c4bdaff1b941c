"""A corpus of broken inputs, built here, one case per problem: each gets a decision and a
reason code, and every image that came in is accounted for."""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from odpipe.core.boxes import Box
from odpipe.data.annotations import Annotation, read_voc, write_voc
from odpipe.data.synthetic import generate
from odpipe.detect.clean import ClassRules, CleanPolicy, account, clean_folder, issues_as_dicts, report
from odpipe.detect.formats import read_dataset
from odpipe.detect.split_files import SplitTally
from tests.conftest import CLASSES

RULES = ClassRules(CLASSES)


def _out(root: Path) -> Path:
    return root.with_name(root.name + "_clean")


def _clean(root: Path, rules: ClassRules = RULES, **policy):
    """Clean ``root`` into a fresh sibling folder (see ``_out``)."""
    shutil.rmtree(_out(root), ignore_errors=True)
    return clean_folder(root, _out(root), "auto", {}, rules, CleanPolicy(**policy))[1]


def _written(root: Path, sample) -> bytes:
    return (_out(root) / sample.image).read_bytes()


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
    # outside, one empty; 4 an unknown class only; 5 zero bytes; 6 a copy of image 7; 8 a
    # size of another aspect ratio than the image's.
    images[0].write_bytes(images[0].read_bytes()[:200])
    images[1].with_suffix(".xml").write_text("<annotation><size>")
    images[2].with_suffix(".xml").unlink()
    _voc(
        images[3],
        0,
        0,
        Box("circle", 50, 10, 900, 40),
        Box("square", 500, 500, 600, 600),
        Box("square", 40, 40, 20, 60),
    )
    _voc(images[4], 0, 0, Box("hexagon", 1, 1, 20, 20))
    images[5].write_bytes(b"")
    images[6].write_bytes(images[7].read_bytes())
    images[6].with_suffix(".xml").write_text(images[7].with_suffix(".xml").read_text())
    _voc(images[8], 10_000, 5_000, Box("circle", 1, 1, 9, 9))
    _voc(tmp_path / "ghost.jpg", 64, 64, Box("circle", 1, 1, 9, 9))
    return tmp_path, images


def test_each_broken_input_gets_its_reason(corpus) -> None:
    root, images = corpus
    result = _clean(root)
    decisions = _decisions(result)
    assert decisions[images[0].name] == {"image_unreadable"}
    assert decisions[images[1].name] == {"annotation_invalid"}
    assert decisions[images[2].name] == {"no_annotation"}
    assert {"box_clipped", "box_empty"} <= decisions[images[3].name]
    assert decisions[images[4].name] == {"no_valid_boxes"}
    assert "unknown_class x1" in next(i.detail for i in result.dropped if i.file == images[4].name)
    assert decisions[images[5].name] == {"image_empty"}
    assert images[6].name not in decisions and decisions[images[7].name] == {"duplicate"}
    assert decisions[images[8].name] == {"size_mismatch"}
    assert decisions["ghost.xml"] == {"image_missing"}

    clipped = next(s for s in result.kept if s.image == images[3].name).annotation
    assert len(clipped.boxes) == 1 and clipped.boxes[0].xmax == clipped.width


def test_every_image_is_kept_or_dropped_exactly_once(corpus) -> None:
    root, images = corpus
    result = _clean(root)
    kept = {s.source for s in result.kept}
    dropped = [i.file for i in result.dropped]
    assert len(dropped) == len(set(dropped))
    assert kept.isdisjoint(dropped)
    assert kept | set(dropped) == {p.name for p in images}
    tally = SplitTally()
    for sample in result.kept:
        tally.add("train", sample.annotation)
    summary = report(result, tally, CLASSES, files={}, fmt="voc")
    assert summary["images_in"] == len(images) == summary["kept"] + summary["dropped"]


def test_every_file_ends_in_one_place_with_its_reason(corpus) -> None:
    """Images, their XML (following their image, or dropped for their own fault), a file no
    reader reads and one ingest left behind: the places add up to every file there was."""
    root, images = corpus
    (root / "README.txt").write_text("made by hand")
    result = _clean(root)
    index, parsed = read_dataset(root, "auto", {})
    left_out = [{"file": "photo.psd", "reason": "not_data", "why": "not an image or annotation file (.psd)"}]
    files, not_inputs = account(root, index, parsed, result.dropped, left_out)
    on_disk = sum(1 for p in root.rglob("*") if p.is_file())
    assert files["found"] == on_disk + 1 == files["kept"] + sum(files["dropped"].values()) + len(not_inputs)
    assert files["kept"] == 2 * (len(images) - 7)
    assert files["dropped"] == {
        "annotation_invalid": 2,  # the image and its XML
        "duplicate": 2,
        "image_empty": 2,
        "image_missing": 1,  # ghost.xml
        "image_unreadable": 2,
        "no_annotation": 1,  # its XML is gone
        "no_valid_boxes": 2,
        "size_mismatch": 2,
    }
    assert [(i.file, i.reason) for i in not_inputs] == [("README.txt", "not_read"), ("photo.psd", "not_data")]
    assert files["not_input"] == {"not_data": 1, "not_read": 1}


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
    data = _written(tmp_path, sample)
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
    with Image.open(io.BytesIO(_written(tmp_path, sample))) as out:
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
    json.dumps(issues_as_dicts(_clean(corpus[0])))


def _photo(path: Path, size: tuple[int, int], fmt: str = "JPEG", mode: str = "RGB", **kwargs) -> None:
    pixels = np.random.default_rng(len(path.name)).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    _save(Image.fromarray(pixels).convert(mode), path, fmt, **kwargs)


def test_an_annotation_of_a_resized_copy_is_rescaled(tmp_path: Path) -> None:
    """Labelled at 640x480, stored at 320x240: the boxes are halved, not clipped."""
    _photo(tmp_path / "small.jpg", (320, 240))
    _voc(tmp_path / "small.jpg", 640, 480, Box("circle", 100, 100, 600, 400))
    result = _clean(tmp_path)
    (sample,) = result.kept
    (box,) = sample.annotation.boxes
    assert (box.xmin, box.ymin, box.xmax, box.ymax) == (50, 50, 300, 200)
    assert _decisions(result)["small.jpg"] == {"boxes_rescaled"}


def test_converted_names_never_collide(tmp_path: Path) -> None:
    """a.png (RGBA) becomes a JPEG while a.jpg exists: both are kept, under different names."""
    raw = tmp_path / "raw"
    raw.mkdir()
    _photo(raw / "a.jpg", (64, 48))
    _photo(raw / "a.png", (64, 48), "PNG", "RGBA")
    rows = "".join(f"{name},2,2,30,30,circle\n" for name in ("a.jpg", "a.png"))
    (raw / "labels.csv").write_text("filename,xmin,ymin,xmax,ymax,class\n" + rows)
    result = _clean(raw)
    assert {s.source: s.image for s in result.kept} == {"a.jpg": "a.jpg", "a.png": "a.png.jpg"}
    assert sorted(_tree(_out(raw))) == ["a.jpg", "a.png.jpg"]
    assert _written(raw, result.kept[0]) == (raw / "a.jpg").read_bytes()


def _handmade_xml(path: Path, size: str, *objects: tuple[str, int, int, int, int]) -> None:
    """A VOC XML written by hand, as other tools (or LabelImg's bugs) leave them: ``size`` is
    the ``<size>`` element or nothing."""
    boxes = "".join(
        f"<object><name>{name}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
        f"<ymax>{y1}</ymax></bndbox></object>"
        for name, x0, y0, x1, y1 in objects
    )
    path.write_text(f"<annotation><filename>{path.stem}.jpg</filename>{size}{boxes}</annotation>")


def test_voc_coordinates_are_one_based(tmp_path: Path) -> None:
    _photo(tmp_path / "x.jpg", (64, 48))
    _handmade_xml(tmp_path / "x.xml", "<size><width>64</width><height>48</height></size>", ("circle", 1, 1, 64, 48))
    ((box,),) = [s.annotation.boxes for s in _clean(tmp_path).kept]
    assert (box.xmin, box.ymin, box.xmax, box.ymax) == (0, 0, 64, 48)  # the whole image, nothing clipped


def test_labelimg_quirks_drop_the_box_or_nothing(tmp_path: Path) -> None:
    """No <size>: the image's own size is used. An empty <name>: only that box is dropped."""
    _photo(tmp_path / "x.jpg", (64, 48))
    _handmade_xml(tmp_path / "x.xml", "", ("", 2, 2, 9, 9), ("circle", 11, 11, 30, 30))
    result = _clean(tmp_path)
    (sample,) = result.kept
    assert (sample.annotation.width, sample.annotation.height) == (64, 48)
    assert [b.label for b in sample.annotation.boxes] == ["circle"]
    assert {"box_unlabelled", "size_missing"} <= {i.reason for i in result.fixed}


def test_an_image_over_the_pixel_limit_is_dropped_not_fatal(spec, tmp_path: Path) -> None:
    images = generate(spec, tmp_path)
    _photo(images[0], (400, 300))  # larger than every generated image
    _voc(images[0], 400, 300, Box("circle", 2, 2, 30, 30))
    result = _clean(tmp_path, max_image_pixels=200 * 200)
    assert _decisions(result)[images[0].name] == {"image_too_large"}
    assert len(result.kept) == spec.num_images - 1


def test_copies_labelled_differently_are_reported_with_their_agreement(spec, tmp_path: Path) -> None:
    images = generate(spec, tmp_path)
    images[1].write_bytes(images[0].read_bytes())
    images[2].write_bytes(images[0].read_bytes())
    first = read_voc(images[0].with_suffix(".xml"))
    _voc(images[1], first.width, first.height, *first.boxes)  # same boxes: a plain duplicate
    moved = [replace(b, xmax=b.xmax + (b.xmax - b.xmin)) for b in first.boxes[:1]]
    _voc(images[2], first.width, first.height, *moved)  # the first box twice as wide, the rest gone
    result = _clean(tmp_path)
    dropped = {i.file: i for i in result.dropped}
    assert dropped[images[1].name].reason == "duplicate"
    conflict = dropped[images[2].name]
    assert conflict.reason == "duplicate_labels_differ"
    expected = 0.5 / len(first.boxes)  # one box at IoU 0.5, the others unmatched
    assert f"agreement (IoU) {expected:.2f}" in conflict.detail and images[0].name in conflict.detail


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_output_is_identical_for_any_number_of_workers(corpus) -> None:
    root, _ = corpus
    one = _clean(root, workers=1)
    one_files = _tree(_out(root))
    two = _clean(root, workers=2)
    assert _tree(_out(root)) == one_files and one_files
    assert json.dumps(issues_as_dicts(one)) == json.dumps(issues_as_dicts(two))
    assert one.kept == two.kept


def test_a_copy_of_a_dropped_image_is_judged_on_its_own(spec, tmp_path: Path) -> None:
    images = generate(spec, tmp_path)
    images[1].write_bytes(images[0].read_bytes())
    images[1].with_suffix(".xml").write_text(images[0].with_suffix(".xml").read_text())
    _voc(images[0], 10_000, 5_000, Box("circle", 1, 1, 9, 9))  # unusable labels on the first copy
    result = _clean(tmp_path)
    assert _decisions(result)[images[0].name] == {"size_mismatch"}
    assert images[1].name in {s.source for s in result.kept}
