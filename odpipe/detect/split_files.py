"""Kept samples written to their split's JSON Lines file as cleaning settles them, so that
memory does not grow with the dataset.

A sample's split depends on nothing but its own group (see :mod:`odpipe.data.splitting`), with one
exception: with a ``group_pattern`` and VOC lists, an image listed later may pin its whole group.
Each row therefore waits in a temporary SQLite table (on disk beyond a small cache), with its
split when it is already known, until every sample is in; then the waiting groups are settled
and each file is written in name order, the order :func:`~odpipe.data.splitting.split_images` gives.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from odpipe.core.boxes import SIZE_BUCKETS, size_bucket
from odpipe.core.files import jsonl_line, key_name, name_key, scratch_db, write_lines
from odpipe.data.annotations import Annotation, annotation_from_dict, annotation_to_dict
from odpipe.data.splitting import (
    SPLITS,
    check_not_empty,
    check_ratios,
    file_name,
    group_key,
    group_split,
    listed_split,
    pin_conflict,
    unmatched_pattern,
)


@dataclass(frozen=True)
class Sample:
    """A usable image: its name (relative path) in the cleaned folder, its cleaned annotation."""

    image: str
    annotation: Annotation
    sha256: str
    source: str  # the input file's name, which differs from ``image`` when converted to JPEG


@dataclass
class SplitTally:
    """What the report counts of the kept samples, by split, gathered one sample at a time."""

    group_pattern: str | None = None
    images: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    boxes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    boxes_per_class: dict[str, Counter] = field(default_factory=lambda: {s: Counter() for s in SPLITS})
    box_sizes: dict[str, int] = field(default_factory=lambda: {name: 0 for name, _ in SIZE_BUCKETS})
    group_pattern_matches: int = 0

    def add(self, split: str, annotation: Annotation) -> None:
        self.images[split] += 1
        self.boxes[split] += len(annotation.boxes)
        self.boxes_per_class[split].update(b.label for b in annotation.boxes)
        for box in annotation.boxes:
            self.box_sizes[size_bucket((box.xmax - box.xmin) * (box.ymax - box.ymin))] += 1
        if self.group_pattern and re.search(self.group_pattern, file_name(annotation.filename)):
            self.group_pattern_matches += 1

    @property
    def kept(self) -> int:
        return sum(self.images.values())


class SplitFiles:
    """``<split>.jsonl`` of the kept samples, added one at a time and written by :meth:`write`.

    ``lists`` pins images by input name (VOC ImageSets), as
    :func:`~odpipe.data.splitting.pins_from_lists` does, and the splits are those of
    :func:`~odpipe.data.splitting.split_images`, errors included.
    """

    def __init__(self, lists: Mapping[str, str], ratios: Mapping[str, float], seed: int, group_pattern: str | None):
        check_ratios(ratios)
        self.lists, self.ratios, self.seed, self.group_pattern = lists, dict(ratios), seed, group_pattern
        self._db = scratch_db()
        # split: known when the sample is added, else NULL until its group (grp) is settled
        self._db.execute("CREATE TABLE kept (name BLOB UNIQUE, split TEXT, grp TEXT, pin TEXT, row TEXT)")
        self._added = self._matched = 0

    def add(self, sample: Sample) -> None:
        """A kept sample; only a group that lists may pin through other images waits."""
        key = group_key(sample.image, sample.sha256, self.group_pattern)
        self._added += 1
        self._matched += key.startswith("name:")
        listed = self.lists.get(sample.source)
        pin = listed_split(listed, key, self.ratios, self.seed) if listed else None
        waits = bool(self.lists) and key.startswith("name:")
        split = None if waits else group_split(key, [pin] if pin else [], self.ratios, self.seed)
        row = jsonl_line(annotation_to_dict(sample.annotation))
        self._db.execute(
            "INSERT INTO kept VALUES (?, ?, ?, ?, ?)", (name_key(sample.image), split, key if waits else None, pin, row)
        )

    def first(self, count: int) -> list[Annotation]:
        """The first ``count`` samples added (for the report's grid)."""
        rows = self._db.execute("SELECT row FROM kept ORDER BY rowid LIMIT ?", (count,))
        return [annotation_from_dict(json.loads(row)) for (row,) in rows]

    def write(self, out: Path) -> SplitTally:
        """Settle the waiting groups, check the splits as ``split_images`` does, and write each
        file (all three, even empty) in name order; the report's counts come back."""
        self._settle_groups()
        self._check_pattern()
        sizes = dict(self._db.execute("SELECT split, count(*) FROM kept GROUP BY split").fetchall())
        check_not_empty({s: sizes.get(s, 0) for s in SPLITS}, self.ratios)
        self._db.execute("CREATE INDEX kept_by_split ON kept (split, name)")
        tally = SplitTally(self.group_pattern)
        for split in SPLITS:
            write_lines(self._rows(split, tally), out / f"{split}.jsonl")
        return tally

    def _rows(self, split: str, tally: SplitTally) -> Iterator[str]:
        for (row,) in self._db.execute("SELECT row FROM kept WHERE split = ? ORDER BY name", (split,)):
            tally.add(split, annotation_from_dict(json.loads(row)))
            yield row

    def _settle_groups(self) -> None:
        """Each waiting group to the one split its images are pinned to, else by its hash; the
        groups in the order of their first name, as ``split_images`` meets them."""
        waiting = "SELECT grp FROM kept WHERE split IS NULL GROUP BY grp ORDER BY min(name)"
        groups = [key for (key,) in self._db.execute(waiting)]
        if groups:
            self._db.execute("CREATE INDEX kept_by_group ON kept (grp)")
        for key in groups:
            pins = "SELECT DISTINCT pin FROM kept WHERE grp = ? AND pin IS NOT NULL ORDER BY pin"
            pinned = [pin for (pin,) in self._db.execute(pins, (key,))]
            if len(pinned) > 1:
                names = self._db.execute("SELECT name FROM kept WHERE grp = ? ORDER BY name", (key,))
                raise pin_conflict(key, pinned, [key_name(name) for (name,) in names])
            split = group_split(key, pinned, self.ratios, self.seed)
            self._db.execute("UPDATE kept SET split = ? WHERE grp = ?", (split, key))

    def _check_pattern(self) -> None:
        """A pattern that matched input images but none of those kept is an error, as it is
        before cleaning."""
        if self.group_pattern and self._added and not self._matched:
            names = (file_name(key_name(name)) for (name,) in self._db.execute("SELECT name FROM kept"))
            raise unmatched_pattern(self.group_pattern, self._added, min(names))
