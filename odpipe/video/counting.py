"""Counting tracked objects that cross lines or enter and leave zones, without double counting.

Simple counters compare each box with the line frame by frame and so go wrong in four ways, each
handled here by one rule:

- an object standing on the line flickers from side to side and is counted again and again: points
  within a dead band of ``margin`` px never change a track's side, and a crossing must then be seen
  ``min_frames`` times on the new side before it counts;
- all unconfirmed ids are lumped together as one object: the caller passes confirmed tracks only and
  every track is keyed by its own id;
- a line near the frame edge never fires, because the object leaves the frame before the crossing is
  confirmed, and because a box clipped by the frame cannot get beyond the band: a pending crossing is
  confirmed when its track ends, and with ``frame_size`` the band is narrowed where the frame leaves no
  room for it;
- an object that stops on the line and gets a new id is counted again when it drives on: a track whose
  side was never seen outside the band cannot count;
- an object hidden by another while it crosses comes out on the far side under a new id, whose first
  side is already the new one, and is never counted: with ``frame_size``, a track that first shows up
  away from the frame edges (it did not come into the picture, it came out from behind something)
  takes over the state of a track that vanished away from the edges less than ``rejoin`` seconds
  before, within reach of where it reappears. The state moves, it is not copied: what the old id
  counted, the new one cannot count again. The class is not required to match: the part of an object
  that shows past whatever hides it is often taken for another class;
- so an object's counts are held under the class it has been detected as most over its whole life
  (detection scores summed per class, across every id it had), not the class of the frame in which it
  crossed: when that majority changes, its counts move to the new class (events of change -n and +n).

What a track adds to the counts is the ``mode``'s (each tested on scripted hovers, U-turns and
stop-and-go paths):

- ``net`` (the default): at most one count per track and line, in the direction from the side it
  was first seen on to the side it was last seen on, nothing when those are the same: people into
  a shop, each once, however long they lingered in the doorway. A crossing is counted when it is
  confirmed and taken back (an event of change -1) when the track crosses back, so the counts are
  right at every moment, not only once the track has ended;
- ``every``: each confirmed crossing, both ways: cars on a road, a door's traffic.

For a zone, a track is outside until first seen inside (an object that appears inside has entered),
so in either mode ``in - out`` over a zone is the number of tracks last seen inside it: its
occupancy. The dead band and ``min_frames`` filter flicker in both modes.

Direction convention (for the README): walking along a line from ``start`` to ``end`` on the image as
it is viewed (x to the right, y down), an object crossing from the left-hand side to the right-hand side
goes ``in``, the other way ``out``. A horizontal line from (0, 120) to (320, 120) thus counts objects
moving down the screen as ``in``; swap ``start`` and ``end`` to reverse it. For a zone, entering is
``in`` and leaving is ``out``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import numpy as np

from odpipe.video.trackers import Tracked

Point = tuple[float, float]
Direction = Literal["in", "out"]
MODES = ("net", "every")
ANCHORS = ("bottom_center", "center", "top_center")
_LINE_KEYS = {"name", "start", "end", "relative"}
_ZONE_KEYS = {"name", "points", "relative"}


def _as_point(value: object, where: str) -> Point:
    """``value`` as an (x, y) pair of finite floats; configs give lists, and a typo there (a string, a
    missing coordinate) must fail with the counter's name rather than deep inside the geometry."""
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"{where}: expected [x, y], got {value!r}")
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        raise ValueError(f"{where}: coordinates must be finite numbers, got {value!r}")
    return float(value[0]), float(value[1])


def _check_fractions(where: str, points: Iterable[Point]) -> None:
    """Relative coordinates are fractions of the frame: anything outside [0, 1] is a pixel value
    written by mistake in a ``relative`` entry."""
    if not all(0.0 <= v <= 1.0 for point in points for v in point):
        raise ValueError(f"{where}: relative coordinates must be within [0, 1]")


