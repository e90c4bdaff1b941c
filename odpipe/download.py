"""Fetching and unpacking dataset archives: resumable, atomic, verified, cached, and safe.

A download goes to ``<name>.part`` (resumed with an HTTP Range request when the server allows)
and is renamed into place only once complete and matching the expected sha256, so an
interrupted or corrupted transfer never looks like a finished one. Extraction refuses any
member that would land outside its target folder (``../``, absolute paths, links).
"""

from __future__ import annotations

import os
import tarfile
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from tqdm import tqdm

from odpipe.manifest import sha256_file

CHUNK = 1 << 16


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the extraction folder."""


def archive_name(url: str) -> str:
    name = PurePosixPath(unquote(urlparse(url).path)).name
    if not name:
        raise ValueError(f"{url}: the URL names no file")
    return name


def _verify(path: Path, sha256: str | None, source: str) -> None:
    if sha256 and (actual := sha256_file(path)) != sha256.lower():
        path.unlink()
        raise ValueError(f"{source}: sha256 is {actual}, expected {sha256}")


def download(url: str, cache_dir: Path, sha256: str | None = None, timeout: float = 60.0) -> Path:
    """The file at ``url``, from ``cache_dir`` when already there (and matching ``sha256``)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / archive_name(url)
    if target.exists() and (not sha256 or sha256_file(target) == sha256.lower()):
        return target
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        resumed = have and response.status == 206
        total = int(response.headers.get("Content-Length", 0)) + (have if resumed else 0)
        with (
            part.open("ab" if resumed else "wb") as out,
            tqdm(
                total=total or None, initial=have if resumed else 0, unit="B", unit_scale=True, desc=target.name
            ) as bar,
        ):
            while block := response.read(CHUNK):
                out.write(block)
                bar.update(len(block))
    _verify(part, sha256, url)
    os.replace(part, target)
    return target


def _inside(root: Path, member: str) -> bool:
    return (root / member).resolve().is_relative_to(root.resolve())


def extract(archive: Path, dst: Path) -> None:
    """Unpack a .zip, .tar, .tar.gz or .tgz into ``dst``, refusing unsafe members."""
    dst.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                if PurePosixPath(member).is_absolute() or not _inside(dst, member):
                    raise UnsafeArchiveError(f"{archive}: member {member!r} would be written outside {dst}")
            zf.extractall(dst)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            for member in tf.getmembers():
                if not _inside(dst, member.name) or (
                    (member.issym() or member.islnk())
                    and not _inside(dst, str(Path(member.name).parent / member.linkname))
                ):
                    raise UnsafeArchiveError(f"{archive}: member {member.name!r} would escape {dst}")
            tf.extractall(dst, filter="data")
    else:
        raise ValueError(f"{archive}: not a zip or tar archive")


def is_url(location: str) -> bool:
    return urlparse(location).scheme in ("http", "https")


def fetch_archive(location: str, cache_dir: Path, sha256: str | None, key: str = "dataset.path") -> Path:
    """A local archive path as it is (checked against ``sha256``), or a URL downloaded.
    ``key`` is the config key the location came from, for the error message."""
    if is_url(location):
        return download(location, cache_dir, sha256)
    path = Path(location).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{key} {path} is not a file")
    if sha256 and (actual := sha256_file(path)) != sha256.lower():
        raise ValueError(f"{path}: sha256 is {actual}, expected {sha256}")
    return path
