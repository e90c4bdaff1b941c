"""Line and zone counting on hand-made tracks: each test is one way a naive counter double counts or
misses an object."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from odpipe.video.counting import (
    Counter,
    Event,
    Line,
    Zone,
    anchor_point,
    counters_from_config,
    in_direction,
    resolve,
    signed_distance,
)
from odpipe.video.trackers import Tracked

DOWN = Line("down", (0, 120), (320, 120))  # objects moving down the screen cross it `in`


def box(track_id: int, x: float, y: float, class_id: int = 1, height: float = 30) -> Tracked:
    """A 20 px wide box whose bottom centre (the default anchor) is at (x, y)."""
    return Tracked(track_id, class_id, 0.9, x - 10, y - height, x + 10, y, True)


def play(counter: Counter, frames: Sequence[Sequence[Tracked]]) -> list[Event]:
    """Feed frames 1, 2, ... at 10 fps, then end the video; all events in order."""
    events: list[Event] = []
    for frame, tracks in enumerate(frames, start=1):
        events += counter.update(frame, frame / 10, tracks)
    return events + counter.finish()


def path(track_id: int, points: Sequence[tuple[float, float]], class_id: int = 1) -> list[list[Tracked]]:
    """One track seen in every frame at the given anchor points."""
    return [[box(track_id, x, y, class_id)] for x, y in points]


def test_moving_down_counts_one_in_dated_at_the_first_frame_beyond_the_band() -> None:
    counter = Counter([DOWN])
    frames = path(1, [(160, y) for y in range(100, 145, 5)])  # y = 125 (frame 6) is the first beyond the band
    assert [counter.update(f, f / 10, t) for f, t in enumerate(frames[:6], start=1)] == [[]] * 6
    assert counter.update(7, 0.7, frames[6]) == [Event(6, 0.6, "down", 1, 1, "in")]  # confirmed on the 2nd frame
    assert play(counter, frames[7:]) == []
    assert counter.counts == {"down": {"in": {1: 1}, "out": {}}}


def test_moving_up_counts_one_out() -> None:
    counter = Counter([DOWN])
    events = play(counter, path(3, [(160, y) for y in range(140, 95, -5)], class_id=2))
    assert [(e.direction, e.track_id, e.class_id, e.frame) for e in events] == [("out", 3, 2, 6)]
    assert counter.counts == {"down": {"in": {}, "out": {2: 1}}}


def test_direction_convention_holds_for_a_diagonal_line_and_flips_with_its_ends() -> None:
    diagonal = Line("diag", (0, 0), (100, 100))  # walking down-right, the right-hand side is below-left
    assert in_direction(DOWN) == pytest.approx((0, 1))
    assert in_direction(diagonal) == pytest.approx((-(0.5**0.5), 0.5**0.5))
    assert signed_distance(diagonal, (20, 80)) > 0 > signed_distance(diagonal, (80, 20))
    moving = path(1, [(80 - 10 * i, 20 + 10 * i) for i in range(7)])  # from upper-right to lower-left
    assert [e.direction for e in play(Counter([diagonal]), moving)] == ["in"]
    reversed_line = Line("diag", (100, 100), (0, 0))
    assert [e.direction for e in play(Counter([reversed_line]), moving)] == ["out"]


FLICKER = path(1, [(160, y) for y in (100, 105, 110)] + [(160, 120 + (3 if i % 2 else -3)) for i in range(50)])


@pytest.mark.parametrize("min_frames", [1, 2])
def test_flicker_inside_the_band_never_counts(min_frames: int) -> None:
    counter = Counter([DOWN], margin=4, min_frames=min_frames)
    assert play(counter, FLICKER) == []
    # and it still counts the object once it really goes across
    counter = Counter([DOWN], margin=4, min_frames=min_frames)
    assert [e.direction for e in play(counter, FLICKER + path(1, [(160, 140), (160, 150)]))] == ["in"]


def test_without_the_band_the_same_flicker_is_counted() -> None:
    """What the band prevents: a naive counter (no band, no confirmation) counts all 49 flickers
    in ``every`` mode; ``net`` counts and takes back each, ending on what the last side says."""
    every = Counter([DOWN], margin=0, min_frames=1, mode="every")
    assert [e.direction for e in play(every, FLICKER)] == ["in", "out"] * 24 + ["in"]
    net = Counter([DOWN], margin=0, min_frames=1)
    assert [e.change for e in play(net, FLICKER)] == [1, -1] * 24 + [1]
    assert net.counts == {"down": {"in": {1: 1}, "out": {}}}  # it ended below: one in


def test_going_back_before_min_frames_cancels_the_crossing() -> None:
    counter = Counter([DOWN], min_frames=2)
    assert play(counter, path(1, [(160, 100), (160, 110), (160, 126), (160, 110), (160, 100)])) == []
    assert counter.counts == {"down": {"in": {}, "out": {}}}


def test_a_pending_crossing_is_confirmed_when_the_track_ends() -> None:
    counter = Counter([DOWN], min_frames=3)
    for frame, tracks in enumerate(path(1, [(160, 100), (160, 110), (160, 126)]), start=1):
        assert counter.update(frame, frame / 10, tracks) == []
    assert counter.end_tracks([1]) == [Event(3, 0.3, "down", 1, 1, "in")]
    assert counter.finish() == []  # the track was forgotten


def test_a_track_lost_mid_picture_right_after_crossing_is_not_counted() -> None:
    """One jittery observation past the band, then the tracker drops the track in the middle of
    the picture: nothing says the object went on, so with the frame known it does not count; the
    same at the end of the video does."""
    for video_ended, expected in ((False, []), (True, [Event(3, 0.3, "down", 1, 1, "in")])):
        counter = Counter([DOWN], min_frames=3, frame_size=(320, 240))
        for frame, tracks in enumerate(path(1, [(160, 100), (160, 110), (160, 126)]), start=1):
            counter.update(frame, frame / 10, tracks)
        assert counter.end_tracks([1], video_ended=video_ended) == expected


def leaving_through_the_bottom(track_id: int = 1) -> list[list[Tracked]]:
    """An object driving out of a 320x240 frame: once it reaches the edge, the detector's box is
    clipped there, so its bottom stays at y = 240 while the box shrinks."""
    moving = [[box(track_id, 160, y)] for y in (200, 210, 220, 230, 240)]
    return moving + [[box(track_id, 160, 240, height=h)] for h in (15,)]


def test_a_line_near_the_frame_edge_fires_for_an_object_leaving_the_frame() -> None:
    edge_line = Line("edge", (0, 237), (320, 237))  # 3 px above the bottom edge: inside a 4 px band
    counter = Counter([edge_line], margin=4, min_frames=3, frame_size=(320, 240))
    events = [e for f, t in enumerate(leaving_through_the_bottom(), start=1) for e in counter.update(f, f / 10, t)]
    assert events == []  # beyond the narrowed band for 2 frames of 3, then gone
    assert counter.end_tracks([1]) == [Event(5, 0.5, "edge", 1, 1, "in")]
    # without the frame size, the clipped anchor never leaves the band and the line cannot fire
    assert play(Counter([edge_line], margin=4, min_frames=3), leaving_through_the_bottom()) == []


def test_a_fast_object_seen_every_fifth_frame_is_counted() -> None:
    frames: list[list[Tracked]] = [[] for _ in range(15)]
    for frame, y in ((1, 80), (6, 160), (11, 200)):  # 40 px above, then 40 px below the line
        frames[frame - 1] = [box(1, 160, y)]
    assert play(Counter([DOWN]), frames) == [Event(6, 0.6, "down", 1, 1, "in")]


def test_passing_beyond_the_end_of_a_finite_line_does_not_count_but_updates_the_side() -> None:
    short = Line("short", (100, 120), (200, 120))
    around = [(250, y) for y in range(80, 170, 10)]  # down to the right of the line's end
    counter = Counter([short])
    assert play(counter, path(1, around)) == []
    # now below the line, the same track going up through it is an `out`: its side was updated
    back_up = [(x, 160) for x in range(240, 140, -20)] + [(150, y) for y in range(150, 70, -10)]
    counter = Counter([short], mode="every")
    assert [e.direction for e in play(counter, path(1, around + back_up))] == ["out"]
    counter = Counter([short])  # net: it ends above the line, where it began
    assert counter.counts == {"short": {"in": {}, "out": {}}} and play(counter, path(1, around + back_up)) == []


def test_down_up_down_counts_each_crossing_or_where_it_ended() -> None:
    ys = list(range(100, 150, 10)) + list(range(140, 90, -10)) + list(range(100, 150, 10))
    every = Counter([DOWN], mode="every")
    assert [e.direction for e in play(every, path(1, [(160, y) for y in ys]))] == ["in", "out", "in"]
    assert every.counts == {"down": {"in": {1: 2}, "out": {1: 1}}}
    net = Counter([DOWN])
    assert [(e.direction, e.change) for e in play(net, path(1, [(160, y) for y in ys]))] == [
        ("in", 1),
        ("in", -1),
        ("in", 1),
    ]
    assert net.counts == {"down": {"in": {1: 1}, "out": {}}}


@pytest.mark.parametrize("stop", [118, 122])  # 2 px before or past the line, inside the band
def test_an_object_stopping_in_the_band_and_changing_id_is_not_counted(stop: int) -> None:
    counter = Counter([DOWN])
    old = path(1, [(160, y) for y in (90, 100, 110)] + [(160, stop)] * 20)
    new = path(2, [(160, stop)] * 5 + [(160, y) for y in range(130, 170, 10)])  # the new id drives on
    events = [e for f, t in enumerate(old, start=1) for e in counter.update(f, f / 10, t)]
    events += counter.end_tracks([1])
    events += [e for f, t in enumerate(new, start=len(old) + 1) for e in counter.update(f, f / 10, t)]
    assert events + counter.finish() == []


def test_after_an_id_switch_only_the_track_that_crossed_counts() -> None:
    counter = Counter([DOWN])
    old = path(1, [(160, y) for y in (90, 100, 110, 126, 128)] + [(160, 122)] * 20)  # crossed, crept back
    new = path(2, [(160, 122)] * 5 + [(160, y) for y in range(130, 170, 10)])
    events = [e for f, t in enumerate(old, start=1) for e in counter.update(f, f / 10, t)]
    events += counter.end_tracks([1])
    events += [e for f, t in enumerate(new, start=len(old) + 1) for e in counter.update(f, f / 10, t)]
    assert events + counter.finish() == [Event(4, 0.4, "down", 1, 1, "in")]


def test_two_tracks_crossing_in_the_same_frame_count_twice() -> None:
    frames = [[box(1, 100, y, class_id=1), box(2, 130, y, class_id=2)] for y in range(100, 150, 10)]
    counter = Counter([DOWN])
    events = play(counter, frames)
    assert [(e.track_id, e.frame) for e in events] == [(1, 4), (2, 4)]
    assert counter.counts == {"down": {"in": {1: 1, 2: 1}, "out": {}}}


SQUARE = Zone("square", [(100, 100), (200, 100), (200, 200), (100, 200)])


def test_entering_and_leaving_a_square_zone_count_one_in_and_one_out() -> None:
    counter = Counter([SQUARE], mode="every")
    events = play(counter, path(1, [(x, 150) for x in range(50, 260, 10)]))
    assert [(e.direction, e.frame) for e in events] == [("in", 7), ("out", 17)]  # x = 110 and x = 210
    assert counter.counts == {"square": {"in": {1: 1}, "out": {1: 1}}}
    counter = Counter([SQUARE])  # net: through and out again is nothing, once it is out
    assert [(e.direction, e.change) for e in play(counter, path(1, [(x, 150) for x in range(50, 260, 10)]))] == [
        ("in", 1),
        ("in", -1),
    ]


def test_zone_distance_is_signed_by_inside_for_a_concave_polygon() -> None:
    ell = Zone("ell", [(0, 0), (100, 0), (100, 40), (40, 40), (40, 100), (0, 100)])
    assert signed_distance(ell, (20, 20)) == pytest.approx(20)
    assert signed_distance(ell, (70, 70)) == pytest.approx(-30)  # in the notch: outside
    assert signed_distance(ell, (70, 35)) == pytest.approx(5)


def test_counts_list_every_counter_and_direction_even_when_zero() -> None:
    counter = Counter([DOWN, Zone("z", [(0, 0), (10, 0), (0, 10)])])
    assert counter.counts == {"down": {"in": {}, "out": {}}, "z": {"in": {}, "out": {}}}
    counter.counts["down"]["in"][1] = 5  # a copy: the counter's own counts are untouched
    assert counter.counts["down"]["in"] == {}


@pytest.mark.parametrize(
    ("lines", "zones", "message"),
    [
        (
            [{"name": "gate", "start": [0, 0], "end": [1, 1]}],
            [{"name": "gate", "points": [[0, 0], [1, 0], [0, 1]]}],
            "duplicate counter name 'gate'",
        ),
        ([{"name": "stub", "start": [5, 5], "end": [5, 5]}], [], "line 'stub': zero length"),
        ([], [{"name": "thin", "points": [[0, 0], [10, 0]]}], "zone 'thin': a polygon needs at least 3 points"),
        ([], [{"name": "flat", "points": [[0, 0], [5, 0], [10, 0]]}], "zone 'flat': the points enclose no area"),
        ([{"name": "typo", "start": [0, "x"], "end": [1, 1]}], [], "line 'typo' start: coordinates must be"),
        ([{"name": "short", "start": [0], "end": [1, 1]}], [], r"line 'short' start: expected \[x, y\]"),
        ([{"start": [0, 0], "end": [1, 1]}], [], r"lines\[0\]: missing name"),
        ([{"name": "half", "start": [0, 0]}], [], r"line 'half': missing \['end'\]"),
        ([], [{"name": "sq", "point": [[0, 0], [1, 0], [0, 1]]}], r"zone 'sq': unknown keys \['point'\]"),
        ([{"name": "far", "start": [0, 0], "end": [640, 1], "relative": True}], [], "line 'far': relative"),
    ],
)
def test_config_errors_name_the_entry(lines: list, zones: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        counters_from_config(lines, zones)


def test_relative_coordinates_resolve_to_pixels() -> None:
    counters = counters_from_config(
        [
            {"name": "mid", "start": [0, 0.5], "end": [1, 0.5], "relative": True},
            {"name": "px", "start": [0, 9], "end": [9, 9]},
        ],
        [{"name": "box", "points": [[0.25, 0.25], [0.75, 0.25], [0.75, 0.75]], "relative": True}],
    )
    line, pixels, zone = (resolve(c, 640, 480) for c in counters)
    assert line == Line("mid", (0, 240), (640, 240))
    assert zone == Zone("box", ((160, 120), (480, 120), (480, 360)))
    assert pixels is counters[1]
    with pytest.raises(ValueError, match="'mid' has relative coordinates"):
        Counter(counters)


def test_anchor_points() -> None:
    tracked = Tracked(1, 1, 0.9, 10, 20, 30, 60, True)
    assert anchor_point(tracked) == (20, 60)
    assert anchor_point(tracked, "center") == (20, 40)
    assert anchor_point(tracked, "top_center") == (20, 20)
    with pytest.raises(ValueError, match="unknown anchor"):
        Counter([DOWN], anchor="feet")


FRAME = (320, 240)


def hidden_crossing(new_class: int = 1, new_x: float = 160, gap: int = 20) -> list[list[Tracked]]:
    """Track 1 comes down to 30 px above the line and vanishes mid-picture (hidden); ``gap`` frames
    later (10 fps) track 2 comes out 25 px past the line and drives on down."""
    old = path(1, [(160, y) for y in range(40, 95, 5)])
    new = path(2, [(new_x, y) for y in range(145, 185, 5)], class_id=new_class)
    return old + [[] for _ in range(gap)] + new


def test_an_object_hidden_while_crossing_counts_under_its_new_id() -> None:
    counter = Counter([DOWN], frame_size=FRAME)
    events = play(counter, hidden_crossing())
    assert [(e.track_id, e.direction) for e in events] == [(2, "in")]
    # without rejoining (or without the frame size, which says where the edges are) it is missed
    assert play(Counter([DOWN], frame_size=FRAME, rejoin=0), hidden_crossing()) == []
    assert play(Counter([DOWN]), hidden_crossing()) == []


@pytest.mark.parametrize("change", [{"new_x": 280}, {"gap": 60}], ids=["out of reach", "too late"])
def test_a_new_track_continues_no_track_far_away_or_long_gone(change: dict) -> None:
    assert play(Counter([DOWN], frame_size=FRAME, rejoin=5), hidden_crossing(**change)) == []


def test_a_hidden_object_labelled_otherwise_when_it_shows_again_counts_under_its_class_of_most_frames() -> None:
    """What shows of an object coming out from behind another is often taken for another class: the
    new id continues the old one whatever its class, and the count goes to the class of the object's
    life (11 frames of class 1 against 8 of class 2)."""
    counter = Counter([DOWN], frame_size=FRAME)
    events = play(counter, hidden_crossing(new_class=2))
    assert [(e.track_id, e.class_id, e.direction, e.change) for e in events] == [(2, 1, "in", 1)]
    assert counter.counts == {"down": {"in": {1: 1}, "out": {}}}


@pytest.mark.parametrize("mode", ["net", "every"])
def test_counts_move_to_the_class_an_object_is_seen_as_most_once_it_leads(mode: str) -> None:
    """Labelled 2 for its first 8 frames (crossing at the 8th), then 1 for 12: counted as 2, then moved
    to 1 when class 1's summed score overtakes, by a pair of events that keep every sum right."""
    frames = [[box(1, 160, y, class_id=2 if i < 8 else 1)] for i, y in enumerate(range(90, 190, 5))]
    counter = Counter([DOWN], mode=mode)
    events = play(counter, frames)
    assert [(e.class_id, e.change, e.frame) for e in events] == [(2, 1, 8), (2, -1, 17), (1, 1, 17)]
    assert counter.counts == {"down": {"in": {1: 1}, "out": {}}}


