"""Multi-object trackers over per-frame detections, for counting objects in videos.

Two trackers share one interface (:class:`Tracker`):

- ``bytetrack``: the BYTE association of ByteTrack (Zhang et al. 2022). Every track carries a
  constant-velocity Kalman filter; high-score detections are matched first to all confirmed
  tracks, then the low-score ones, which a plain score threshold would throw away, to the
  tracks still unmatched, so a partly occluded object keeps its id instead of being lost.
  A lost track waits ``lost_frames`` frames to be found again before it is removed. Beyond
  ByteTrack, for objects that pass under others: low boxes may re-find a lost track too, and
  the class and the detection score weigh in next to IoU (see ``similarities``).
- ``centroid``: the course's baseline. Objects are matched greedily by the distance of box
  centres, with no motion model, and forgotten after ``max_disappeared`` frames unmatched.

The pipeline detects on every ``frame_stride``-th frame only: ``update`` takes a frame's
detections, ``predict`` carries the tracks over a frame without them. After either call,
``removed`` holds the ids deleted by it, so that a line counter can settle them; ``finish``
returns the ids still alive when the video ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Protocol

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from odpipe.core.boxes import iou_matrix

# Kalman noise as a fraction of the box height (the choice of SORT and ByteTrack): the
# uncertainty of a box in pixels grows with its size, whatever the resolution of the video.
POSITION_STD = 1 / 20
VELOCITY_STD = 1 / 160
# The aspect ratio has no scale: fixed noise, small because an object's shape changes slowly.
ASPECT_STD = 1e-2
ASPECT_MEASURE_STD = 1e-1
ASPECT_VELOCITY_STD = 1e-5
MIN_SIDE = 1.0  # px; a predicted box is never thinner, however its size velocity extrapolates
TRANSITION = np.block([[np.eye(4), np.eye(4)], [np.zeros((4, 4)), np.eye(4)]])  # x += v each frame
OBSERVATION = np.eye(4, 8)  # the measurement is the position part of the state


@dataclass(frozen=True)
class Tracked:
    """One track's box in one frame, in pixels of the frame."""

    track_id: int  # 1-based, never reused within a video
    class_id: int  # the label map's id
    score: float  # the detection's score; for a box the tracker predicted, the track's last score
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    detected: bool  # True when a detection of this frame was matched; False when predicted


