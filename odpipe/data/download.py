"""Fetching and unpacking dataset archives: resumable, atomic, verified, cached, and safe.

The cache holds each URL in its own folder, ``<cache>/<sha256 of the URL, 16 hex>/<file name>``:
two URLs whose paths end in the same name (``.../v1/data.zip``, ``.../v2/data.zip``) are
different files, and the file keeps its real name for people and for code that looks at its
suffix.

A download goes to ``<name>.part`` and is renamed into place only once complete and matching
the expected sha256, so an interrupted or corrupted transfer never looks like a finished one.
An interrupted download resumes only when it can be proved to continue the same file: the
server's validator (a strong ETag, else a strong Last-Modified date) is recorded beside the
part in ``<name>.part.json`` when the transfer starts, and the resume asks for ``Range`` with
``If-Range: <validator>``; a server whose file has changed answers 200 with the whole new file,
which replaces the part instead of being spliced onto it. A part the server calls complete
(416, Range Not Satisfiable) is kept only if it checks out, else fetched again.

Extraction refuses any member that would land outside its target folder (``../``, absolute
paths, links), and any archive whose members would unpack to more than a cap (zip bombs, or
the wrong, huge archive), before writing anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
import urllib.error
import urllib.request
import zipfile
from datetime import datetime
from email.message import Message
from email.utils import parsedate_to_datetime
from http.client import HTTPResponse
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from tqdm import tqdm

from odpipe.core.files import write_json
from odpipe.core.manifest import sha256_file

CHUNK = 1 << 16
GB = 1_000_000_000  # the unit of the extraction caps in the config
URL_KEY_CHARS = 16  # of the URL's sha256: a cache folder name, short enough to read, unique enough
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)")


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the extraction folder."""


class IncompleteDownloadError(OSError):
    """The connection closed before the reply's Content-Length arrived (the part is kept, to resume)."""


class ArchiveTooLargeError(ValueError):
    """An archive's members would unpack to more bytes than the configured cap."""


def archive_name(url: str) -> str:
    name = PurePosixPath(unquote(urlparse(url).path)).name
    if not name:
        raise ValueError(f"{url}: the URL names no file")
    return name


def cache_path(url: str, cache_dir: Path) -> Path:
    """Where ``url`` is cached: keyed by the whole URL (query included), named as the file."""
    key = hashlib.sha256(url.encode()).hexdigest()[:URL_KEY_CHARS]
    return cache_dir / key / archive_name(url)


def _sidecar(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _discard(part: Path) -> None:
    """Forget a partial download: its bytes and the validator they were fetched under."""
    part.unlink(missing_ok=True)
    _sidecar(part).unlink(missing_ok=True)


def _http_date(value: str | None) -> datetime | None:
    try:
        return parsedate_to_datetime(value) if value else None
    except (TypeError, ValueError):
        return None


def validator(headers: Message) -> str | None:
    """What ``If-Range`` may quote to mean "this very version of the file" (RFC 9110 13.1.5).

    A strong ETag, else a Last-Modified date that is itself strong: at least a second before
    the reply's Date, since two versions written within the same second share their date. A
    weak ETag (``W/"..."``) only promises equivalent content, not identical bytes, so it cannot
    guard a byte-range splice. None when the reply offers neither: such a download is not resumed.
    """
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    modified, date = headers.get("Last-Modified"), headers.get("Date")
    modified_at, date_at = _http_date(modified), _http_date(date)
    if modified_at and date_at and (date_at - modified_at).total_seconds() >= 1:
        return modified
    return None


def content_range(header: str | None) -> tuple[int | None, int | None]:
    """``(first byte, total size)`` of a ``Content-Range`` header; None for what it leaves
    out (``bytes */1234`` in a 416 has no first byte) or when there is no such header."""
    match = _CONTENT_RANGE.fullmatch((header or "").strip())
    if not match:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None), (None if total == "*" else int(total))


def _recorded_validator(part: Path) -> str | None:
    """The validator a partial download was started under; None when there is no part to
    resume or it was started without one (then its bytes cannot be trusted to continue)."""
    sidecar = _sidecar(part)
    if not (part.is_file() and sidecar.is_file()):
        return None
    return json.loads(sidecar.read_text()).get("validator")


def _record_validator(part: Path, url: str, headers: Message) -> None:
    """Note, before the first byte of a fresh part is written, what version of ``url`` it holds."""
    if tag := validator(headers):
        write_json({"url": url, "validator": tag}, _sidecar(part))
    else:
        _sidecar(part).unlink(missing_ok=True)


def _continues(headers: Message, have: int, recorded: str) -> bool:
    """Whether a 206 reply carries the bytes right after the ``have`` already in the part, of
    the version recorded: a server that ignores ``If-Range`` would otherwise splice versions."""
    start, _ = content_range(headers.get("Content-Range"))
    return start == have and validator(headers) in (None, recorded)


