"""Every mask format round-trips: a tiny dataset is written here from known index masks, read
back, and must give exactly those ids, with void where the format says void."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from odpipe.data.index_masks import PALETTE, VOID
from odpipe.segment.clean import account, clean_masks
from odpipe.segment.formats import (
    CITYSCAPES,
    VOC_CLASSES,
    MaskDataset,
    MaskPair,
    detect_format,
    load_index_mask,
    read_mask_dataset,
)
from tests.helpers.masks import (
    COLOURS,
    MASKS,
    NAMES,
    RECTS,
    VOID_COLOUR,
    H,
    W,
    colour_mask,
    paint,
    palette_mask,
    save,
    write_camvid,
    write_image,
    write_voc,
)


def write_camvid_folders(root: Path) -> dict[str, np.ndarray]:
    """The split folders' layout, its labels named both ways, and ``label_colors.txt``."""
    layout = {"a": ("train", "a_L.png"), "b": ("train", "b.png"), "c": ("val", "c_L.png")}
    for stem, (split, label) in layout.items():
        write_image(root / split / f"{stem}.png")
        save(colour_mask(MASKS[stem]), root / f"{split}_labels" / label)
    rows = [f"{r} {g}\t{b}\t{n}" for n, (r, g, b) in zip(NAMES, COLOURS, strict=True)]
    (root / "label_colors.txt").write_text("\n".join([*rows, "0 0 0\tVoid", ""]))
    return {f"{split}/{stem}.png": MASKS[stem] for stem, (split, _) in layout.items()}


CITY_VOID_ID = 4  # "static": not one of the 19 classes


def write_cityscapes(root: Path) -> dict[str, np.ndarray]:
    label_ids = np.full(256, CITY_VOID_ID, np.uint8)
    label_ids[: len(CITYSCAPES)] = [label_id for _, label_id, _ in CITYSCAPES]
    expected = {}
    for stem, split in (("a", "train"), ("b", "train"), ("c", "val")):
        frame = f"{split}/ulm/ulm_00000{ord(stem)}_000019"
        write_image(root / "leftImg8bit" / f"{frame}_leftImg8bit.png")
        save(Image.fromarray(label_ids[MASKS[stem]]), root / "gtFine" / f"{frame}_gtFine_labelIds.png")
        save(Image.fromarray(label_ids[MASKS[stem]]), root / "gtFine" / f"{frame}_gtFine_color.png")
        expected[f"leftImg8bit/{frame}_leftImg8bit.png"] = MASKS[stem]
    return expected


def write_index(root: Path) -> dict[str, np.ndarray]:
    for stem, ids in MASKS.items():
        write_image(root / "images" / f"{stem}.jpg")
        save(Image.fromarray(ids), root / "masks" / f"{stem}.png")
    (root / "classes.txt").write_text("\n".join(NAMES) + "\n")
    return {f"images/{stem}.jpg": ids for stem, ids in MASKS.items()}


def write_ade(root: Path) -> dict[str, np.ndarray]:
    """ADE20K's layout and convention: 0 is unlabelled, class i is stored as i + 1."""
    for stem, ids in MASKS.items():
        write_image(root / "images/training" / f"{stem}.jpg")
        stored = np.where(ids == VOID, 0, ids + 1).astype(np.uint8)
        save(Image.fromarray(stored), root / "annotations/training" / f"{stem}.png")
    return {f"images/training/{stem}.jpg": ids for stem, ids in MASKS.items()}


CVAT_COLOURS = ((0, 0, 0), (250, 50, 83), (61, 61, 245), (255, 204, 51))
CVAT_UNLABELLED = (9, 99, 199)  # in no labelmap row: read as void, and counted


def write_cvat(root: Path) -> dict[str, np.ndarray]:
    for stem, ids in MASKS.items():
        write_image(root / "JPEGImages" / f"{stem}.jpg")
        save(colour_mask(ids, CVAT_COLOURS, CVAT_UNLABELLED), root / "SegmentationClass" / f"{stem}.png")
    (root / "ImageSets/Segmentation").mkdir(parents=True)
    (root / "ImageSets/Segmentation/default.txt").write_text("a\nb\nc\n")
    rows = [f"{n}:{r},{g},{b}::" for n, (r, g, b) in zip(("background", *NAMES[1:]), CVAT_COLOURS, strict=True)]
    (root / "labelmap.txt").write_text("\n".join(["# label:color_rgb:parts:actions", *rows, ""]))
    return {f"JPEGImages/{stem}.jpg": ids for stem, ids in MASKS.items()}


