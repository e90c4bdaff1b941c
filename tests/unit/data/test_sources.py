from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from odpipe.core.manifest import folder_digest
from odpipe.data.download import ArchiveTooLargeError
from odpipe.data.sources import copy_local, ingest
from odpipe.data.synthetic import generate


def test_local_source_copies_images_and_annotations_only(spec, tmp_path: Path) -> None:
    src = tmp_path / "labelimg"
    generate(spec, src / "batch1")
    (src / "notes.md").write_text("not data")
    (src / ".DS_Store").write_bytes(b"\0")
    (src / "batch1" / "LICENSE").write_text("CC-BY")
    left_out = copy_local(src, tmp_path / "raw")  # each file left behind is named, with why
    assert left_out == [
        {"file": ".DS_Store", "reason": "os_litter", "why": "hidden file or OS litter"},
        {"file": "batch1/LICENSE", "reason": "not_data", "why": "not an image or annotation file (no extension)"},
        {"file": "notes.md", "reason": "not_data", "why": "not an image or annotation file (.md)"},
    ]
    copied = sorted(p.relative_to(tmp_path / "raw").as_posix() for p in (tmp_path / "raw").rglob("*") if p.is_file())
    assert copied == sorted(
        p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file() and p.suffix in (".jpg", ".xml")
    )


def test_bad_sources_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing"):
        ingest({"source": "local", "path": str(tmp_path / "missing")}, tmp_path / "raw", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        ingest({"source": "local", "path": str(tmp_path / "empty")}, tmp_path / "raw", tmp_path)
    with pytest.raises(ValueError, match="ftp"):
        ingest({"source": "ftp"}, tmp_path / "raw", tmp_path)


def test_an_archive_source_over_max_extract_gb_is_refused_before_unpacking(spec, tmp_path: Path) -> None:
    generate(spec, tmp_path / "dataset")
    archive = shutil.make_archive(str(tmp_path / "shapes"), "zip", tmp_path / "dataset")
    dataset = {"source": "archive", "path": archive, "max_extract_gb": 1e-6}  # 1000 bytes
    with pytest.raises(ArchiveTooLargeError, match=r"shapes\.zip: would unpack to .* bytes.*dataset\.max_extract_gb"):
        ingest(dataset, tmp_path / "raw", tmp_path / "cache")
    assert not (tmp_path / "raw").exists()
    ingest({**dataset, "max_extract_gb": 1}, tmp_path / "raw", tmp_path / "cache")
    assert len(list((tmp_path / "raw").rglob("*.jpg"))) == spec.num_images


def test_the_data_version_follows_bytes_and_names_not_location(tmp_path: Path) -> None:
    first = tmp_path / "a"
    (first / "sub").mkdir(parents=True)
    (first / "train.tfrecord").write_bytes(b"records")
    (first / "sub" / "val.tfrecord").write_bytes(b"more")
    copy = tmp_path / "b"
    shutil.copytree(first, copy)
    assert folder_digest(copy) == folder_digest(first)
    (copy / "train.tfrecord").write_bytes(b"Records")
    assert folder_digest(copy) != folder_digest(first)
    (copy / "train.tfrecord").write_bytes(b"records")
    (copy / "sub" / "val.tfrecord").rename(copy / "sub" / "test.tfrecord")
    assert folder_digest(copy) != folder_digest(first)
