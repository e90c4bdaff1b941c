"""Archive sources against a real HTTP server on 127.0.0.1, and hostile archives."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import time
import zipfile
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import pytest

from odpipe.data.download import (
    GB,
    ArchiveTooLargeError,
    IncompleteDownloadError,
    UnsafeArchiveError,
    cache_path,
    download,
    extract,
)
from odpipe.data.sources import ingest
from odpipe.data.synthetic import generate
from tests.conftest import RangeHandler, serve


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "served"
    root.mkdir()
    with serve(root) as url:
        yield url, root


def _zip_of(folder: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w") as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, path.relative_to(folder).as_posix())
    return out


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _interrupted(url: str, cache: Path, after: int) -> Path:
    """Start a download the server cuts after ``after`` bytes; the part it leaves behind."""
    RangeHandler.cut_after = after
    with pytest.raises(IncompleteDownloadError, match=f"closed after {after} of"):
        download(url, cache)
    RangeHandler.cut_after = None
    return cache_path(url, cache).with_name("data.bin.part")


def test_download_is_verified_and_cached(server, tmp_path: Path) -> None:
    url, root = server
    payload = bytes(range(256)) * 4000
    (root / "data.bin").write_bytes(payload)
    cache = tmp_path / "cache"

    path = download(f"{url}/data.bin", cache, _digest(payload))
    assert path.name == "data.bin" and path.read_bytes() == payload
    assert [p.name for p in cache.rglob("*") if p.is_file()] == ["data.bin"], "no part or sidecar left"
    download(f"{url}/data.bin", cache, _digest(payload))
    assert RangeHandler.requests == ["full"], "a cached, verified file is not fetched again"


def test_two_urls_with_one_file_name_are_cached_apart(server, tmp_path: Path) -> None:
    url, root = server
    for version in ("v1", "v2"):
        (root / version).mkdir()
        (root / version / "data.zip").write_bytes(version.encode() * 100)
    first = download(f"{url}/v1/data.zip", tmp_path / "cache")
    second = download(f"{url}/v2/data.zip", tmp_path / "cache")
    assert first.name == second.name == "data.zip" and first != second
    assert (first.read_bytes(), second.read_bytes()) == (b"v1" * 100, b"v2" * 100)
    assert RangeHandler.requests == ["full", "full"]


@pytest.mark.parametrize("etag", [True, False], ids=["etag", "last-modified"])
def test_an_interrupted_download_resumes_under_if_range(server, tmp_path: Path, etag: bool) -> None:
    url, root = server
    payload = bytes(range(256)) * 4000
    (root / "data.bin").write_bytes(payload)
    an_hour_ago = time.time() - 3600  # a Last-Modified date is a strong validator only once past
    os.utime(root / "data.bin", (an_hour_ago, an_hour_ago))
    RangeHandler.send_etag = etag

    part = _interrupted(f"{url}/data.bin", tmp_path / "cache", 1000)
    assert part.stat().st_size == 1000
    assert download(f"{url}/data.bin", tmp_path / "cache", _digest(payload)).read_bytes() == payload
    assert RangeHandler.requests == ["full", "bytes=1000-"]
    expected = f'"{_digest(payload)[:16]}"' if etag else formatdate(an_hour_ago, usegmt=True)
    assert RangeHandler.if_ranges[-1] == expected


@pytest.mark.parametrize(
    "honour_if_range, requests",
    [
        (True, ["full", "bytes=1000-"]),  # asked to resume, answered with the whole new file
        (False, ["full", "bytes=1000-", "full"]),  # a 206 of another version (its ETag) is refused
    ],
)
def test_a_file_changed_between_attempts_is_fetched_anew_not_spliced(
    server, tmp_path: Path, honour_if_range: bool, requests: list[str]
) -> None:
    url, root = server
    (root / "data.bin").write_bytes(b"a" * 5000)
    _interrupted(f"{url}/data.bin", tmp_path / "cache", 1000)
    (root / "data.bin").write_bytes(b"b" * 5000)  # same size, new version: no sha256 would notice
    RangeHandler.honour_if_range = honour_if_range
    assert download(f"{url}/data.bin", tmp_path / "cache").read_bytes() == b"b" * 5000
    assert RangeHandler.requests == requests


def test_a_download_without_a_validator_is_not_resumed(server, tmp_path: Path) -> None:
    url, root = server
    (root / "data.bin").write_bytes(b"a" * 5000)
    RangeHandler.send_etag = RangeHandler.send_last_modified = False
    _interrupted(f"{url}/data.bin", tmp_path / "cache", 1000)
    (root / "data.bin").write_bytes(b"b" * 5000)
    assert download(f"{url}/data.bin", tmp_path / "cache").read_bytes() == b"b" * 5000
    assert RangeHandler.requests == ["full", "full"]


@pytest.mark.parametrize(
    "tail, with_sha256, resumed",
    [
        ("rest", False, True),  # complete: its size is the total the 416 gives
        ("rest", True, True),  # complete: its sha256 matches
        ("junk", True, False),  # the right size, the wrong bytes: fetched again
        ("rest+junk", False, False),  # longer than the file: fetched again
    ],
)
def test_a_part_answered_416_is_kept_only_if_it_checks_out(
    server, tmp_path: Path, tail: str, with_sha256: bool, resumed: bool
) -> None:
    url, root = server
    payload = bytes(range(256)) * 40
    (root / "data.bin").write_bytes(payload)
    part = _interrupted(f"{url}/data.bin", tmp_path / "cache", 1000)
    rest = payload[1000:]
    with part.open("ab") as out:  # as if the last byte arrived and the run stopped before the rename
        out.write({"rest": rest, "junk": b"\0" * len(rest), "rest+junk": rest + b"\0"}[tail])
    size = part.stat().st_size

    path = download(f"{url}/data.bin", tmp_path / "cache", _digest(payload) if with_sha256 else None)
    assert path.read_bytes() == payload
    assert RangeHandler.requests == ["full", f"bytes={size}-"] + ([] if resumed else ["full"])


def test_a_checksum_mismatch_is_an_error_and_leaves_nothing(server, tmp_path: Path) -> None:
    url, root = server
    (root / "data.bin").write_bytes(b"tampered")
    with pytest.raises(ValueError, match="sha256"):
        download(f"{url}/data.bin", tmp_path / "cache", "0" * 64)
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_archive_source_from_a_url_lands_in_raw(server, spec, tmp_path: Path) -> None:
    url, root = server
    generate(spec, tmp_path / "dataset" / "images")
    _zip_of(tmp_path / "dataset", root / "shapes.zip")
    dataset = {"source": "archive", "path": f"{url}/shapes.zip", "max_extract_gb": 1}
    ingest(dataset, tmp_path / "raw", tmp_path / "cache")
    assert len(list((tmp_path / "raw" / "images").glob("*.jpg"))) == spec.num_images


def _tar_with(member: tarfile.TarInfo, out: Path, data: bytes = b"x") -> Path:
    with tarfile.open(out, "w:gz") as tf:
        tf.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return out


def _member(name: str, **attrs) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 1
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


@pytest.mark.parametrize(
    "make",
    [
        lambda d: _tar_with(_member("../evil.txt"), d / "a.tar.gz"),
        lambda d: _tar_with(_member("/tmp/evil.txt"), d / "b.tar.gz"),
        lambda d: _tar_with(_member("link", type=tarfile.SYMTYPE, linkname="/etc/passwd", size=0), d / "c.tar.gz"),
        lambda d: _tar_with(_member("ok/../../evil.txt"), d / "d.tar.gz"),
    ],
)
def test_hostile_tar_members_are_refused(tmp_path: Path, make) -> None:
    archive = make(tmp_path)
    with pytest.raises(UnsafeArchiveError, match="escape"):
        extract(archive, tmp_path / "out", GB)
    assert not (tmp_path / "evil.txt").exists()


def test_hostile_zip_members_are_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../evil.txt", "x")
    with pytest.raises(UnsafeArchiveError, match="outside"):
        extract(archive, tmp_path / "out", GB)
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_an_archive_over_the_size_cap_is_refused_before_writing(tmp_path: Path, kind: str) -> None:
    archive = tmp_path / f"big.{kind}"
    data = b"\0" * 3000  # compresses to almost nothing: the declared sizes are what count
    if kind == "zip":
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("a.bin", data)
            zf.writestr("b.bin", data)
    else:
        with tarfile.open(archive, "w:gz") as tf:
            for name in ("a.bin", "b.bin"):
                tf.addfile(_member(name, size=len(data)), io.BytesIO(data))
    assert archive.stat().st_size < 1000
    with pytest.raises(
        ArchiveTooLargeError, match=rf"big\.{kind}: would unpack to .*\(6000 bytes\).*dataset\.max_extract_gb"
    ):
        extract(archive, tmp_path / "out", 5999)
    assert not (tmp_path / "out").exists()
    extract(archive, tmp_path / "out", 6000)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.bin", "b.bin"]
