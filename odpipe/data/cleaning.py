"""The cleaning vocabulary every task shares: a decision on one file (:class:`Issue`), what a
worker learnt of an image (:class:`Inspected`), the first copy of each content hash
(:class:`FirstCopies`), and the report's tables of decisions and counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from odpipe.core.files import key_name, name_key, scratch_db
from odpipe.core.images import Normalised


@dataclass(frozen=True)
class Issue:
    """A decision taken on an input file: ``reason`` is a stable code, ``detail`` for people."""

    file: str
    reason: str
    detail: str


@dataclass(frozen=True)
class Inspected:
    """What a worker learnt of one image file: its content hash and either the image ready to
    train on (its size and changes; its bytes are in the staging file), or why it cannot be
    used (``reason``, ``detail``)."""

    sha256: str
    image: Normalised | None
    converted: bool = False
    reason: str = ""
    detail: str = ""


class FirstCopies:
    """The first kept image of each content hash, in a temporary SQLite file: a dict of them
    would grow with the dataset."""

    def __init__(self) -> None:
        self._db = scratch_db()
        self._db.execute("CREATE TABLE first (sha256 TEXT PRIMARY KEY, image BLOB)")

    def get(self, sha256: str) -> str | None:
        row = self._db.execute("SELECT image FROM first WHERE sha256 = ?", (sha256,)).fetchone()
        return key_name(row[0]) if row else None

    def add(self, sha256: str, image: str) -> None:
        self._db.execute("INSERT INTO first VALUES (?, ?)", (sha256, name_key(image)))


def decisions(issues: Mapping[str, Sequence[Mapping]], max_rows: int) -> list[str]:
    """The report's last part: each decision taken on a file, by kind, the first ``max_rows`` of each."""
    lines = ["## Decisions", ""]
    for kind, entries in issues.items():
        lines.append(f"### {kind} ({len(entries)})")
        lines += [f"- `{e['file']}`: **{e['reason']}**, {e['detail']}" for e in entries[:max_rows]]
        if len(entries) > max_rows:
            lines.append(f"- ... {len(entries) - max_rows} more in issues.json")
        lines.append("")
    return lines


def count_table(header: tuple[str, str], counts: Mapping[str, int], empty: str) -> list[str]:
    """A two-column Markdown table of counts, or one sentence when there is nothing to count."""
    if not counts:
        return [empty, ""]
    return [f"| {header[0]} | {header[1]} |", "|---|---|", *(f"| {k} | {v} |" for k, v in counts.items()), ""]