@dataclass(frozen=True)
class Line:
    """A finite counting segment in frame pixels (or fractions of the frame when ``relative``).

    Walking from ``start`` to ``end`` on the image as viewed (x right, y down), crossing from the
    left-hand side to the right-hand side is ``in``, the other way ``out``: a line from (0, 120) to
    (320, 120) counts objects moving down the screen as ``in``."""

    name: str
    start: Point
    end: Point
    relative: bool = False

    def __post_init__(self) -> None:
        where = f"line {self.name!r}"
        object.__setattr__(self, "start", _as_point(self.start, f"{where} start"))
        object.__setattr__(self, "end", _as_point(self.end, f"{where} end"))
        if self.start == self.end:
            raise ValueError(f"{where}: zero length (start and end are both {list(self.start)})")
        if self.relative:
            _check_fractions(where, (self.start, self.end))


@dataclass(frozen=True)
class Zone:
    """A polygon in frame pixels (or fractions of the frame when ``relative``): entering it is ``in``,
    leaving it ``out``."""

    name: str
    points: tuple[Point, ...]
    relative: bool = False

    def __post_init__(self) -> None:
        where = f"zone {self.name!r}"
        if isinstance(self.points, str) or not isinstance(self.points, Sequence):
            raise ValueError(f"{where}: expected a list of [x, y] points, got {self.points!r}")
        points = tuple(_as_point(p, f"{where} point {i}") for i, p in enumerate(self.points))
        object.__setattr__(self, "points", points)
        if len(points) < 3:
            raise ValueError(f"{where}: a polygon needs at least 3 points, got {len(points)}")
        if _area(points) == 0:
            raise ValueError(f"{where}: the points enclose no area")
        if self.relative:
            _check_fractions(where, points)


@dataclass(frozen=True)
class Event:
    """One confirmed crossing. ``frame`` (1-based) and ``time`` (seconds) are those of the first frame
    in which the anchor was seen beyond the band on the new side, not of the confirming frame, so that
    events line up with the video where the crossing happened. ``change`` is what it does to the count
    of ``direction`` and ``class_id``: +1 for a crossing, -1 when the ``net`` mode takes back a track's
    count (it crossed back); when the class a track is counted under changes (see the module's
    docstring), -n under the old class and +n under the new one, dated at the frame that changed it."""

    frame: int
    time: float
    counter: str
    track_id: int
    class_id: int
    direction: Direction
    change: int = 1


def _area(points: Sequence[Point]) -> float:
    """Unsigned polygon area (shoelace); zero for points on one line, which would enclose nothing."""
    xy = np.asarray(points, dtype=float)
    x, y = xy[:, 0], xy[:, 1]
    return abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2


def counters_from_config(lines: Sequence[Mapping], zones: Sequence[Mapping]) -> list[Line | Zone]:
    """Lines (``{name, start: [x, y], end: [x, y]}``) and zones (``{name, points: [[x, y], ...]}``)
    from the config, each optionally with ``relative: true`` for coordinates given as fractions of the frame
    (then :func:`resolve` them once the frame size is known). Every problem is a ValueError naming the
    entry, since a counter silently dropped or misplaced would only show as wrong counts."""
    counters: list[Line | Zone] = []
    for kind, entries, keys in (("line", lines, _LINE_KEYS), ("zone", zones, _ZONE_KEYS)):
        for i, entry in enumerate(entries):
            name = entry.get("name")
            if not isinstance(name, str) or not name:
                raise ValueError(f"{kind}s[{i}]: missing name (got {name!r})")
            where = f"{kind} {name!r}"
            if unknown := sorted(set(entry) - keys):
                raise ValueError(f"{where}: unknown keys {unknown} (expected {sorted(keys)})")
            if missing := sorted(keys - {"relative"} - set(entry)):
                raise ValueError(f"{where}: missing {missing}")
            relative = entry.get("relative", False)
            if not isinstance(relative, bool):
                raise ValueError(f"{where}: relative must be true or false, got {relative!r}")
            if kind == "line":
                counters.append(Line(name, entry["start"], entry["end"], relative))
            else:
                counters.append(Zone(name, entry["points"], relative))
    _check_unique(counters)
    return counters