def test_a_track_that_enters_at_the_frame_edge_continues_nothing() -> None:
    """It came into the picture: it is an object of its own, even just after another vanished nearby."""
    old = path(1, [(160, y) for y in range(40, 95, 5)])
    new = path(2, [(160, y) for y in range(236, 60, -10)])  # in through the bottom edge, then up across
    events = play(Counter([DOWN], frame_size=FRAME), old + new)
    assert [(e.track_id, e.direction) for e in events] == [(2, "out")]


def test_a_counted_track_continued_by_a_new_id_is_not_counted_again() -> None:
    """Counted, then hidden and back under a new id further on: the count moved with the state."""
    counter = Counter([DOWN], frame_size=FRAME)
    old = path(1, [(160, y) for y in range(90, 150, 10)])  # crosses at 130, counted
    new = path(2, [(160, y) for y in range(170, 200, 5)])
    events = play(counter, old + [[]] * 10 + new)
    assert [(e.track_id, e.direction) for e in events] == [(1, "in")]


def _ys(*legs: Sequence[float]) -> list[tuple[float, float]]:
    return [(160, y) for leg in legs for y in leg]


# The scenarios that break counters, on DOWN (in: moving down), as the built-in video has them.
SCENARIOS = {
    # comes down, swings 14 px either side of the line nine times, drives off below
    "hover_ends_far": path(1, _ys(range(80, 115, 5), ([134] * 3 + [106] * 3) * 4, [134] * 3, range(140, 180, 10))),
    "u_turn": path(1, _ys(range(80, 160, 10), range(150, 70, -10))),  # across and back: ends where it began
    "stop_on_line": path(1, _ys(range(80, 120, 10), [120] * 30, range(130, 180, 10))),  # waits in the band
    "opposite_pair": [  # two objects crossing together, one each way
        [box(1, 140, y), box(2, 180, 250 - y)] for y in range(80, 180, 10)
    ],
}
TRUE_COUNTS = {  # (in, out) per mode
    "hover_ends_far": {"net": (1, 0), "every": (5, 4)},
    "u_turn": {"net": (0, 0), "every": (1, 1)},
    "stop_on_line": {"net": (1, 0), "every": (1, 0)},
    "opposite_pair": {"net": (1, 1), "every": (1, 1)},
}


