"""Trend windows: the monotonic-deque extremes equal a plain scan of the kept points, whatever the arrival order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from teleconsult.alerts.window import Series

T0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
KEEP = timedelta(seconds=60)


def scan(points: list[tuple[datetime, float]], start: datetime, end: datetime, highest: bool) -> float | None:
    values = [v for t, v in points if start <= t < end]
    if not values:
        return None
    return max(values) if highest else min(values)


def test_in_order_stream_matches_scan_and_trims() -> None:
    s = Series(KEEP)
    for i in range(500):
        at = T0 + timedelta(seconds=i * 0.5)
        value = float((i * 37) % 11)
        s.add(at, value)
        for highest in (True, False):
            start = at - timedelta(seconds=30)
            got = s.extreme(f"w{highest}", start, at, highest=highest)
            assert got == scan(s.points, start, at, highest)
    assert s.points[0][0] >= s.points[-1][0] - KEEP  # trimmed to keep


def test_late_point_inside_the_fed_part_is_seen() -> None:
    s = Series(KEEP)
    for i in range(10):
        s.add(T0 + timedelta(seconds=i), 90.0)
    end = T0 + timedelta(seconds=9)
    assert s.extreme("fall", T0, end, highest=True) == 90.0
    s.add(T0 + timedelta(seconds=3), 99.0)  # late and older: must count for the next query
    s.add(T0 + timedelta(seconds=10), 85.0)
    assert s.extreme("fall", T0, T0 + timedelta(seconds=10), highest=True) == 99.0


def test_empty_window_is_none() -> None:
    s = Series(KEEP)
    s.add(T0, 1.0)
    assert s.extreme("k", T0, T0, highest=True) is None  # only the current point: nothing earlier


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 200), st.integers(0, 20), st.integers(5, 80), st.booleans(), st.integers(-30, 3)),
        min_size=1,
        max_size=120,
    )
)
def test_any_order_matches_scan(ops: list[tuple[int, int, int, bool, int]]) -> None:
    s = Series(KEEP)
    for t, v, window, highest, end_shift in ops:
        at = T0 + timedelta(seconds=t)
        s.add(at, float(v))
        end = s.points[-1][0] + timedelta(seconds=end_shift)
        start = end - timedelta(seconds=window)
        key = f"{highest}-{window % 3}"
        assert s.extreme(key, start, end, highest=highest) == scan(s.points, start, end, highest)
