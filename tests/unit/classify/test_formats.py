"""Reading classification datasets: each layout from folders made here, with what real ones hold
(nested folders, OS litter, a top folder from an archive, a CSV), in an order that never depends on
the file system's, and errors that name the file and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from odpipe.classify.formats import LabelledImage, detect_layout, read_class_dataset


def touch(root: Path, *paths: str) -> None:
    """Files with a little content each: the reader never opens them, so any bytes do."""
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(path.encode())


def labels(dataset) -> list[tuple[str, str, str | None]]:
    return [(i.path, i.label, i.split) for i in dataset.images]


def test_folders_layout_reads_nested_files_and_skips_litter(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "dog/b.jpg",
        "dog/2019/summer/a.png",
        "cat/z.jpg",
        "cat/notes.txt",
        "cat/.DS_Store",
        "cat/.thumbs/t.jpg",
        ".git/objects/x",
        "__MACOSX/cat/._z.jpg",
        "README.md",
    )
    (tmp_path / "bird").mkdir()
    (tmp_path / "fish" / ".hidden").mkdir(parents=True)
    dataset = read_class_dataset(tmp_path)
    assert dataset.layout == "folders"
    assert dataset.classes == ("bird", "cat", "dog", "fish")
    assert dataset.empty_classes == ("bird", "fish")
    assert labels(dataset) == [
        ("cat/notes.txt", "cat", None),
        ("cat/z.jpg", "cat", None),
        ("dog/2019/summer/a.png", "dog", None),
        ("dog/b.jpg", "dog", None),
    ]


def test_order_never_depends_on_creation_order_and_classes_override_it(tmp_path: Path) -> None:
    names = ["zebra/3.jpg", "ant/1.jpg", "moth/x/2.jpg", "moth/1.jpg", "ant/10.jpg", "ant/2.jpg"]
    touch(tmp_path / "one", *names)
    touch(tmp_path / "two", *reversed(names))
    one, two = read_class_dataset(tmp_path / "one"), read_class_dataset(tmp_path / "two")
    assert one == two
    assert one.classes == ("ant", "moth", "zebra")
    assert [i.path for i in one.images] == [
        "ant/1.jpg",
        "ant/10.jpg",
        "ant/2.jpg",
        "moth/1.jpg",
        "moth/x/2.jpg",
        "zebra/3.jpg",
    ]
    ordered = read_class_dataset(tmp_path / "one", classes=["zebra", "ant", "moth"])
    assert ordered.classes == ("zebra", "ant", "moth")
    assert ordered.images == one.images
    with pytest.raises(ValueError, match=r"not listed \['zebra'\], not found \['bee'\]"):
        read_class_dataset(tmp_path / "one", classes=["ant", "moth", "bee"])
    with pytest.raises(ValueError, match="each class found once"):
        read_class_dataset(tmp_path / "one", classes=["ant", "moth", "zebra", "ant"])


def test_one_top_folder_from_an_archive_is_descended_into(tmp_path: Path) -> None:
    touch(tmp_path, "PetImages/Cat/1.jpg", "PetImages/Dog/1.jpg", "readme[1].txt", "__MACOSX/PetImages/._Cat")
    dataset = read_class_dataset(tmp_path)
    assert dataset.classes == ("Cat", "Dog")
    assert labels(dataset) == [("PetImages/Cat/1.jpg", "Cat", None), ("PetImages/Dog/1.jpg", "Dog", None)]
    touch(tmp_path / "split", "chest_xray/train/a/1.jpg", "chest_xray/train/b/1.jpg")
    assert read_class_dataset(tmp_path / "split").layout == "split_folders"


def test_a_single_class_is_refused(tmp_path: Path) -> None:
    touch(tmp_path, "cat/1.jpg", "cat/2.jpg")
    with pytest.raises(ValueError, match=r"found class\(es\) \['cat'\]: classification needs at least two"):
        read_class_dataset(tmp_path)


def test_split_folders_keep_their_splits(tmp_path: Path) -> None:
    touch(tmp_path, "train/cat/1.jpg", "train/dog/1.jpg", "validation/cat/2.jpg", "test/dog/3.jpg", "test/.x")
    (tmp_path / "validation" / "dog").mkdir()
    (tmp_path / "test" / "cat").mkdir()
    dataset = read_class_dataset(tmp_path)
    assert (dataset.layout, dataset.classes, dataset.empty_classes) == ("split_folders", ("cat", "dog"), ())
    assert labels(dataset) == [
        ("test/dog/3.jpg", "dog", "test"),
        ("train/cat/1.jpg", "cat", "train"),
        ("train/dog/1.jpg", "dog", "train"),
        ("validation/cat/2.jpg", "cat", "val"),
    ]


def test_split_folders_with_other_classes_than_train_are_an_error(tmp_path: Path) -> None:
    touch(tmp_path, "train/cat/1.jpg", "train/dog/1.jpg", "val/cat/2.jpg", "val/cow/2.jpg")
    with pytest.raises(
        ValueError, match=r"val: its class folders differ from train's: missing \['dog'\], extra \['cow'\]"
    ):
        read_class_dataset(tmp_path)
    touch(tmp_path / "two", "train/cat/1.jpg", "train/dog/1.jpg", "val/cat/1.jpg", "valid/dog/1.jpg")
    with pytest.raises(ValueError, match="val/ and valid/ are both the val split"):
        read_class_dataset(tmp_path / "two")
    touch(tmp_path / "odd", "train/cat/1.jpg", "train/dog/1.jpg", "extra/cat/1.jpg")
    with pytest.raises(ValueError, match="extra: not a split folder"):
        read_class_dataset(tmp_path / "odd")


def test_csv_layout_reads_rows_in_file_order(tmp_path: Path) -> None:
    touch(tmp_path, "img/b.jpg", "img/a.jpg", "other.csv")
    (tmp_path / "labels.csv").write_text(
        "filename, label ,split\nimg/b.jpg,dog,train\n./img/a.jpg,cat,validation\nimg\\c.jpg,cat,\n"
    )
    assert detect_layout(tmp_path) == "csv"
    dataset = read_class_dataset(tmp_path)
    assert (dataset.layout, dataset.classes) == ("csv", ("cat", "dog"))
    assert dataset.images == [
        LabelledImage("img/b.jpg", "dog", "train"),
        LabelledImage("img/a.jpg", "cat", "val"),
        LabelledImage("img/c.jpg", "cat", None),
    ]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("filename,class\na.jpg,cat\n", r"labels\.csv:1: no column\(s\) \['label'\]"),
        ("filename,label\na.jpg,cat\nb.jpg,\n", r"labels\.csv:3: empty label for b\.jpg"),
        ("filename,label,split\na.jpg,cat,train\nb.jpg,dog,holdout\n", r"labels\.csv:3: split 'holdout' is not one"),
        ("filename,label\n../a.jpg,cat\nb.jpg,dog\n", r"labels\.csv:2: '\.\./a\.jpg' is outside the dataset folder"),
    ],
)
def test_csv_errors_name_the_file_and_line(tmp_path: Path, text: str, error: str) -> None:
    (tmp_path / "labels.csv").write_text(text)
    with pytest.raises(ValueError, match=error):
        read_class_dataset(tmp_path, "csv")


def test_several_labelled_csvs_are_ambiguous(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("filename,label\na.jpg,cat\n")
    (tmp_path / "test.csv").write_text("filename,label\nb.jpg,dog\n")
    with pytest.raises(ValueError, match=r"several CSVs with columns filename,label \(test\.csv, train\.csv\)"):
        read_class_dataset(tmp_path)


def test_unknown_layout_and_missing_root(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a folder"):
        read_class_dataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="'imagenet' is not one of auto, folders, split_folders, csv"):
        read_class_dataset(tmp_path, "imagenet")