@pytest.mark.parametrize("mode", ["net", "every"])
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_each_scenario_gives_its_true_count_in_each_mode(scenario: str, mode: str) -> None:
    counter = Counter([DOWN], margin=6, mode=mode)
    events = play(counter, SCENARIOS[scenario])
    totals = tuple(sum(counter.counts["down"][d].values()) for d in ("in", "out"))
    assert totals == TRUE_COUNTS[scenario][mode]
    assert totals == tuple(sum(e.change for e in events if e.direction == d) for d in ("in", "out"))


ZONE_PATHS = {  # anchor paths against SQUARE (100..200 both ways), and whether each ends inside
    "enters_and_stays": ([(x, 150) for x in range(50, 160, 10)], True),
    "passes_through": ([(x, 150) for x in range(50, 260, 10)], False),
    "starts_inside_leaves": ([(150, y) for y in range(150, 260, 10)], False),
    "starts_inside_stays": ([(150, 150)] * 10, True),
    "hovers_on_the_edge_ends_in": ([(x, 150) for x in (80, 90) + (112, 88) * 4 + (112, 130)], True),
    "hovers_on_the_edge_ends_out": ([(x, 150) for x in (80, 90) + (112, 88) * 4], False),
}


@pytest.mark.parametrize("mode", ["net", "every"])
def test_in_minus_out_over_a_zone_is_the_tracks_last_seen_inside(mode: str) -> None:
    counter = Counter([SQUARE], margin=6, mode=mode)
    lives = [path(i, points) for i, (points, _) in enumerate(ZONE_PATHS.values(), start=1)]
    frames = [[t for life in lives if f < len(life) for t in life[f]] for f in range(max(map(len, lives)))]
    play(counter, frames)
    counts = counter.counts["square"]
    inside = sum(ends_inside for _, ends_inside in ZONE_PATHS.values())
    assert sum(counts["in"].values()) - sum(counts["out"].values()) == inside == 3


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown counting mode 'once'"):
        Counter([DOWN], mode="once")