def _matches(path: Path, sha256: str | None) -> bool:
    return not sha256 or sha256_file(path) == sha256.lower()


def _verify(part: Path, sha256: str | None, source: str) -> None:
    if sha256 and (actual := sha256_file(part)) != sha256.lower():
        _discard(part)
        raise ValueError(f"{source}: sha256 is {actual}, expected {sha256}")


def _complete_after_416(part: Path, sha256: str | None, headers: Message) -> bool:
    """A 416 to ``Range: bytes=<size of part>-`` means the part may already hold the whole
    file (a run stopped between the last byte and the rename). Trust it only if it matches
    ``sha256``, or without one, if its size is the total the server gives (``bytes */total``)."""
    if sha256:
        return _matches(part, sha256)
    _, total = content_range(headers.get("Content-Range"))
    return total == part.stat().st_size


def _stream(response: HTTPResponse, part: Path, url: str, have: int) -> None:
    """Append the reply's body to ``part`` (after its first ``have`` bytes; none: start it anew).
    A body cut short is an error: ``HTTPResponse.read(n)`` reports a dropped connection as a
    plain end of data, and a short file must not be renamed into place as a whole one."""
    length = response.headers.get("Content-Length")
    total = have + int(length) if length else None
    received = have
    with (
        part.open("ab" if have else "wb") as out,
        tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=part.name.removesuffix(".part")) as bar,
    ):
        if not have:  # the part is empty now: a validator written from here on describes all its bytes
            _record_validator(part, url, response.headers)
        while block := response.read(CHUNK):
            out.write(block)
            bar.update(len(block))
            received += len(block)
    if total is not None and received < total:
        raise IncompleteDownloadError(
            f"{url}: the connection closed after {received} of {total} bytes; "
            "running again resumes where the server allows"
        )


def _transfer(url: str, part: Path, sha256: str | None, timeout: float) -> bool:
    """Complete ``part`` from ``url``, resuming it when provably the same file. False when the
    part turned out unusable (a 416 it does not match, a 206 that does not continue it): the
    caller discards it and transfers again from zero."""
    recorded = _recorded_validator(part)
    if recorded is None:
        _discard(part)
    have = part.stat().st_size if recorded else 0
    headers = {"Range": f"bytes={have}-", "If-Range": recorded} if have and recorded else {}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code == 416 and have:
            return _complete_after_416(part, sha256, error.headers)
        raise
    with response:
        if have and response.status == 206 and not _continues(response.headers, have, recorded):
            return False
        _stream(response, part, url, have if response.status == 206 else 0)
    _verify(part, sha256, url)
    return True


def download(url: str, cache_dir: Path, sha256: str | None = None, timeout: float = 60.0) -> Path:
    """The file at ``url``, from ``cache_dir`` when already there (and matching ``sha256``)."""
    target = cache_path(url, cache_dir)
    if target.exists() and _matches(target, sha256):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    if not _transfer(url, part, sha256, timeout):
        _discard(part)
        _transfer(url, part, sha256, timeout)  # no part left to resume: a 416 or 206 is an error now
    os.replace(part, target)
    _sidecar(part).unlink(missing_ok=True)
    return target


def _inside(root: Path, member: str) -> bool:
    return (root / member).resolve().is_relative_to(root.resolve())


def _refuse_oversize(archive: Path, total: int, max_bytes: int, key: str) -> None:
    """Sizes are the members' declared ones: zipfile stops reading a member at its declared
    size and a tar member is exactly its size, so the check bounds what extraction writes."""
    if total > max_bytes:
        raise ArchiveTooLargeError(
            f"{archive}: would unpack to {total / GB:.3g} GB ({total} bytes), more than the "
            f"{max_bytes / GB:.3g} GB cap; raise {key} if this archive is the one you meant"
        )


def extract(archive: Path, dst: Path, max_bytes: int, key: str = "dataset.max_extract_gb") -> None:
    """Unpack a .zip, .tar, .tar.gz or .tgz into ``dst``, refusing unsafe members and archives
    that unpack to more than ``max_bytes`` (``key`` names the setting, for the error)."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for member in members:
                if PurePosixPath(member.filename).is_absolute() or not _inside(dst, member.filename):
                    raise UnsafeArchiveError(f"{archive}: member {member.filename!r} would be written outside {dst}")
            _refuse_oversize(archive, sum(member.file_size for member in members), max_bytes, key)
            dst.mkdir(parents=True, exist_ok=True)
            zf.extractall(dst)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for member in members:
                if not _inside(dst, member.name) or (
                    (member.issym() or member.islnk())
                    and not _inside(dst, str(Path(member.name).parent / member.linkname))
                ):
                    raise UnsafeArchiveError(f"{archive}: member {member.name!r} would escape {dst}")
            _refuse_oversize(archive, sum(member.size for member in members if member.isreg()), max_bytes, key)
            dst.mkdir(parents=True, exist_ok=True)
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