COCO_CATEGORIES = [{"id": 5, "name": "road"}, {"id": 2, "name": "car"}, {"id": 9, "name": "tree"}]
COCO_CATEGORIES += [{"id": 1, "name": "clutter"}]  # painted where the masks are void, not a class we train
COCO_CLASSES = ["background", "road", "car", "tree"]


def _uncompressed_rle(region: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths down the columns, starting with a run of zeros."""
    flat = region.flatten(order="F")
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    counts = np.diff(bounds).tolist()
    return {"size": list(region.shape), "counts": [0, *counts] if flat[0] else counts}


def _coco_segmentation(x0: int, y0: int, x1: int, y1: int, style: str):
    region = np.zeros((H, W), np.uint8)
    region[y0:y1, x0:x1] = 1
    if style == "polygon":  # COCO polygons run along pixel edges: x1, y1 end-exclusive
        return [[x0, y0, x1, y0, x1, y1, x0, y1]]
    if style == "rle":
        return _uncompressed_rle(region)
    rle = coco_mask.encode(np.asfortranarray(region))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def write_coco(root: Path) -> dict[str, np.ndarray]:
    """a: polygons; b: uncompressed RLE (as ``iscrowd``); c: compressed RLE; d: no annotation."""
    category = {1: 5, 2: 2, 3: 9, VOID: 1}
    images, annotations = [], []
    for number, (stem, style) in enumerate((("a", "polygon"), ("b", "rle"), ("c", "compressed"), ("d", ""))):
        write_image(root / "train2017" / f"{stem}.jpg")
        images.append({"id": number + 1, "file_name": f"{stem}.jpg", "width": W, "height": H})
        for cls, *rect in RECTS.get(stem, []):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": number + 1,
                    "category_id": category[cls],
                    "segmentation": _coco_segmentation(*rect, style),
                    "iscrowd": int(style == "rle"),
                }
            )
    data = {"images": images, "annotations": annotations, "categories": COCO_CATEGORIES}
    (root / "annotations").mkdir()
    (root / "annotations/instances_train2017.json").write_text(json.dumps(data))
    return {f"train2017/{stem}.jpg": ids for stem, ids in MASKS.items()} | {"train2017/d.jpg": paint([])}


def _labelme_shape(cls: int, x0: int, y0: int, x1: int, y1: int, kind: str) -> dict:
    """LabelMe's points are pixels, edges included: x1 - 1, y1 - 1."""
    corners = [[x0, y0], [x1 - 1, y0], [x1 - 1, y1 - 1], [x0, y1 - 1]]
    points = corners if kind == "polygon" else [corners[0], corners[2]]
    label = "clutter" if cls == VOID else NAMES[cls]
    return {"label": label, "points": points, "shape_type": kind, "group_id": None, "flags": {}}


def write_labelme_json(path: Path, image: str, shapes: list[dict], size: tuple[int, int] = (W, H)) -> None:
    document = {"version": "5.4.1", "shapes": shapes, "imagePath": image, "imageData": None}
    path.write_text(json.dumps(document | {"imageWidth": size[0], "imageHeight": size[1]}))


def write_labelme(root: Path) -> dict[str, np.ndarray]:
    """a: polygons; b: rectangles; c: no shapes (background)."""
    (root / "shots").mkdir()
    for stem, kind in (("a", "polygon"), ("b", "rectangle"), ("c", "")):
        write_image(root / "shots" / f"{stem}.jpg")
        shapes = [_labelme_shape(*rect, kind) for rect in RECTS[stem]] if kind else []
        write_labelme_json(root / "shots" / f"{stem}.json", f"..\\shots\\{stem}.jpg", shapes)
    return {"shots/a.jpg": MASKS["a"], "shots/b.jpg": MASKS["b"], "shots/c.jpg": paint([])}


def loaded(root: Path, dataset: MaskDataset, options: dict) -> dict[str, tuple[np.ndarray, dict[str, int]]]:
    return {p.image: load_index_mask(root, p, dataset, options) for p in dataset.pairs if p.image and p.mask}


def _void_pixels(*stems: str) -> int:
    return int(sum((MASKS[stem] == VOID).sum() for stem in stems))


# format, writer, options, class names read, the unknown pixels each image reports
CASES: list[tuple[str, Callable[[Path], dict], dict, tuple[str, ...], dict[str, dict[str, int]]]] = [
    ("voc", write_voc, {}, VOC_CLASSES, {}),
    ("camvid", write_camvid, {}, NAMES, {}),
    ("camvid", write_camvid_folders, {}, NAMES, {}),
    ("cityscapes", write_cityscapes, {}, tuple(name for name, _, _ in CITYSCAPES), {}),
    ("index", write_index, {}, NAMES, {}),
    ("index", write_ade, {"classes": list(NAMES), "reduce_zero_label": True}, NAMES, {}),
    (
        "cvat",
        write_cvat,
        {},
        ("background", *NAMES[1:]),
        {f"JPEGImages/{s}.jpg": {repr(CVAT_UNLABELLED): _void_pixels(s)} for s in "ab"},
    ),
    (
        "coco",
        write_coco,
        {"classes": COCO_CLASSES},
        tuple(COCO_CLASSES),
        {f"train2017/{s}.jpg": {"'clutter'": _void_pixels(s)} for s in "ab"},
    ),
    (
        "labelme",
        write_labelme,
        {"classes": COCO_CLASSES},
        tuple(COCO_CLASSES),
        {f"shots/{s}.jpg": {"'clutter'": _void_pixels(s)} for s in "ab"},
    ),
]


@pytest.mark.parametrize("fmt, write, options, names, unknown", CASES, ids=[f"{c[0]}-{c[1].__name__}" for c in CASES])
def test_round_trip(tmp_path: Path, fmt, write, options, names, unknown) -> None:
    expected = write(tmp_path)
    assert detect_format(tmp_path) == fmt
    dataset = read_mask_dataset(tmp_path, "auto", options)
    assert dataset.format == fmt
    assert dataset.classes.names == names
    assert len(dataset.classes.colors) == len(names)
    assert [p.image for p in dataset.pairs] == sorted(expected)
    masks = loaded(tmp_path, dataset, options)
    for image, ids in expected.items():
        np.testing.assert_array_equal(masks[image][0], ids, err_msg=image)
        assert masks[image][1] == unknown.get(image, {}), image


def test_voc_lists_split_and_select(tmp_path: Path) -> None:
    """ImageSets lists pre-split the images and say which JPEGImages are segmentation data."""
    write_voc(tmp_path)
    write_image(tmp_path / "VOC2012/JPEGImages/detection_only.jpg")
    dataset = read_mask_dataset(tmp_path, "voc", {})
    folder = "VOC2012/JPEGImages"
    assert dataset.splits == {f"{folder}/a.jpg": "train", f"{folder}/b.jpg": "train", f"{folder}/c.jpg": "val"}
    assert f"{folder}/detection_only.jpg" not in {p.image for p in dataset.pairs}
    assert dataset.empty_is_background is False


def test_voc_palette_png_reads_as_indices_not_colours(tmp_path: Path) -> None:
    """The palette's colours do not matter: a VOC mask's pixels are its indices."""
    write_voc(tmp_path)
    scrambled = [(i * 7 % 256, 255 - i, i) for i in range(256)]
    save(palette_mask(MASKS["a"], scrambled), tmp_path / "VOC2012/SegmentationClass/a.png")
    dataset = read_mask_dataset(tmp_path, "voc", {})
    ids, unknown = load_index_mask(tmp_path, dataset.pairs[0], dataset, {})
    np.testing.assert_array_equal(ids, MASKS["a"])
    assert unknown == {}
    assert dataset.classes.colors[1] == (128, 0, 0) and PALETTE[VOID] == (224, 224, 192)


def test_voc_mask_resaved_as_rgb_reads_by_palette_colour(tmp_path: Path) -> None:
    write_voc(tmp_path)
    save(palette_mask(MASKS["b"]).convert("RGB"), tmp_path / "VOC2012/SegmentationClass/b.png")
    dataset = read_mask_dataset(tmp_path, "voc", {})
    pair = MaskPair("VOC2012/JPEGImages/b.jpg", "VOC2012/SegmentationClass/b.png")
    ids, _ = load_index_mask(tmp_path, pair, dataset, {})
    np.testing.assert_array_equal(ids, MASKS["b"])


def test_camvid_class_dict_with_spaces(tmp_path: Path) -> None:
    write_camvid(tmp_path)
    dataset = read_mask_dataset(tmp_path, "camvid", {})
    assert dataset.classes.names == NAMES
    assert dataset.classes.colors == COLOURS
    assert dataset.class_ids[VOID_COLOUR] == VOID  # "Void" is no class: its colour is void


def test_camvid_folder_layout_splits(tmp_path: Path) -> None:
    write_camvid_folders(tmp_path)
    dataset = read_mask_dataset(tmp_path, "camvid", {})
    assert dataset.splits == {"train/a.png": "train", "train/b.png": "train", "val/c.png": "val"}
    assert {p.mask for p in dataset.pairs} == {"train_labels/a_L.png", "train_labels/b.png", "val_labels/c_L.png"}


def test_classes_by_name_pick_and_order(tmp_path: Path) -> None:
    """``dataset.classes`` for a format naming its classes: the listed ones, in that order; any
    other class's pixels are void and reported by their colour."""
    write_camvid(tmp_path)
    options = {"classes": ["car", "sky"]}
    dataset = read_mask_dataset(tmp_path, "camvid", options)
    assert dataset.classes.names == ("car", "sky")
    assert dataset.classes.colors == (COLOURS[2], COLOURS[0])
    ids, unknown = loaded(tmp_path, dataset, options)["701_StillsRaw_full/0016E5_b.png"]
    b = MASKS["b"]
    np.testing.assert_array_equal(ids, np.select([b == 2, b == 0], [0, 1], VOID))
    assert unknown == {repr(COLOURS[1]): int((b == 1).sum()), repr(COLOURS[3]): int((b == 3).sum())}


def test_cityscapes_label_ids_become_train_ids(tmp_path: Path) -> None:
    write_cityscapes(tmp_path)
    ids = np.array([[7, 8, 26, 33, 0, 1, 6, 34, 255]], np.uint8)
    frame = "test/bonn/bonn_000000_000019"
    write_image(tmp_path / "leftImg8bit" / f"{frame}_leftImg8bit.png", (ids.shape[1], 1))
    save(Image.fromarray(ids), tmp_path / "gtFine" / f"{frame}_gtFine_labelIds.png")
    dataset = read_mask_dataset(tmp_path, "cityscapes", {})
    image = f"leftImg8bit/{frame}_leftImg8bit.png"
    train_ids, unknown = loaded(tmp_path, dataset, {})[image]
    assert train_ids.tolist() == [[0, 1, 13, 18, VOID, VOID, VOID, VOID, VOID]]
    assert unknown == {}
    assert dataset.splits[image] == "test"
    assert dataset.splits["leftImg8bit/val/ulm/ulm_0000099_000019_leftImg8bit.png"] == "val"


def test_ade_layout_splits_from_folders(tmp_path: Path) -> None:
    write_ade(tmp_path)
    dataset = read_mask_dataset(tmp_path, "index", {"classes": list(NAMES), "reduce_zero_label": True})
    assert set(dataset.splits.values()) == {"train"}


def test_index_needs_class_names(tmp_path: Path) -> None:
    write_index(tmp_path)
    (tmp_path / "classes.txt").unlink()
    with pytest.raises(ValueError, match="classes.txt"):
        read_mask_dataset(tmp_path, "index", {})


def test_coco_image_without_annotations_is_background(tmp_path: Path) -> None:
    write_coco(tmp_path)
    dataset = read_mask_dataset(tmp_path, "coco", {})
    assert dataset.empty_is_background is True
    assert dataset.classes.names == ("background", "road", "car", "tree", "clutter")  # category order
    assert dataset.splits["train2017/d.jpg"] == "train"
    pair = next(p for p in dataset.pairs if p.image == "train2017/d.jpg")
    assert (pair.mask, pair.key) == ("annotations/instances_train2017.json", "4")
    ids, unknown = load_index_mask(tmp_path, pair, dataset, {})
    assert not ids.any() and unknown == {}


def test_labelme_circle_and_orphans(tmp_path: Path) -> None:
    """A circle covers its centre and not the corners around it; a JSON without its image and an
    image without a JSON both stay listed, as orphans."""
    (tmp_path / "shots").mkdir()
    write_image(tmp_path / "shots/round.jpg")
    write_image(tmp_path / "shots/unlabelled.jpg")
    circle = {"label": "tree", "points": [[8, 6], [8, 10]], "shape_type": "circle"}
    write_labelme_json(tmp_path / "shots/round.json", "round.jpg", [circle])
    write_labelme_json(tmp_path / "shots/gone.json", "gone.jpg", [])
    dataset = read_mask_dataset(tmp_path, "auto", {})
    assert dataset.format == "labelme"
    assert dataset.pairs == [
        MaskPair(None, "shots/gone.json"),
        MaskPair("shots/round.jpg", "shots/round.json"),
        MaskPair("shots/unlabelled.jpg", None),
    ]
    ids, _ = load_index_mask(tmp_path, dataset.pairs[1], dataset, {})
    tree = dataset.classes.names.index("tree")
    assert ids[6, 8] == tree and ids[2, 4] == 0 and ids[10, 12] == 0
    assert abs(int((ids == tree).sum()) - np.pi * 16) < 12


def test_detect_ambiguous_and_none(tmp_path: Path) -> None:
    write_voc(tmp_path)
    (tmp_path / "class_dict.csv").write_text("name,r,g,b\nsky,1,2,3\n")
    with pytest.raises(ValueError, match=r"voc \(.*camvid \(class_dict.csv\)"):
        detect_format(tmp_path)
    empty = tmp_path / "empty"
    (empty / "photos").mkdir(parents=True)
    write_image(empty / "photos/x.jpg")
    with pytest.raises(ValueError, match="no segmentation dataset recognised") as error:
        detect_format(empty)
    said = str(error.value)  # what was found, then each format's layout and how close it came
    assert "photos/: 1 .jpg" in said and "first files: photos/x.jpg" in said
    assert "voc: JPEGImages/ with SegmentationClass/ (palette PNGs); found neither folder" in said
    assert "0 files paired (1 image in photos/; 0 label files)" in said
    with pytest.raises(ValueError, match="'png' is not one of auto"):
        read_mask_dataset(tmp_path, "png", {})


@pytest.mark.parametrize("fmt, write, options, names, unknown", CASES, ids=[f"{c[0]}-{c[1].__name__}" for c in CASES])
def test_every_file_ends_in_one_place(tmp_path: Path, fmt, write, options, names, unknown) -> None:
    """Each format's files, a README and an image no mask goes with: every image and mask
    kept (or dropped with its copy), the tables and lists read said so, the README not read,
    the lone image dropped; the places add up to the files there are (and the one ingest left
    out)."""
    root = tmp_path / "data"
    root.mkdir()
    expected = write(root)
    (root / "README.md").write_text("how this was labelled\n")
    write_image(root / "lone" / "extra.jpg")
    dataset = read_mask_dataset(root, fmt, options)
    result = clean_masks(
        root, tmp_path / "i", tmp_path / "m", dataset=dataset, options=options, max_pixels=None, workers=1
    )
    left_out = [{"file": ".DS_Store", "reason": "os_litter", "why": "hidden file or OS litter"}]
    files, not_inputs = account(root, dataset, result.dropped, left_out)
    on_disk = sum(1 for p in root.rglob("*") if p.is_file())
    assert files["found"] == on_disk + 1 == files["kept"] + sum(files["dropped"].values()) + len(not_inputs)
    copies = {i.file for i in result.dropped if i.reason == "duplicate"}  # the writers' images are alike
    assert {r.image for r in result.rows} | copies == set(expected)
    kept_masks = {p.mask for p in dataset.pairs if p.image in expected and p.image not in copies}
    copied = {f for p in dataset.pairs if p.image in copies for f in (p.image, p.mask) if f not in kept_masks}
    places = {i.file: i.reason for i in not_inputs}
    assert places.pop("README.md") == "not_read" and places.pop(".DS_Store") == "os_litter"
    # outside the folders a layout reads (VOC's JPEGImages/, Cityscapes' leftImg8bit/) an image is no input
    lone = {"mask_missing": 1} if places.pop("lone/extra.jpg", None) is None else {}
    assert files["dropped"] == lone | ({"duplicate": len(copied)} if copied else {})
    colour = {f for f in places if f.endswith("_gtFine_color.png")}  # Cityscapes' colour copies: not masks here
    assert {places.pop(f) for f in colour} <= {"not_read"} and (fmt == "cityscapes") == bool(colour)
    assert set(places.values()) <= {"class_table", "split_list"}, places  # all else the writer made is an input