def _check_unique(counters: Sequence[Line | Zone]) -> None:
    """Counts are reported by name, so two counters with one name would mix their counts."""
    seen: set[str] = set()
    for counter in counters:
        if counter.name in seen:
            raise ValueError(f"duplicate counter name {counter.name!r} (names are unique across lines and zones)")
        seen.add(counter.name)


CounterT = TypeVar("CounterT", Line, Zone)


def resolve(counter: CounterT, width: float, height: float) -> CounterT:
    """The pixel version of a ``relative`` counter for a frame of ``width`` x ``height``; a counter
    already in pixels is returned as it is."""
    if not counter.relative:
        return counter

    def scale(point: Point) -> Point:
        return point[0] * width, point[1] * height

    if isinstance(counter, Line):
        return Line(counter.name, scale(counter.start), scale(counter.end))
    return Zone(counter.name, tuple(scale(p) for p in counter.points))


def in_direction(line: Line) -> Point:
    """Unit vector from the line towards its ``in`` side, for drawing the counting direction."""
    dx, dy = line.end[0] - line.start[0], line.end[1] - line.start[1]
    length = math.hypot(dx, dy)
    return -dy / length, dx / length


def anchor_point(tracked: Tracked, anchor: str = "bottom_center") -> Point:
    """The one point of a box that decides its side. ``bottom_center`` is where an object touches the
    ground in a typical camera view, so it crosses a line drawn on the ground when the object does;
    ``center`` suits top-down views, ``top_center`` heads in a crowd."""
    x = (tracked.xmin + tracked.xmax) / 2
    if anchor == "bottom_center":
        return x, tracked.ymax
    if anchor == "center":
        return x, (tracked.ymin + tracked.ymax) / 2
    if anchor == "top_center":
        return x, tracked.ymin
    raise ValueError(f"unknown anchor {anchor!r} (expected one of {ANCHORS})")


def signed_distance(counter: Line | Zone, point: Point) -> float:
    """Distance of ``point`` from the counter, positive on the ``in`` side: for a line, perpendicular
    to the infinite line through it (the band is a strip, even beyond the segment's ends); for a zone,
    to the polygon's boundary, positive inside."""
    if isinstance(counter, Line):
        (sx, sy), (ex, ey) = counter.start, counter.end
        dx, dy = ex - sx, ey - sy
        return (dx * (point[1] - sy) - dy * (point[0] - sx)) / math.hypot(dx, dy)
    p = np.asarray(point, dtype=float)
    a = np.asarray(counter.points, dtype=float)
    edge = np.roll(a, -1, axis=0) - a
    length2 = (edge * edge).sum(axis=1)
    t = np.divide(((p - a) * edge).sum(axis=1), length2, out=np.zeros_like(length2), where=length2 > 0)
    nearest = a + np.clip(t, 0, 1)[:, None] * edge
    distance = float(np.hypot(*(nearest - p).T).min())
    # even-odd rule: a ray from the point to the right crosses the boundary an odd number of times when inside
    straddles = (a[:, 1] > p[1]) != (a[:, 1] + edge[:, 1] > p[1])
    dy = np.where(straddles, edge[:, 1], 1.0)
    x_at = a[:, 0] + (p[1] - a[:, 1]) * edge[:, 0] / dy
    inside = np.count_nonzero(straddles & (x_at > p[0])) % 2 == 1
    return distance if inside else -distance


def crosses(line: Line, a: Point, b: Point) -> bool:
    """Whether the segment from ``a`` to ``b`` passes through the finite ``line``. Testing the whole
    segment since the track's last established position, not just consecutive frames, counts a fast or
    sparsely seen object, and ignores one passing beyond the line's end; touching the line or moving
    along it is not a crossing."""
    da, db = signed_distance(line, a), signed_distance(line, b)
    if da * db > 0 or da == db:
        return False
    f = da / (da - db)
    qx, qy = a[0] + f * (b[0] - a[0]), a[1] + f * (b[1] - a[1])
    (sx, sy), (ex, ey) = line.start, line.end
    dx, dy = ex - sx, ey - sy
    t = ((qx - sx) * dx + (qy - sy) * dy) / (dx * dx + dy * dy)
    return 0.0 <= t <= 1.0


