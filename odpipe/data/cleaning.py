"""The cleaning vocabulary every task shares: a decision on one file (:class:`Issue`), what a
worker learnt of an image (:class:`Inspected`), the first copy of each content hash
(:class:`FirstCopies`), and the report's tables of decisions and counts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
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


# Why a file under the dataset folder is no input; ingest's codes, then the readers'.
NOT_INPUT = {
    "os_litter": "hidden file or OS litter",
    "not_data": "not an image or annotation file",
    "class_table": "class names read from it",
    "split_list": "split lists read from it",
    "not_read": "no reader of this format reads it",
}


class Ledger:
    """Where each file found under ``dataset.path`` ended: kept, dropped with a reason, or not
    an input with why. Ingest's ``left_out`` (files it did not bring in) are placed from the
    start; a file no reader placed is not an input (``not_read``), so the places always add up
    to the files found, and a file placed twice keeps its first place (an image's decision
    before what its annotation file's reader said)."""

    def __init__(self, found: Iterable[str], left_out: Iterable[Mapping[str, str]] = ()) -> None:
        self._places: dict[str, tuple[str, str, str]] = {}
        for entry in left_out:
            self.not_input(entry["file"], entry.get("reason", "not_data"), entry["why"])
        self._unplaced = [f for f in found if f not in self._places]

    def kept(self, file: str) -> None:
        self._places.setdefault(file, ("kept", "", ""))

    def dropped(self, file: str, reason: str, detail: str = "") -> None:
        self._places.setdefault(file, ("dropped", reason, detail))

    def not_input(self, file: str, reason: str, detail: str = "") -> None:
        self._places.setdefault(file, ("not_input", reason, detail or NOT_INPUT[reason]))

    def close(self, unread: str) -> tuple[dict, list[Issue]]:
        """The report's ``files`` counts and the not-input files one by one (for issues.json);
        a file no one placed is ``not_read``, ``unread`` saying by what."""
        for file in self._unplaced:
            self.not_input(file, "not_read", unread)
        dropped: Counter = Counter()
        not_input: Counter = Counter()
        listed = []
        for file, (place, reason, detail) in self._places.items():
            if place == "dropped":
                dropped[reason] += 1
            elif place == "not_input":
                not_input[reason] += 1
                listed.append(Issue(file, reason, detail))
        kept = len(self._places) - sum(dropped.values()) - sum(not_input.values())
        counts = {
            "found": len(self._places),
            "kept": kept,
            "dropped": dict(sorted(dropped.items())),
            "not_input": dict(sorted(not_input.items())),
        }
        return counts, sorted(listed, key=lambda issue: issue.file)


def files_table(files: Mapping) -> list[str]:
    """The report's account of every file found under the dataset folder."""
    rows = [("kept", files["kept"])]
    rows += [(f"dropped: {reason}", n) for reason, n in files["dropped"].items()]
    rows += [(f"not an input: {reason}", n) for reason, n in files["not_input"].items()]
    return [
        f"## Files ({files['found']} found under dataset.path)",
        "",
        *count_table(("place", "files"), dict(rows), "No file found."),
    ]
