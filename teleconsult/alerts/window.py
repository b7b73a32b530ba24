"""Time series of one patient's metric for trend rules: sorted points, trimmed, with cheap window extremes.

Pure (no clock, no I/O). :meth:`Series.extreme` answers "the highest (or lowest) value measured in ``[start, end)``".
A plain scan costs the whole window per reading (at 30 readings/s and a 10-minute window, 18 000 points per call: the
engine's hottest line under ingest load, see ``docs/benchmarks/alerts.md``). Here each query key keeps a monotonic deque
(the classic sliding-window maximum): when points arrive in time order and successive queries of a key move forward
(both true for the newest readings that drive trends), a query costs O(1) amortized. Anything else (a late, older
point inside the part already fed, a window that moves backwards) rebuilds that key's deque from the sorted points:
one scan, as before, and the answer is the same either way.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

_Point = tuple[datetime, float]
_LOWEST = float("-inf")


@dataclass(slots=True)
class _Monotonic:
    """Points of ``[start, end)``, values strictly decreasing (highest) or increasing (lowest) front to back."""

    highest: bool
    items: deque[_Point] = field(default_factory=deque)
    fed: int = 0
    """``points[:fed]`` have been pushed (or skipped as older than ``start``)."""
    start: datetime | None = None
    end: datetime | None = None


class Series:
    """Sorted ``(measured_at, value)`` points, trimmed to the last ``keep`` before the newest point."""

    __slots__ = ("_keys", "keep", "points")

    def __init__(self, keep: timedelta) -> None:
        self.keep = keep
        self.points: list[_Point] = []
        self._keys: dict[str, _Monotonic] = {}

    def add(self, at: datetime, value: float) -> None:
        """Insert a point (any order; equal times are kept side by side) and drop points older than ``keep``."""
        point = (at, value)
        if not self.points or point >= self.points[-1]:
            self.points.append(point)
        else:
            i = bisect.bisect_right(self.points, point)
            self.points.insert(i, point)
            for mono in self._keys.values():
                if i < mono.fed:
                    mono.start = None  # inserted inside what this key has seen: rebuild on its next query
        cut = bisect.bisect_left(self.points, (self.points[-1][0] - self.keep, _LOWEST))
        if cut:
            del self.points[:cut]
            for mono in self._keys.values():
                mono.fed = max(0, mono.fed - cut)

    def extreme(self, key: str, start: datetime, end: datetime, *, highest: bool) -> float | None:
        """The highest (``highest``) or lowest value with ``start <= measured_at < end``; None when there is none.

        ``key`` names the caller's window (one per trend rule): each key keeps its own deque.
        """
        mono = self._keys.get(key)
        if mono is None or mono.highest is not highest:
            mono = self._keys[key] = _Monotonic(highest)
        points = self.points
        if mono.start is None or mono.end is None or start < mono.start or end < mono.end:
            mono.items.clear()
            mono.fed = bisect.bisect_left(points, (start, _LOWEST))
        hi = bisect.bisect_left(points, (end, _LOWEST))
        items = mono.items
        for i in range(mono.fed, hi):
            point = points[i]
            if highest:
                while items and items[-1][1] <= point[1]:
                    items.pop()
            else:
                while items and items[-1][1] >= point[1]:
                    items.pop()
            items.append(point)
        mono.fed = max(mono.fed, hi)
        floor = max(start, points[0][0]) if points else start  # never a point trimmed since it was fed
        while items and items[0][0] < floor:
            items.popleft()
        mono.start, mono.end = start, end
        return items[0][1] if items else None