def dead_band(
    counter: Line | Zone, margin: float, frame_size: tuple[float, float] | None = None
) -> tuple[float, float]:
    """Band widths on the ``out`` and the ``in`` side of a counter. With the frame size known, a line's
    band on each side is at most half the distance from the line to the farthest frame corner on that
    side: a box clipped by the frame edge cannot take its anchor further than the edge, so a full band
    would swallow a line drawn a few pixels from the edge and the line would never fire."""
    if frame_size is None or isinstance(counter, Zone):
        return margin, margin
    width, height = frame_size
    reach = [signed_distance(counter, corner) for corner in ((0, 0), (width, 0), (0, height), (width, height))]
    return min(margin, max(-min(reach), 0.0) / 2), min(margin, max(max(reach), 0.0) / 2)


@dataclass
class _State:
    """One track against one counter. Sides are +1 (the ``in`` side: right of a line, inside a zone),
    -1 (the ``out`` side) and 0 (never seen outside the band)."""

    side: int = 0  # established side
    origin: int = 0  # the side first established: where the track came from
    anchor: Point | None = None  # last point outside the band on the established side
    pending: int = 0  # side a crossing waits to be confirmed on; 0 when none
    first: tuple[int, float] = (0, 0.0)  # frame and time of the first observation beyond the band on it
    seen: int = 0  # observations beyond the band on the pending side
    last: Point | None = None  # latest of those observations
    held: dict[Direction, int] = field(default_factory=dict)  # the counts this track adds, by direction

    @classmethod
    def fresh(cls, counter: Line | Zone) -> _State:
        """A new track's state: outside a zone until seen inside; nowhere yet for a line."""
        return cls(side=-1, origin=-1) if isinstance(counter, Zone) else cls()


@dataclass
class _Life:
    """One object as the counter knows it, under all the ids it had: its state against each counter and
    the class its counts are held under, the one with the most summed detection score (``votes``)."""

    states: list[_State]
    class_id: int
    votes: dict[int, float] = field(default_factory=dict)

    def vote(self, tracked: Tracked) -> int:
        """Add a detected box's score to its class; returns the class now leading. A frame the tracker
        only predicted adds nothing: it carries no new evidence of what the object is."""
        if tracked.detected:
            self.votes[tracked.class_id] = self.votes.get(tracked.class_id, 0.0) + tracked.score
        return max(self.votes, key=self.votes.__getitem__) if self.votes else self.class_id


