"""Archive sources against a real HTTP server on 127.0.0.1, and hostile archives."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from odpipe.download import UnsafeArchiveError, download, extract
from odpipe.sources import ingest
from odpipe.synthetic import generate

from .conftest import RangeHandler, serve


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


def test_download_is_verified_cached_and_resumed(server, tmp_path: Path) -> None:
    url, root = server
    payload = bytes(range(256)) * 4000
    (root / "data.bin").write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    cache = tmp_path / "cache"

    path = download(f"{url}/data.bin", cache, digest)
    assert path.read_bytes() == payload and not list(cache.glob("*.part"))
    download(f"{url}/data.bin", cache, digest)
    assert RangeHandler.requests == ["full"], "a cached, verified file is not fetched again"

    path.unlink()
    (cache / "data.bin.part").write_bytes(payload[:1000])  # an interrupted earlier download
    assert download(f"{url}/data.bin", cache, digest).read_bytes() == payload
    assert RangeHandler.requests[-1] == "bytes=1000-"


def test_a_checksum_mismatch_is_an_error_and_leaves_nothing(server, tmp_path: Path) -> None:
    url, root = server
    (root / "data.bin").write_bytes(b"tampered")
    with pytest.raises(ValueError, match="sha256"):
        download(f"{url}/data.bin", tmp_path / "cache", "0" * 64)
    assert not list((tmp_path / "cache").iterdir())


def test_archive_source_from_a_url_lands_in_raw(server, spec, tmp_path: Path) -> None:
    url, root = server
    generate(spec, tmp_path / "dataset" / "images")
    _zip_of(tmp_path / "dataset", root / "shapes.zip")
    ingest({"source": "archive", "path": f"{url}/shapes.zip"}, tmp_path / "raw", tmp_path / "cache")
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
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_hostile_zip_members_are_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../evil.txt", "x")
    with pytest.raises(UnsafeArchiveError, match="outside"):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()