class Tracker(Protocol):
    """What the video pipeline needs of a tracker."""

    removed: list[int]  # ids deleted by the last update or predict call

    def update(self, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> list[Tracked]:
        """One frame's detections (xyxy pixels, scores, class ids) in; the tracks to show out."""

    def predict(self) -> list[Tracked]:
        """One frame without detections: the active tracks where the tracker expects them."""

    def finish(self) -> list[int]:
        """The video ended: the ids of every track still alive, which are then dropped."""


@dataclass(frozen=True)
class ByteTrackParams:
    """Thresholds of the BYTE association; the defaults are ByteTrack's on MOT17, but for the last
    three, which keep identities through long occlusions (see :func:`similarities`)."""

    high_score: float = 0.5  # detections at or above are matched first and may start tracks
    low_score: float = 0.1  # detections below are noise; between low and high only extend tracks
    new_track_score: float = 0.6  # an unmatched high detection starts a track only from here
    match_iou: float = 0.2  # first association, confirmed tracks against high detections
    low_match_iou: float = 0.5  # second association: stricter, low boxes are often false
    unconfirmed_match_iou: float = 0.3  # a tentative track against the high detections left
    lost_frames: int = 30  # frames a lost track waits to be found again before its removal
    min_hits: int = 2  # updates a new track must be matched in before it gets an id
    fuse_score: bool = True  # weigh IoU by the detection's score in the first association
    # Beyond ByteTrack, for objects that pass under others (see ``similarities``):
    class_mismatch_weight: float = 0.5  # IoU factor for a detection of another class than the track's; 1: agnostic
    score_change_weight: float = 0.0  # first association: similarity lost per unit of score change (off: see README)
    low_finds_lost: bool = True  # low boxes may also re-find a lost track, not only extend a tracked one

    def __post_init__(self) -> None:
        if not 0 <= self.low_score <= self.high_score:
            raise ValueError(f"bytetrack needs 0 <= low_score <= high_score, got {self.low_score}, {self.high_score}")
        if not 0 <= self.class_mismatch_weight <= 1 or self.score_change_weight < 0:
            raise ValueError(
                f"bytetrack needs 0 <= class_mismatch_weight <= 1 and score_change_weight >= 0, got "
                f"{self.class_mismatch_weight}, {self.score_change_weight}"
            )
        if self.min_hits < 1 or self.lost_frames < 0:
            raise ValueError(
                f"bytetrack needs min_hits >= 1 and lost_frames >= 0, got {self.min_hits}, {self.lost_frames}"
            )


@dataclass(frozen=True)
class CentroidParams:
    """The course's centroid tracker."""

    max_disappeared: int = 40  # updates an object may go unmatched before it is forgotten
    max_distance: float = 50.0  # px between centres; farther apart is another object
    min_score: float = 0.5  # the course's detection threshold; weaker detections are ignored

    def __post_init__(self) -> None:
        if self.max_disappeared < 0 or self.max_distance <= 0:
            raise ValueError(
                f"centroid needs max_disappeared >= 0 and max_distance > 0, got {self.max_disappeared}, "
                f"{self.max_distance}"
            )


def detections(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, ...]:
    """One frame's detections as (N, 4) float boxes, (N,) float scores and (N,) int classes,
    so that an empty frame given as ``[]`` works like any other. The boxes are copied: tracks
    keep them, and a caller may reuse its buffer for the next frame. A box without area (a
    weak model's sliver at the frame edge) is left out: its aspect ratio would be infinite."""
    boxes = np.array(boxes, dtype=float).reshape(-1, 4)
    scores = np.asarray(scores, dtype=float).reshape(-1)
    classes = np.asarray(classes, dtype=int).reshape(-1)
    if not len(boxes) == len(scores) == len(classes):
        raise ValueError(
            f"{len(boxes)} boxes, {len(scores)} scores and {len(classes)} classes: one of each per detection"
        )
    real = np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[real], scores[real], classes[real]


def box_to_xyah(box: np.ndarray) -> np.ndarray:
    """A box as the Kalman filter measures it: centre, aspect ratio w/h and height. Unlike the
    corners, these move independently under constant velocity, and the size is separate from
    the position."""
    width, height = box[2] - box[0], box[3] - box[1]
    return np.array([box[0] + width / 2, box[1] + height / 2, width / height, height])


def xyah_to_box(xyah: np.ndarray) -> np.ndarray:
    """The inverse of :func:`box_to_xyah`; sides of at least ``MIN_SIDE``, since extrapolating
    a shrinking box can drive its height or aspect below zero."""
    height = max(float(xyah[3]), MIN_SIDE)
    width = max(float(xyah[2]) * height, MIN_SIDE)
    return np.array([xyah[0] - width / 2, xyah[1] - height / 2, xyah[0] + width / 2, xyah[1] + height / 2])


def noise_stds(height: float, position: float, aspect: float, velocity: float | None) -> np.ndarray:
    """Standard deviations for (cx, cy, a, h), then their velocities when ``velocity`` is given,
    scaled by the box height but for the aspect ratio."""
    stds = [position * height, position * height, aspect, position * height]
    if velocity is not None:
        stds += [velocity * height, velocity * height, ASPECT_VELOCITY_STD, velocity * height]
    return np.array(stds)


@dataclass
class KalmanBox:
    """A constant-velocity Kalman filter over (cx, cy, a, h) and their velocities."""

    mean: np.ndarray
    covariance: np.ndarray

    @classmethod
    def start(cls, box: np.ndarray) -> KalmanBox:
        """At rest where the box is; the velocity is unknown, so its variance is wide enough to
        take the first measured motion."""
        xyah = box_to_xyah(box)
        stds = noise_stds(xyah[3], 2 * POSITION_STD, ASPECT_STD, 10 * VELOCITY_STD)
        return cls(np.concatenate([xyah, np.zeros(4)]), np.diag(stds**2))

    def predict(self, hold_size: bool = False) -> None:
        """One frame on. ``hold_size`` drops the size velocity first: the noisiest part of the
        state, which over a long gap would shrink or swell the box out of reach of its object."""
        if hold_size:
            self.mean[6:] = 0.0
        stds = noise_stds(self.mean[3], POSITION_STD, ASPECT_STD, VELOCITY_STD)
        self.mean = TRANSITION @ self.mean
        self.covariance = TRANSITION @ self.covariance @ TRANSITION.T + np.diag(stds**2)

    def update(self, box: np.ndarray) -> None:
        """Corrects the state with a detection box."""
        stds = noise_stds(self.mean[3], POSITION_STD, ASPECT_MEASURE_STD, None)
        innovation_cov = OBSERVATION @ self.covariance @ OBSERVATION.T + np.diag(stds**2)
        gain = np.linalg.solve(innovation_cov, OBSERVATION @ self.covariance).T
        self.mean = self.mean + gain @ (box_to_xyah(box) - OBSERVATION @ self.mean)
        self.covariance = self.covariance - gain @ innovation_cov @ gain.T

    def box(self) -> np.ndarray:
        """Where the filter puts the box now, as xyxy."""
        return xyah_to_box(self.mean[:4])


@dataclass(eq=False)
class Track:
    """A BYTE track: tentative while ``track_id`` is None, then tracked, or lost while
    unmatched. ``missed`` counts frames since its last match, across update and predict."""

    kalman: KalmanBox
    box: np.ndarray  # the last matched detection
    score: float
    class_scores: dict[int, float]  # summed detection score per class, for a stable label
    hits: int = 1
    missed: int = 0
    lost: bool = False
    track_id: int | None = None

    @classmethod
    def start(cls, box: np.ndarray, score: float, class_id: int) -> Track:
        return cls(KalmanBox.start(box), box, score, {class_id: score})

    def match(self, box: np.ndarray, score: float, class_id: int) -> None:
        """The track found its detection of this frame."""
        self.kalman.update(box)
        self.box, self.score = box, score
        self.class_scores[class_id] = self.class_scores.get(class_id, 0.0) + score
        self.hits, self.missed, self.lost = self.hits + 1, 0, False

    def class_id(self) -> int:
        """The class with the most summed score: one frame's wrong label does not relabel the track."""
        return max(self.class_scores, key=self.class_scores.__getitem__)

    def report(self) -> Tracked:
        """When matched this frame, the detection's size at the Kalman filter's centre, else the
        Kalman prediction. The filtered centre does not jitter as detections do, which would
        carry an object standing by a counting line across it and back; the filtered size,
        though, lags behind a box that the frame edge cuts, so the size is the detection's."""
        detected = self.missed == 0
        box = self.kalman.box()
        if detected:
            xyah = box_to_xyah(self.box)
            box = xyah_to_box(np.concatenate([self.kalman.mean[:2], xyah[2:]]))
        assert self.track_id is not None
        return Tracked(self.track_id, self.class_id(), self.score, *map(float, box), detected=detected)


def assign(similarity: np.ndarray, min_similarity: float) -> list[tuple[int, int]]:
    """Hungarian pairs of rows and columns maximising the summed similarity, never below
    ``min_similarity``. Only the part above the gate counts as gain, so leaving a row and a
    column unpaired is worth as much as pairing them at the gate: one good pair is not given
    up for two poor ones, as a plain maximum-size assignment would."""
    if similarity.size == 0:
        return []
    rows, cols = linear_sum_assignment(np.clip(similarity - min_similarity, 0.0, None), maximize=True)
    return [(r, c) for r, c in zip(rows.tolist(), cols.tolist(), strict=True) if similarity[r, c] >= min_similarity]


@dataclass
class Association:
    """The outcome of matching tracks to some of a frame's detections (indices into the frame)."""

    pairs: list[tuple[Track, int]]
    unmatched_tracks: list[Track]
    unmatched_detections: np.ndarray


def similarities(
    tracks: list[Track],
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    params: ByteTrackParams,
    first_round: bool,
) -> np.ndarray:
    """How well each track's predicted box fits each detection: their IoU, weakened by two cues
    that IoU cannot see when one object passes under another of about its size, so that both
    boxes fit both predictions:

    - the class: a detector labels the two objects apart, so a detection of another class than
      the track's counts at ``class_mismatch_weight`` of its IoU (not zero, since a detector may
      mislabel a frame, and the track's label is itself a vote);
    - in the first association, the score (a weak cue, as in Hybrid-SORT, Yang et al. 2024): the
      hidden object's boxes are scored low frame after frame and the front one's high, so
      ``score_change_weight`` times the change from the track's last score is subtracted. Without
      it, a jittered box of the front object fits the hidden object's track better now and then
      and takes it, which swaps the two ids.

    In the first association the IoU is also weighed by the detection's score (ByteTrack's score
    fusion: a confident detection wins a close call) when ``fuse_score``."""
    similarity = iou_matrix([t.kalman.box() for t in tracks], boxes)
    track_classes = np.array([t.class_id() for t in tracks], dtype=int).reshape(-1, 1)
    similarity = np.where(track_classes == classes[None, :], similarity, similarity * params.class_mismatch_weight)
    if first_round:
        if params.fuse_score:
            similarity = similarity * scores[None, :]
        track_scores = np.array([t.score for t in tracks]).reshape(-1, 1)
        similarity = similarity - params.score_change_weight * np.abs(track_scores - scores[None, :])
    return similarity


def associate(
    tracks: list[Track], candidates: np.ndarray, similarity: np.ndarray, min_similarity: float
) -> Association:
    """Matches ``tracks`` to the detections ``candidates`` (indices into the frame), given the
    similarity of each track to each candidate."""
    pairs = assign(similarity, min_similarity)
    rows, cols = {r for r, _ in pairs}, {c for _, c in pairs}
    return Association(
        [(tracks[r], int(candidates[c])) for r, c in pairs],
        [t for i, t in enumerate(tracks) if i not in rows],
        np.array([d for j, d in enumerate(candidates) if j not in cols], dtype=int),
    )


@dataclass
class ByteTracker:
    """BYTE: two associations per frame, high-score detections first, then low-score ones."""

    params: ByteTrackParams = field(default_factory=ByteTrackParams)
    removed: list[int] = field(default_factory=list)
    tracks: list[Track] = field(default_factory=list)
    next_id: int = 1
    started: bool = False  # the first update confirms its tracks at once: nothing came before

    def update(self, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> list[Tracked]:
        """Associates one frame's detections; returns the confirmed tracks matched in it."""
        boxes, scores, classes = detections(boxes, scores, classes)
        p = self.params
        self.advance()
        high = np.flatnonzero(scores >= p.high_score)
        low = np.flatnonzero((scores >= p.low_score) & (scores < p.high_score))
        confirmed = [t for t in self.tracks if t.track_id is not None]

        def match(
            tracks: list[Track], candidates: np.ndarray, min_similarity: float, first_round: bool = False
        ) -> Association:
            found = similarities(tracks, boxes[candidates], scores[candidates], classes[candidates], p, first_round)
            return associate(tracks, candidates, found, min_similarity)

        first = match(confirmed, high, p.match_iou, first_round=True)
        # ByteTrack lets low boxes extend only the tracks matched at the previous update, a lost
        # track's prediction being too vague to trust a box that is as likely a false positive.
        # But an object passing under another is seen only in low boxes, for dozens of frames,
        # and one dropped box among them would lose it for good: with ``low_finds_lost`` a lost
        # track may take a low box too, still at the strict ``low_match_iou``.
        second = match([t for t in first.unmatched_tracks if p.low_finds_lost or not t.lost], low, p.low_match_iou)
        tentative = match(
            [t for t in self.tracks if t.track_id is None], first.unmatched_detections, p.unconfirmed_match_iou
        )
        for track in second.unmatched_tracks:
            track.lost = True
        for track, d in first.pairs + second.pairs + tentative.pairs:
            track.match(boxes[d], float(scores[d]), int(classes[d]))
        dead = set(map(id, tentative.unmatched_tracks))
        self.tracks = [t for t in self.tracks if id(t) not in dead]
        for d in tentative.unmatched_detections:
            if scores[d] >= p.new_track_score:
                self.tracks.append(Track.start(boxes[d], float(scores[d]), int(classes[d])))
        for track in self.tracks:
            if track.track_id is None and (track.hits >= p.min_hits or not self.started):
                track.track_id, self.next_id = self.next_id, self.next_id + 1
        self.started = True
        self.expire()
        return sorted((t.report() for t in self.tracks if t.track_id is not None and not t.missed), key=by_id)

    def predict(self) -> list[Tracked]:
        """A frame without detections: the tracks matched at the last update, moved on."""
        self.advance()
        self.expire()
        return sorted((t.report() for t in self.tracks if t.track_id is not None and not t.lost), key=by_id)

    def finish(self) -> list[int]:
        """The ids of the confirmed tracks left, tracked or lost; the tracker is then empty."""
        ids = sorted(t.track_id for t in self.tracks if t.track_id is not None)
        self.tracks = []
        return ids

    def advance(self) -> None:
        """Every track one frame on, a lost one at constant size."""
        for track in self.tracks:
            track.kalman.predict(hold_size=track.lost)
            track.missed += 1

    def expire(self) -> None:
        """Removes the tracks lost longer than ``lost_frames``, listing their ids in ``removed``."""
        expired = {id(t) for t in self.tracks if t.lost and t.missed > self.params.lost_frames}
        self.removed = sorted(t.track_id for t in self.tracks if id(t) in expired and t.track_id is not None)
        self.tracks = [t for t in self.tracks if id(t) not in expired]


def by_id(tracked: Tracked) -> int:
    return tracked.track_id


def centres(boxes: np.ndarray) -> np.ndarray:
    """The centre of each xyxy box, as (N, 2)."""
    return (boxes[:, :2] + boxes[:, 2:]) / 2


def greedy_nearest(distance: np.ndarray, max_distance: float) -> list[tuple[int, int]]:
    """The course's matching: rows in order of their nearest column's distance, each taking
    only that nearest column, when still free and close enough. A row whose nearest column
    went to another row stays unmatched, even when another column is near; keeping this
    reproduces the baseline rather than improving it."""
    rows = distance.min(axis=1).argsort()
    pairs: list[tuple[int, int]] = []
    taken: set[int] = set()
    for row, col in zip(rows.tolist(), distance.argmin(axis=1)[rows].tolist(), strict=True):
        if col not in taken and distance[row, col] <= max_distance:
            pairs.append((row, col))
            taken.add(col)
    return pairs


@dataclass
class CentroidObject:
    """An object of the centroid tracker: its last matched detection and how many updates since."""

    box: np.ndarray
    score: float
    class_id: int
    disappeared: int = 0


@dataclass
class CentroidTracker:
    """Register and deregister objects by the distance of box centres, without motion."""

    params: CentroidParams = field(default_factory=CentroidParams)
    removed: list[int] = field(default_factory=list)
    objects: dict[int, CentroidObject] = field(default_factory=dict)
    next_id: int = 1

    def update(self, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> list[Tracked]:
        """Matches the detections at or above ``min_score``; returns every object still registered."""
        boxes, scores, classes = detections(boxes, scores, classes)
        keep = scores >= self.params.min_score
        boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
        ids = list(self.objects)
        pairs = []
        if ids and len(boxes):
            known = centres(np.array([self.objects[i].box for i in ids]))
            pairs = greedy_nearest(cdist(known, centres(boxes)), self.params.max_distance)
        matched = {ids[r] for r, _ in pairs}
        for row, col in pairs:
            self.objects[ids[row]] = CentroidObject(boxes[col], float(scores[col]), int(classes[col]))
        self.removed = []
        for object_id in ids:
            if object_id not in matched:
                self.objects[object_id].disappeared += 1
                if self.objects[object_id].disappeared > self.params.max_disappeared:
                    del self.objects[object_id]
                    self.removed.append(object_id)
        taken = {c for _, c in pairs}
        for col in range(len(boxes)):
            if col not in taken:
                matched.add(self.next_id)
                self.objects[self.next_id] = CentroidObject(boxes[col], float(scores[col]), int(classes[col]))
                self.next_id += 1
        return self.report(matched)

    def predict(self) -> list[Tracked]:
        """A frame without detections: every object where it was last seen. Nobody looked, so
        nothing counts as having disappeared."""
        self.removed = []
        return self.report(set())

    def finish(self) -> list[int]:
        """The ids of the objects still registered; the tracker is then empty."""
        ids = sorted(self.objects)
        self.objects = {}
        return ids

    def report(self, matched: set[int]) -> list[Tracked]:
        return [
            Tracked(i, o.class_id, o.score, *map(float, o.box), detected=i in matched)
            for i, o in sorted(self.objects.items())
        ]


TRACKERS: dict[str, tuple[type, type]] = {
    "bytetrack": (ByteTrackParams, ByteTracker),
    "centroid": (CentroidParams, CentroidTracker),
}


def make_tracker(method: str, params: Mapping) -> Tracker:
    """A tracker from the config: ``method`` names it, ``params`` is its section. A misspelt
    key fails here instead of silently leaving the default in force."""
    if method not in TRACKERS:
        raise ValueError(f"unknown tracker {method!r}; choose one of {', '.join(sorted(TRACKERS))}")
    params_type, tracker_type = TRACKERS[method]
    known = {f.name for f in fields(params_type)}
    for key in params:
        if key not in known:
            raise ValueError(f"unknown {method} parameter {key!r}; known: {', '.join(sorted(known))}")
    try:
        return tracker_type(params_type(**dict(params)))
    except TypeError as err:  # a value of the wrong type, e.g. high_score=abc
        raise ValueError(f"{method} parameters {dict(params)}: {err}") from None