class Counter:
    """Counts confirmed tracks crossing lines and entering or leaving zones in the ``mode`` given
    (``net`` or ``every``), with the rules in this module's docstring. Feed it every frame with :meth:`update`,
    tell it of tracks the tracker removed with :meth:`end_tracks`, and call :meth:`finish` at the end
    of the video. ``frame_size`` (width, height), when given, narrows the band of a line drawn close to
    the frame edge (see :func:`dead_band`) and lets a track that appears mid-picture continue one that
    vanished there up to ``rejoin`` seconds before (0: never; see the module's docstring)."""

    def __init__(
        self,
        counters: Sequence[Line | Zone],
        anchor: str = "bottom_center",
        margin: float = 4.0,
        min_frames: int = 2,
        frame_size: tuple[float, float] | None = None,
        rejoin: float = 5.0,
        mode: str = "net",
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown counting mode {mode!r} (expected one of {MODES})")
        if anchor not in ANCHORS:
            raise ValueError(f"unknown anchor {anchor!r} (expected one of {ANCHORS})")
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        if min_frames < 1:
            raise ValueError(f"min_frames must be >= 1, got {min_frames}")
        if rejoin < 0:
            raise ValueError(f"rejoin must be >= 0 seconds, got {rejoin}")
        _check_unique(counters)
        for counter in counters:
            if counter.relative:
                raise ValueError(f"counter {counter.name!r} has relative coordinates: resolve() it to pixels first")
        self.counters = tuple(counters)
        self.mode = mode
        self.anchor = anchor
        self.min_frames = min_frames
        self._bands = [dead_band(counter, margin, frame_size) for counter in self.counters]
        self._lives: dict[int, _Life] = {}
        self._boxes: dict[int, Tracked] = {}  # each track's latest box: did it leave the picture?
        self._frame_size, self._margin = frame_size, margin
        self._rejoin = rejoin if frame_size is not None else 0.0  # the edges must be known
        self._seen: dict[int, float] = {}  # time each track was last reported
        self._vanished: dict[int, tuple[float, Tracked, _Life]] = {}  # ended mid-picture
        self._counts: dict[str, dict[str, dict[int, int]]] = {c.name: {"in": {}, "out": {}} for c in self.counters}

    @property
    def counts(self) -> dict[str, dict[str, dict[int, int]]]:
        """``{counter: {"in": {class_id: n}, "out": {class_id: n}}}`` with every counter and both
        directions present, so a report can show zeros; a copy, safe to keep."""
        return {name: {d: dict(by_class) for d, by_class in dirs.items()} for name, dirs in self._counts.items()}

    def update(self, frame: int, time: float, tracks: Sequence[Tracked]) -> list[Event]:
        """Take one frame's confirmed tracks; returns the events confirmed by it. A track missing from
        a frame keeps its state, so an occluded object resumes where it was last established."""
        ids = [t.track_id for t in tracks]
        if len(set(ids)) != len(ids):
            raise ValueError(f"frame {frame}: a track id appears more than once in {ids}")
        events: list[Event] = []
        present = set(ids)
        self._vanished = {i: v for i, v in self._vanished.items() if time - v[0] <= self._rejoin}
        for tracked in tracks:
            point = anchor_point(tracked, self.anchor)
            if tracked.track_id not in self._lives:
                self._lives[tracked.track_id] = self._continued(tracked, time, present) or _Life(
                    [_State.fresh(counter) for counter in self.counters], tracked.class_id
                )
            self._boxes[tracked.track_id] = tracked
            self._seen[tracked.track_id] = time
            life = self._lives[tracked.track_id]
            if (leading := life.vote(tracked)) != life.class_id:
                events += self._reclass(life, leading, frame, time, tracked.track_id)
            for counter, (low, high), state in zip(self.counters, self._bands, life.states, strict=True):
                distance = signed_distance(counter, point)
                side = 1 if distance > high else -1 if distance < -low else 0
                if self._observe(state, counter, side, point, frame, time):
                    events += self._confirm(state, counter, tracked.track_id, life.class_id)
        return events

    def end_tracks(self, track_ids: Iterable[int], video_ended: bool = False) -> list[Event]:
        """The tracker removed these tracks; then they are forgotten. A crossing still waiting for
        ``min_frames`` observations is confirmed when the object left the picture (its last box
        touched the frame's edge, within the margin: a line near the edge still fires) or the video
        ended; a track lost in the middle of the picture right after one observation past the band
        is not enough to count. Without ``frame_size`` every pending crossing is confirmed."""
        events: list[Event] = []
        for track_id in track_ids:
            if track_id not in self._lives:
                continue
            left = video_ended or self._at_edge(self._boxes[track_id])
            life = self._lives.pop(track_id)
            if not left and self._rejoin:  # gone mid-picture: hidden, perhaps, to come out under a new id
                self._vanished[track_id] = (self._seen[track_id], self._boxes[track_id], life)
            for counter, state in zip(self.counters, life.states, strict=True):
                if state.pending and left:
                    events += self._confirm(state, counter, track_id, life.class_id)
            del self._boxes[track_id], self._seen[track_id]
        return events

    def _continued(self, tracked: Tracked, time: float, present: set[int]) -> _Life | None:
        """The life of the track that ``tracked``, new and away from the edges, continues: of those
        not seen now, last seen away from the edges less than ``rejoin`` s ago, the one
        whose last anchor is nearest to its anchor, within the larger box's size plus that size per
        second of the gap (objects rarely move faster); None when there is none. The state is taken
        from the old track, which starts afresh should it come back."""
        if not self._rejoin or self._at_edge(tracked):
            return None
        point = np.array(anchor_point(tracked, self.anchor))
        candidates = [(i, self._seen[i], self._boxes[i]) for i in self._lives if i not in present]
        candidates += [(i, seen, box) for i, (seen, box, _) in self._vanished.items()]
        best, nearest = None, math.inf
        for track_id, seen, box in candidates:
            gap = time - seen
            if not 0 < gap <= self._rejoin or self._at_edge(box):
                continue
            size = max(max(b.xmax - b.xmin, b.ymax - b.ymin) for b in (box, tracked))
            distance = float(np.hypot(*(point - anchor_point(box, self.anchor))))
            if distance <= size * (1 + gap) and distance < nearest:
                best, nearest = track_id, distance
        if best is None:
            return None
        if best in self._vanished:
            return self._vanished.pop(best)[2]
        del self._boxes[best], self._seen[best]
        return self._lives.pop(best)

    def finish(self) -> list[Event]:
        """The video ended: every track ends, and what is pending is confirmed."""
        return self.end_tracks(list(self._lives), video_ended=True)

    def _at_edge(self, box: Tracked) -> bool:
        if self._frame_size is None:
            return True
        width, height = self._frame_size
        edge = self._margin
        return box.xmin <= edge or box.ymin <= edge or box.xmax >= width - edge or box.ymax >= height - edge

    def _observe(self, state: _State, counter: Line | Zone, side: int, point: Point, frame: int, time: float) -> bool:
        """Advance one track's state by one observation; True when it confirms a pending crossing."""
        if side == 0:  # in the band: neither establishes, confirms nor cancels
            return False
        if state.side in (0, side):  # first seen outside the band, or (back) on its side: flicker cancelled
            state.origin = state.origin or side
            state.side, state.anchor, state.pending = side, point, 0
            return False
        if not state.pending:
            if isinstance(counter, Line) and not crosses(counter, state.anchor, point):
                state.side, state.anchor = side, point  # went round the line's end: new side, no crossing
                return False
            state.pending, state.first, state.seen = side, (frame, time), 0
        state.seen += 1
        state.last = point
        return state.seen >= self.min_frames

    def _confirm(self, state: _State, counter: Line | Zone, track_id: int, class_id: int) -> list[Event]:
        """Make a pending crossing the track's side, and count it as the mode says: every crossing,
        or (net) the track's count moved to where it now is, none when back where it came from."""
        side = state.pending
        state.side, state.anchor, state.pending = side, state.last, 0
        frame, time = state.first
        events = []
        if self.mode == "net":  # at most one count: the one it held is taken back
            events += [
                self._count(counter, Event(frame, time, counter.name, track_id, class_id, way, -n), state)
                for way, n in list(state.held.items())
            ]
            if side == state.origin:
                return events
        return events + [self._count(counter, Event(frame, time, counter.name, track_id, class_id, _way(side)), state)]

    def _reclass(self, life: _Life, class_id: int, frame: int, time: float, track_id: int) -> list[Event]:
        """Move the counts an object holds from the class they were held under to ``class_id``."""
        events = [
            self._count(counter, Event(frame, time, counter.name, track_id, klass, way, sign * n), state)
            for counter, state in zip(self.counters, life.states, strict=True)
            for way, n in list(state.held.items())
            for klass, sign in ((life.class_id, -1), (class_id, 1))
        ]
        life.class_id = class_id
        return events

    def _count(self, counter: Line | Zone, event: Event, state: _State) -> Event:
        """Apply an event to the counts, and to what the track holds (regardless of class)."""
        by_class = self._counts[counter.name][event.direction]
        by_class[event.class_id] = by_class.get(event.class_id, 0) + event.change
        if not by_class[event.class_id]:
            del by_class[event.class_id]
        state.held[event.direction] = state.held.get(event.direction, 0) + event.change
        if not state.held[event.direction]:
            del state.held[event.direction]
        return event


def _way(side: int) -> Direction:
    """The direction of a crossing to ``side``: ``in`` to the right-hand side of a line or into a zone."""
    return "in" if side > 0 else "out"
