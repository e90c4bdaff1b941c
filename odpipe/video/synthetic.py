"""The built-in video: the synthetic dataset's shapes moving over a textured background, with
exact ground truth for tracking (MOTChallenge boxes) and for line counting.

It exists for the same reason as the synthetic images: ``track`` runs and is scored on a fresh
machine with no data. Nothing is annotated after the fact; every object follows a scripted path,
so its box, identity and line crossings are known exactly. The script is built around the first
counting line to hold the cases that break trackers and counters: objects entering and leaving
at the frame edges, crossing paths where one object hides another, one object hovering on the
line (true count zero), one stopping just past it, and objects that never cross it; then the
cases where counting modes differ: one swinging across the line many times before driving on
(net one count, every several), one making a U-turn over it (net none, every two), one stopping on
it, and two crossing it side by side in opposite directions. The true counts are given per mode. Everything
is drawn from the seed: the same spec gives the same frames and the same truth.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw

from odpipe.core.files import write_json
from odpipe.data.synthetic import SHAPES, background
from odpipe.video.counting import MODES
from odpipe.video.io import open_writer
from odpipe.video.metrics import write_mot

FOURCC = "mp4v"  # what odpipe.video.io.open_writer knows OpenCV's pip wheels encode
MIN_SPEED = 1.0  # px/frame of a travelling leg
CRUISE_SPEED = 3.5  # speeds are drawn up to this; legs are sped up (to MAX_SPEED) only to fit a short video
MAX_SPEED = 6.0
HOVER_REACH = 3.0  # px: how far past the line the hovering object's anchor may go
SWING_REACH = (10.0, 16.0)  # px: how far either side of the line a hover across it swings
TRUTH_BAND = 6.0  # px either side of a line that ``every``'s true crossings must clear (track.count.margin)
MIN_IN_FRAME = 0.3  # a box less visible than this (cut by the frame edge) has no ground-truth row
NOISE_SIGMA = 2.5  # grey levels of per-frame sensor noise, so no two frames are identical
MIN_CLEARANCE = 20.0  # px between the line and the path of an object that must not cross it
TRIES = 200  # random draws of a constrained path before the spec is declared unworkable
# Streams of the seed: the script and the background never shift when the other changes.
SCRIPT_STREAM, BACKGROUND_STREAM, NOISE_STREAM = 0, 1, 2


class Line(NamedTuple):
    """A counting line in pixels; walking from ``start`` to ``end`` as the picture is viewed,
    crossing from the left-hand side to the right-hand side is ``in``."""

    name: str
    start: tuple[float, float]
    end: tuple[float, float]


def _line(raw: Mapping | Sequence) -> Line:
    """A line from its config form ``{name, start: [x, y], end: [x, y]}`` or a (name, start, end)."""
    name, start, end = (raw["name"], raw["start"], raw["end"]) if isinstance(raw, Mapping) else raw
    line = Line(str(name), (float(start[0]), float(start[1])), (float(end[0]), float(end[1])))
    if line.start == line.end:
        raise ValueError(f"synthetic video: line {line.name!r} has the same start and end")
    return line


@dataclass(frozen=True)
class VideoSpec:
    """What to render; mirrors the ``video`` config group of the synthetic source."""

    width: int = 320
    height: int = 240
    fps: int = 15
    num_frames: int = 450
    seed: int = 0
    classes: Sequence[str] = ("circle", "square", "triangle")
    min_size: int = 36
    max_size: int = 60
    num_objects: int = 14
    lines: Sequence[Mapping | Sequence] = (Line("middle", (0.0, 150.0), (320.0, 150.0)),)

    def __post_init__(self) -> None:
        # Config lists (and OmegaConf containers) become tuples, so specs compare and hash by value.
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        object.__setattr__(self, "lines", tuple(_line(line) for line in self.lines))
        unknown = sorted(set(self.classes) - set(SHAPES))
        if unknown:
            raise ValueError(f"synthetic video: no shape named {unknown}; choose from {sorted(SHAPES)}")
        if not self.lines:
            raise ValueError("synthetic video: the scenario is built around a counting line; give at least one")
        if len({line.name for line in self.lines}) != len(self.lines):
            raise ValueError("synthetic video: line names must be unique")
        if not 0 < self.min_size <= self.max_size:
            raise ValueError("synthetic video: need 0 < min_size <= max_size")

    @classmethod
    def from_config(cls, video: Mapping) -> VideoSpec:
        """The spec from the ``video`` config group (which also holds keys for other stages)."""
        return cls(**{f.name: video[f.name] for f in fields(cls) if f.name in video})


@dataclass(frozen=True, eq=False)  # arrays inside: compared by identity
class Track:
    """One scripted object: how it looks, and where its bottom-centre anchor is at each frame
    (``times`` in frames, piecewise-linear between ``points``)."""

    role: str
    label: str
    colour: tuple[int, int, int]
    width: int
    height: int
    times: np.ndarray = field(repr=False)
    points: np.ndarray = field(repr=False)

    def alive(self, frame: int) -> bool:
        return self.times[0] <= frame <= self.times[-1]

    def anchor(self, frame: float) -> np.ndarray:
        return np.array([np.interp(frame, self.times, axis) for axis in self.points.T])

    def box(self, frame: float) -> tuple[int, int, int, int]:
        """Integer (x0, y0, x1, y1), unclipped: what is drawn and what the ground truth reports agree
        to the pixel."""
        x, y = self.anchor(frame)
        x0 = math.floor(x - self.width / 2 + 0.5)
        y1 = math.floor(y + 0.5)
        return x0, y1 - self.height, x0 + self.width, y1


@dataclass(frozen=True)
class Truth:
    """Ground truth of a rendered video: ``rows`` in MOTChallenge form (see MOT_COLUMNS; ids and
    frames from 1, class from 1 as in the label map; visibility is the share of the in-frame box
    not covered by boxes drawn over it) and ``counts[mode][line]["in"|"out"][class]``.
    ``roles`` names each id's part in the script (``hover``, ``stop_and_go``, ``cross``, ``pass``, and
    the counting modes' cases ``hover_across``, ``u_turn``, ``stop_on_line``, ``opposite``)."""

    rows: tuple[dict, ...]
    counts: dict[str, dict[str, dict[str, int]]]
    roles: dict[int, str]


