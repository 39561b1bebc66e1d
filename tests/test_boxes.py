import math

import pytest

from medtfod.core.boxes import Box


def test_xywh_round_trip():
    b = Box.from_xywh(10.5, 20.25, 30.0, 40.0)
    assert (b.xmin, b.ymin, b.xmax, b.ymax) == (10.5, 20.25, 40.5, 60.25)
    assert b.to_xywh() == (10.5, 20.25, 30.0, 40.0)
    assert b.area == 1200.0


def test_normalized_round_trip():
    b = Box(12.0, 34.0, 100.0, 120.0)
    yxyx = b.to_normalized_yxyx(200, 400)
    assert yxyx == (34.0 / 400, 12.0 / 200, 120.0 / 400, 100.0 / 200)
    back = Box.from_normalized_yxyx(yxyx, 200, 400)
    for a, e in zip((back.xmin, back.ymin, back.xmax, back.ymax), (12.0, 34.0, 100.0, 120.0)):
        assert a == pytest.approx(e, abs=1e-9)


@pytest.mark.parametrize("box, size, expect", [
    (Box(0, 0, 10, 10), (10, 10), None),
    (Box(math.nan, 0, 10, 10), None, "finite"),
    (Box(5, 0, 5, 10), None, "no area"),
    (Box(6, 0, 5, 10), None, "no area"),
    (Box(0, 0, 11, 10), (10, 10), "extends past the 10x10 image"),
])
def test_problem(box, size, expect):
    issue = box.problem(*(size or (None, None)))
    if expect is None:
        assert issue is None
    else:
        assert expect in issue


def test_tolerance_then_clip():
    b = Box(-1.5, 0, 10, 11)
    assert b.problem(10, 10, tolerance=2) is None
    assert b.problem(10, 10, tolerance=1) is not None
    assert b.clipped(10, 10) == Box(0, 0, 10, 10)