# -- geometry ---------------------------------------------------------------------------------


def _cross(a: np.ndarray, b: np.ndarray) -> float:
    return float(a[0] * b[1] - a[1] * b[0])


def _rotate(v: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def _axes(line: Line) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The line's start, its unit direction, and the unit normal pointing to its ``in`` side."""
    start, end = np.array(line.start), np.array(line.end)
    along = (end - start) / np.hypot(*(end - start))
    return start, along, np.array([-along[1], along[0]])


def signed_distance(line: Line, point: np.ndarray) -> float:
    """Distance of ``point`` from the (infinite) line, positive on its ``in`` (right-hand) side."""
    start, along, _ = _axes(line)
    return _cross(along, np.asarray(point, dtype=float) - start)


def _legs_meet_segment(points: np.ndarray, line: Line) -> bool:
    """Whether the polyline touches the finite segment: a crossing beyond its ends is no crossing."""
    a, b = np.array(line.start), np.array(line.end)
    for p, q in zip(points[:-1], points[1:], strict=True):
        if np.allclose(p, q):
            continue  # a pause; its point is an end of the legs either side
        if _cross(q - p, a - p) * _cross(q - p, b - p) <= 0 and _cross(b - a, p - a) * _cross(b - a, q - a) <= 0:
            return True
    return False


def crossings(points: np.ndarray, line: Line, band: float = TRUTH_BAND) -> list[str]:
    """Every crossing of a path, as the ``every`` counting mode sees it: the anchor going from
    beyond ``band`` on one side to beyond it on the other, through the segment (a pass around its
    end changes the side without counting). Paths are sampled every pixel along their legs."""
    found: list[str] = []
    side, anchor = 0, None
    for p, q in zip(points[:-1], points[1:], strict=True):
        steps = max(1, math.ceil(float(np.hypot(*(q - p)))))
        for t in np.arange(1, steps + 1) / steps:
            point = p + t * (q - p)
            distance = signed_distance(line, point)
            now = 1 if distance > band else -1 if distance < -band else 0
            if now and side and now != side and _legs_meet_segment(np.array([anchor, point]), line):
                found.append("in" if now > 0 else "out")
            if now:
                side, anchor = now, point
    return found


def crossing(points: np.ndarray, line: Line) -> str | None:
    """``in``, ``out`` or None for a path (its whole life, unclipped): counted once, from the side
    it starts on to the side it ends on, if those differ and it meets the segment on the way. An
    object that goes back and forth over the line but leaves where it came from counts nothing."""
    first, last = signed_distance(line, points[0]), signed_distance(line, points[-1])
    if first * last >= 0 or not _legs_meet_segment(points, line):
        return None
    return "in" if first < 0 else "out"


def _leave_distance(point: np.ndarray, direction: np.ndarray, size: tuple[int, int], frame: tuple[int, int]) -> float:
    """How far along ``direction`` the anchor goes before the whole box is outside the frame."""
    (w, h), (width, height) = size, frame
    candidates = []
    if direction[0] < 0:
        candidates.append(-(point[0] + w / 2) / direction[0])
    if direction[0] > 0:
        candidates.append((width + w / 2 - point[0]) / direction[0])
    if direction[1] < 0:
        candidates.append(-point[1] / direction[1])
    if direction[1] > 0:
        candidates.append((height + h - point[1]) / direction[1])
    return max(0.0, min(candidates))


def _inside(point: np.ndarray, size: tuple[int, int], frame: tuple[int, int]) -> bool:
    """Whether the whole box with its anchor at ``point`` is in the frame."""
    (w, h), (width, height) = size, frame
    return w / 2 <= point[0] <= width - w / 2 and h <= point[1] <= height


def _room(point: np.ndarray, direction: np.ndarray, size: tuple[int, int], frame: tuple[int, int]) -> float:
    """How far along ``direction`` the anchor can go with the whole box still inside the frame."""
    (w, h), (width, height) = size, frame
    limits = [math.inf]
    for value, step, low, high in ((point[0], direction[0], w / 2, width - w / 2), (point[1], direction[1], h, height)):
        if step > 0:
            limits.append((high - value) / step)
        if step < 0:
            limits.append((low - value) / step)
    return max(0.0, min(limits))


def _inner_span(line: Line, frame: tuple[int, int], margin: float) -> tuple[float, float]:
    """The part of the segment (fractions from start to end) at least ``margin`` inside the frame:
    where the scripted objects cross it, so that every crossing happens in view."""
    start, end = np.array(line.start), np.array(line.end)
    step = end - start
    low, high = 0.0, 1.0
    for axis, size in enumerate(frame):
        for bound, sign in ((margin, 1.0), (size - margin, -1.0)):
            # Inside this bound where sign * (start + u * step - bound) >= 0.
            rate, offset = sign * step[axis], sign * (start[axis] - bound)
            if rate > 0:
                low = max(low, -offset / rate)
            elif rate < 0:
                high = min(high, -offset / rate)
            elif offset < 0:
                high = -1.0
    if low > high:
        raise ValueError(f"synthetic video: line {line.name!r} is not inside the {frame[0]}x{frame[1]} frame")
    return low, high


# -- the script ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """One object's path before it is placed in time: waypoints, the time of each leg, which legs
    are timed by the script itself (pauses, hover swings: never sped up), and the waypoint where
    the members of a group meet."""

    role: str
    points: tuple[np.ndarray, ...]
    durations: tuple[float, ...]
    fixed: tuple[bool, ...]
    sync: int = 0


@dataclass(frozen=True)
class _Scene:
    """What every path builder needs: the frame, the first line's geometry, and where on it
    objects may cross."""

    frame: tuple[int, int]
    fps: int
    line: Line
    span: tuple[float, float]

    def point_on_line(self, rng: np.random.Generator) -> np.ndarray:
        start, end = np.array(self.line.start), np.array(self.line.end)
        return start + rng.uniform(*self.span) * (end - start)

    def crosses_in_view(self, point: np.ndarray, direction: np.ndarray) -> bool:
        """Whether the straight path through ``point`` meets the line inside the usable span."""
        start, along, normal = _axes(self.line)
        rate = float(direction @ normal)
        if abs(rate) < 1e-9:
            return False
        hit = point - signed_distance(self.line, point) / rate * direction
        length = np.hypot(*(np.array(self.line.end) - start))
        return self.span[0] <= float((hit - start) @ along) / length <= self.span[1]


def _travel(rng: np.random.Generator, points: Sequence[np.ndarray]) -> tuple[float, ...]:
    """Leg times at a speed drawn per leg: objects change pace, as trackers must allow for."""
    return tuple(
        float(np.hypot(*(b - a))) / rng.uniform(MIN_SPEED, CRUISE_SPEED)
        for a, b in zip(points[:-1], points[1:], strict=True)
    )


def _through(
    rng: np.random.Generator, scene: _Scene, point: np.ndarray, direction: np.ndarray, size: tuple[int, int], role: str
) -> _Plan:
    """A straight path through ``point``, from beyond one frame edge to beyond another, changing
    speed at ``point`` (the waypoint a group synchronises on)."""
    entry = point - _leave_distance(point, -direction, size, scene.frame) * direction
    exit_ = point + _leave_distance(point, direction, size, scene.frame) * direction
    points = (entry, point, exit_)
    return _Plan(role, points, _travel(rng, points), (False, False), sync=1)


def _crosser(rng: np.random.Generator, scene: _Scene, size: tuple[int, int], toward: np.ndarray) -> _Plan:
    """Crosses the line at a random slant, then turns a little once past it."""
    point = scene.point_on_line(rng)
    heading = _rotate(toward, rng.uniform(-0.5, 0.5))
    bend = point + min(rng.uniform(10, 40), _room(point, heading, size, scene.frame)) * heading
    turned = _rotate(heading, rng.uniform(-0.35, 0.35))
    entry = point - _leave_distance(point, -heading, size, scene.frame) * heading
    exit_ = bend + _leave_distance(bend, turned, size, scene.frame) * turned
    points = (entry, bend, exit_)
    return _Plan("cross", points, _travel(rng, points), (False, False))


def _stop_and_go(rng: np.random.Generator, scene: _Scene, size: tuple[int, int], toward: np.ndarray) -> _Plan:
    """Crosses the line, waits 1-2 s just past it, goes on: a counter must count it once, and a
    tracker must keep a still object."""
    point = scene.point_on_line(rng)
    heading = _rotate(toward, rng.uniform(-0.3, 0.3))
    stop = point + min(rng.uniform(25, 50), _room(point, heading, size, scene.frame)) * heading
    entry = point - _leave_distance(point, -heading, size, scene.frame) * heading
    exit_ = stop + _leave_distance(stop, heading, size, scene.frame) * heading
    moving = _travel(rng, (entry, stop, exit_))
    pause = rng.uniform(1, 2) * scene.fps
    return _Plan("stop_and_go", (entry, stop, stop, exit_), (moving[0], pause, moving[1]), (False, True, False))


def _hover(rng: np.random.Generator, scene: _Scene, size: tuple[int, int]) -> _Plan:
    """Comes up to the line, wavers across it within HOVER_REACH for 2-3 s, and goes back the way it
    came: the anchor crosses the line many times, yet the true count is zero."""
    _, along, normal = _axes(scene.line)
    toward = normal if rng.random() < 0.5 else -normal
    point = scene.point_on_line(rng)
    entry = point - _leave_distance(point, -toward, size, scene.frame) * toward
    swings, times, elapsed, side = [], [], 0.0, 1.0
    wanted = rng.uniform(2.0, 2.6) * scene.fps  # the last swing may run a little over: still under 3 s
    while elapsed < wanted:
        swing = point + side * rng.uniform(1.5, HOVER_REACH) * toward + rng.uniform(-4, 4) * along
        previous = swings[-1] if swings else swing
        times.append(float(np.hypot(*(swing - previous))) / rng.uniform(MIN_SPEED, 2.0))
        elapsed += times[-1]
        swings.append(swing)
        side = -side
    points = (entry, *swings, entry)
    durations = (*_travel(rng, points[:2]), *times[1:], *_travel(rng, points[-2:]))
    fixed = (False, *[True] * (len(swings) - 1), False)
    return _Plan("hover", points, durations, fixed)


def _hover_across(rng: np.random.Generator, scene: _Scene, size: tuple[int, int], toward: np.ndarray) -> _Plan:
    """Comes up to the line, swings 10-16 px either side of it for 3-4 s (six to nine crossings),
    then drives on to the far side: one count where it ended up, many crossings."""
    _, along, _ = _axes(scene.line)
    point = scene.point_on_line(rng)
    entry = point - _leave_distance(point, -toward, size, scene.frame) * toward
    swings, times, elapsed, side = [], [], 0.0, 1.0
    wanted = rng.uniform(3.0, 4.0) * scene.fps
    while elapsed < wanted or side > 0:  # the last swing is on the far side
        swing = point + side * rng.uniform(*SWING_REACH) * toward + rng.uniform(-4, 4) * along
        previous = swings[-1] if swings else swing
        times.append(float(np.hypot(*(swing - previous))) / rng.uniform(MIN_SPEED, 2.0))
        elapsed += times[-1]
        swings.append(swing)
        side = -side
    exit_ = swings[-1] + _leave_distance(swings[-1], toward, size, scene.frame) * toward
    points = (entry, *swings, exit_)
    durations = (*_travel(rng, points[:2]), *times[1:], *_travel(rng, points[-2:]))
    fixed = (False, *[True] * (len(swings) - 1), False)
    return _Plan("hover_across", points, durations, fixed)


def _u_turn(rng: np.random.Generator, scene: _Scene, size: tuple[int, int], toward: np.ndarray) -> _Plan:
    """Crosses the line by 30-50 px, turns and goes back out the side it came from: it crossed
    twice and ended where it began."""
    point = scene.point_on_line(rng)
    heading = _rotate(toward, rng.uniform(-0.3, 0.3))
    turn = point + min(rng.uniform(30, 50), _room(point, heading, size, scene.frame)) * heading
    back = _rotate(-heading, rng.uniform(-0.4, 0.4))
    entry = point - _leave_distance(point, -heading, size, scene.frame) * heading
    exit_ = turn + _leave_distance(turn, back, size, scene.frame) * back
    points = (entry, turn, turn, exit_)
    pause = rng.uniform(0.3, 0.8) * scene.fps
    moving = _travel(rng, (entry, turn, exit_))
    return _Plan("u_turn", points, (moving[0], pause, moving[1]), (False, True, False))


def _stop_on_line(rng: np.random.Generator, scene: _Scene, size: tuple[int, int], toward: np.ndarray) -> _Plan:
    """Stops with its anchor on the line for 1-2 s, then drives on across: counted once, however
    long it stood in the dead band."""
    point = scene.point_on_line(rng)
    heading = _rotate(toward, rng.uniform(-0.3, 0.3))
    entry = point - _leave_distance(point, -heading, size, scene.frame) * heading
    exit_ = point + _leave_distance(point, heading, size, scene.frame) * heading
    moving = _travel(rng, (entry, point, exit_))
    pause = rng.uniform(1, 2) * scene.fps
    return _Plan("stop_on_line", (entry, point, point, exit_), (moving[0], pause, moving[1]), (False, True, False))


def _pair_opposite(
    rng: np.random.Generator, scene: _Scene, sizes: Sequence[tuple[int, int]], toward: np.ndarray
) -> list[_Plan] | None:
    """Two objects side by side crossing the line at the same moment, one each way, a few pixels
    apart along it: one ``in`` and one ``out``, not two of either."""
    _, along, _ = _axes(scene.line)
    point = scene.point_on_line(rng)
    gap = (sizes[0][0] + sizes[1][0]) / 2 + rng.uniform(4, 12)
    other = point + gap * (along if rng.random() < 0.5 else -along)
    heading = _rotate(toward, rng.uniform(-0.2, 0.2))
    if not all(scene.crosses_in_view(m, h) for m, h in ((point, heading), (other, -heading))):
        return None
    pair = ((point, heading, sizes[0]), (other, -heading, sizes[1]))
    return [_through(rng, scene, m, h, sz, "opposite") for m, h, sz in pair]


def _passer(
    rng: np.random.Generator, scene: _Scene, size: tuple[int, int], through: np.ndarray | None = None
) -> _Plan | None:
    """Moves along the line without crossing it, on one side (through ``through`` if given, for
    a pair); None when the draw does not work out: no room on that side, the box not wholly in
    view where it passes, or a slant that brings it within MIN_CLEARANCE of the line."""
    _, along, normal = _axes(scene.line)
    if through is None:
        side = normal if rng.random() < 0.5 else -normal
        point = scene.point_on_line(rng)
        room = _room(point, side, size, scene.frame)
        if room <= MIN_CLEARANCE:
            return None
        through = point + rng.uniform(MIN_CLEARANCE, room) * side
    if not _inside(through, size, scene.frame):
        return None
    heading = _rotate(along if rng.random() < 0.5 else -along, rng.uniform(-0.08, 0.08))
    plan = _through(rng, scene, through, heading, size, "pass")
    offsets = [signed_distance(scene.line, p) for p in plan.points]
    if min(offsets) * max(offsets) <= 0 or min(abs(o) for o in offsets) < MIN_CLEARANCE:
        return None
    return plan


def _pair_pass(
    rng: np.random.Generator, scene: _Scene, sizes: Sequence[tuple[int, int]], toward: np.ndarray
) -> list[_Plan] | None:
    """A crosser and a passer at the same place at the same time, boxes partly overlapping: the
    one drawn first is hidden in part while they meet."""
    _, _, normal = _axes(scene.line)
    side = normal if rng.random() < 0.5 else -normal
    meet = scene.point_on_line(rng) + rng.uniform(MIN_CLEARANCE + 10, 80) * side
    heading = _rotate(toward, rng.uniform(-0.4, 0.4))
    if not scene.crosses_in_view(meet, heading):
        return None
    crosser = _through(rng, scene, meet, heading, sizes[0], "cross")
    shift = rng.uniform(0.25, 0.45) * sizes[1][1] * (1 if rng.random() < 0.5 else -1)
    passer = _passer(rng, scene, sizes[1], through=meet + shift * side)
    return None if passer is None else [crosser, passer]


def _pair_cross(
    rng: np.random.Generator, scene: _Scene, sizes: Sequence[tuple[int, int]], towards: Sequence[np.ndarray]
) -> list[_Plan] | None:
    """Two crossers whose paths make an X, meeting off the line with boxes partly overlapping."""
    _, along, normal = _axes(scene.line)
    side = normal if rng.random() < 0.5 else -normal
    meet = scene.point_on_line(rng) + rng.uniform(25, 70) * side
    slant = rng.uniform(0.3, 0.6)
    headings = (_rotate(towards[0], slant), _rotate(towards[1], -slant))
    shift = rng.uniform(0.2, 0.4) * sizes[1][0] * (1 if rng.random() < 0.5 else -1)
    meets = (meet, meet + shift * along)
    if not all(scene.crosses_in_view(m, h) for m, h in zip(meets, headings, strict=True)):
        return None
    if not all(_inside(m, s, scene.frame) for m, s in zip(meets, sizes, strict=True)):
        return None  # they must meet in view, or nothing is hidden
    return [_through(rng, scene, m, h, s, "cross") for m, h, s in zip(meets, headings, sizes, strict=True)]


GROUP_SIZES = {
    "hover": 1, "stop_and_go": 1, "pair_pass": 2, "pair_cross": 2, "pass": 1, "cross": 1,
    "hover_across": 1, "u_turn": 1, "stop_on_line": 1, "pair_opposite": 2,
}  # fmt: skip
CROSSING_MEMBERS = {
    "stop_and_go": 1, "pair_pass": 1, "pair_cross": 2, "cross": 1,
    "hover_across": 1, "u_turn": 1, "stop_on_line": 1, "pair_opposite": 1,  # the pair's other goes the other way
}  # fmt: skip
# The special cases first, so that even a short test video with few objects has them all (the
# counting modes' cases after the tracking ones: a short clip keeps the tracker's hard cases).
HEAD = (
    "hover",
    "stop_and_go",
    "pair_pass",
    "pair_cross",
    "pass",
    "hover_across",
    "u_turn",
    "stop_on_line",
    "pair_opposite",
)
CYCLE = ("cross", "cross", "cross", "pass")


def group_kinds(num_objects: int) -> list[str]:
    """The groups of the script, filled to ``num_objects`` (a pair that does not fit becomes a crosser)."""
    kinds: list[str] = []
    total, position = 0, 0
    while total < num_objects:
        kind = HEAD[position] if position < len(HEAD) else CYCLE[(position - len(HEAD)) % len(CYCLE)]
        if total + GROUP_SIZES[kind] > num_objects:
            kind = "cross"
        kinds.append(kind)
        total += GROUP_SIZES[kind]
        position += 1
    return kinds


def _directions(rng: np.random.Generator, scene: _Scene, kinds: Sequence[str]) -> list[np.ndarray]:
    """One heading per crossing object, 60 % ``in`` and the rest ``out`` in a seeded order: both
    directions are always there, whatever the seed."""
    _, _, normal = _axes(scene.line)
    count = sum(CROSSING_MEMBERS.get(kind, 0) for kind in kinds)
    inward = math.ceil(0.6 * count)
    return [normal if i < inward else -normal for i in rng.permutation(count)]


def _build(
    rng: np.random.Generator, scene: _Scene, kind: str, sizes: list[tuple[int, int]], directions: list[np.ndarray]
) -> list[_Plan]:
    """The plans of one group; constrained groups are redrawn until they fit the scene."""
    if kind == "hover":
        return [_hover(rng, scene, sizes[0])]
    if kind == "stop_and_go":
        return [_stop_and_go(rng, scene, sizes[0], directions.pop())]
    if kind == "cross":
        return [_crosser(rng, scene, sizes[0], directions.pop())]
    if kind == "hover_across":
        return [_hover_across(rng, scene, sizes[0], directions.pop())]
    if kind == "u_turn":
        return [_u_turn(rng, scene, sizes[0], directions.pop())]
    if kind == "stop_on_line":
        return [_stop_on_line(rng, scene, sizes[0], directions.pop())]
    towards = [directions.pop() for _ in range(CROSSING_MEMBERS.get(kind, 0))]
    for _ in range(TRIES):
        if kind == "pass":
            plan = _passer(rng, scene, sizes[0])
            plans = None if plan is None else [plan]
        elif kind == "pair_pass":
            plans = _pair_pass(rng, scene, sizes, towards[0])
        elif kind == "pair_opposite":
            plans = _pair_opposite(rng, scene, sizes, towards[0])
        else:
            plans = _pair_cross(rng, scene, sizes, towards)
        if plans is not None:
            return plans
    raise ValueError(f"synthetic video: cannot fit a {kind!r} group around line {scene.line.name!r}; is it too short?")


def _fit(plans: Sequence[_Plan], available: float) -> tuple[list[np.ndarray], float]:
    """Waypoint times of a group's members, measured from the group's start, with the members'
    sync waypoints at the same moment. A group that would not fit in ``available`` frames has its
    slowest travelling legs sped up to a common floor (the least that fits), so the faster legs keep
    their pace and nothing goes past MAX_SPEED. Returns the times and the group's span."""
    lengths = [np.hypot(*np.diff(np.array(p.points), axis=0).T) for p in plans]

    def timeline(floor: float) -> tuple[list[np.ndarray], float]:
        times = []
        for plan, length in zip(plans, lengths, strict=True):
            durations = np.array(plan.durations)
            durations = np.where(plan.fixed, durations, np.minimum(durations, length / floor))
            times.append(np.concatenate([[0.0], np.cumsum(durations)]))
        meet = max(t[p.sync] for t, p in zip(times, plans, strict=True))
        times = [t + meet - t[p.sync] for t, p in zip(times, plans, strict=True)]
        return times, max(t[-1] for t in times)

    times, span = timeline(MIN_SPEED)  # legs are drawn at MIN_SPEED or faster: the group as drawn
    if span <= available:
        return times, span
    if timeline(MAX_SPEED)[1] > available:
        raise ValueError(
            f"synthetic video: {available + 1:.0f} frames are too few for a {plans[0].role!r} object even at "
            f"{MAX_SPEED} px/frame; raise num_frames"
        )
    low, high = MIN_SPEED, MAX_SPEED
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if timeline(middle)[1] > available else (low, middle)
    return timeline(high)


def _look(rng: np.random.Generator, spec: VideoSpec) -> tuple[str, tuple[int, int, int], tuple[int, int]]:
    """Label, colour and box size of one object."""
    label = spec.classes[int(rng.integers(len(spec.classes)))]
    colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
    width = int(rng.integers(spec.min_size, spec.max_size + 1))
    height = int(np.clip(round(width * math.exp(rng.uniform(-0.2, 0.2))), spec.min_size, spec.max_size))
    return label, colour, (width, height)


def scenario(spec: VideoSpec) -> list[Track]:
    """The scripted objects in the order their lives start: id = index + 1, and drawn in that order.

    Groups (a single object, or a pair that meets) have their middles spread evenly over the video
    in a seeded order, so the scene stays busy without pile-ups; each lies wholly inside the video,
    so every life starts and ends out of view."""
    rng = np.random.default_rng([spec.seed, SCRIPT_STREAM])
    frame = (spec.width, spec.height)
    line = spec.lines[0]
    scene = _Scene(frame, spec.fps, line, _inner_span(line, frame, spec.max_size))
    kinds = group_kinds(spec.num_objects)
    directions = _directions(rng, scene, kinds)
    groups = []
    for kind in kinds:
        looks = [_look(rng, spec) for _ in range(GROUP_SIZES[kind])]
        plans = _build(rng, scene, kind, [size for _, _, size in looks], directions)
        groups.append((looks, plans, *_fit(plans, spec.num_frames - 1)))
    tracks = []
    order = rng.permutation(len(groups))
    for slot, index in enumerate(order):
        looks, plans, times, span = groups[index]
        middle = (slot + rng.uniform(0.25, 0.75)) / len(groups) * (spec.num_frames - 1)
        start = float(np.clip(middle - span / 2, 0, spec.num_frames - 1 - span))
        for (label, colour, (w, h)), plan, t in zip(looks, plans, times, strict=True):
            tracks.append(Track(plan.role, label, colour, w, h, start + t, np.array(plan.points)))
    tracks.sort(key=lambda track: track.times[0])
    return tracks


# -- ground truth -------------------------------------------------------------------------------


def _clip(box: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int, int]:
    return max(box[0], 0), max(box[1], 0), min(box[2], width), min(box[3], height)


def _area(box: tuple[int, int, int, int]) -> int:
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def _visibility(box: tuple[int, int, int, int], above: Iterable[tuple[int, int, int, int]]) -> float:
    """Fraction of ``box`` not covered by the boxes drawn over it (their union, not their sum)."""
    x0, y0, x1, y1 = box
    covered = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    for a0, b0, a1, b1 in above:
        covered[max(b0 - y0, 0) : max(b1 - y0, 0), max(a0 - x0, 0) : max(a1 - x0, 0)] = True
    return 1.0 - float(covered.mean())


def _frame_rows(tracks: Sequence[Track], frame: int, spec: VideoSpec) -> Iterator[dict]:
    """Ground-truth rows of one frame: boxes clipped to the frame, those mostly outside it left out."""
    alive = [(number, track) for number, track in enumerate(tracks, start=1) if track.alive(frame)]
    clipped = [_clip(track.box(frame), spec.width, spec.height) for _, track in alive]
    for position, (number, track) in enumerate(alive):
        box = clipped[position]
        if _area(box) < MIN_IN_FRAME * track.width * track.height:
            continue
        yield {
            "frame": frame + 1,
            "id": number,
            "x": box[0],
            "y": box[1],
            "w": box[2] - box[0],
            "h": box[3] - box[1],
            "conf": 1,
            "class": spec.classes.index(track.label) + 1,
            "visibility": round(_visibility(box, clipped[position + 1 :]), 4),
        }


def true_counts(tracks: Sequence[Track], lines: Sequence[Line], classes: Sequence[str]) -> dict:
    """``{mode: {line: {"in"|"out": {class: n}}}}`` from the scripted paths alone, every class
    present, for each counting mode: ``net`` (where each path ended up) and ``every`` (each crossing)."""
    counts = {
        mode: {line.name: {d: dict.fromkeys(classes, 0) for d in ("in", "out")} for line in lines} for mode in MODES
    }
    for track in tracks:
        for line in lines:
            direction = crossing(track.points, line)
            if direction is not None:
                counts["net"][line.name][direction][track.label] += 1
            for direction in crossings(track.points, line):
                counts["every"][line.name][direction][track.label] += 1
    return counts


def _truth(spec: VideoSpec, tracks: Sequence[Track]) -> Truth:
    rows = tuple(row for frame in range(spec.num_frames) for row in _frame_rows(tracks, frame, spec))
    roles = {number: track.role for number, track in enumerate(tracks, start=1)}
    return Truth(rows, true_counts(tracks, spec.lines, spec.classes), roles)


def ground_truth(spec: VideoSpec) -> Truth:
    """The truth of the video ``render_video`` would write, without drawing it."""
    return _truth(spec, scenario(spec))


def write_truth(truth: Truth, gt_csv: Path, counts_json: Path) -> None:
    """``gt.csv`` (MOTChallenge rows, no header) and the true counts as JSON."""
    write_mot(truth.rows, gt_csv)
    write_json(truth.counts, counts_json)


# -- drawing ------------------------------------------------------------------------------------


def _draw(backdrop: Image.Image, tracks: Sequence[Track], frame: int, spec: VideoSpec) -> np.ndarray:
    """Frame ``frame`` as BGR for OpenCV: the objects alive, drawn in id order, then sensor noise."""
    image = backdrop.copy()
    draw = ImageDraw.Draw(image)
    for track in tracks:
        if track.alive(frame):
            x0, y0, x1, y1 = track.box(frame)
            SHAPES[track.label](draw, (x0, y0, x1 - 1, y1 - 1), track.colour)
    noise = np.random.default_rng([spec.seed, NOISE_STREAM, frame]).standard_normal(
        (spec.height, spec.width, 3), dtype=np.float32
    )
    pixels = np.asarray(image, dtype=np.float32) + NOISE_SIGMA * noise
    return np.ascontiguousarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8)[..., ::-1])


def render_video(spec: VideoSpec, video_path: Path) -> Truth:
    """Write the video (mp4v) to ``video_path`` and return its ground truth."""
    tracks = scenario(spec)
    backdrop = background(np.random.default_rng([spec.seed, BACKGROUND_STREAM]), spec.width, spec.height)
    writer = open_writer(Path(video_path), spec.fps, spec.width, spec.height, FOURCC)
    try:
        for frame in range(spec.num_frames):
            writer.write(_draw(backdrop, tracks, frame, spec))
    finally:
        writer.release()
    return _truth(spec, tracks)
