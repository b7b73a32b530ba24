"""A timer wheel for the pure engine: named deadlines, re-armable and cancellable, in time order (no clock)."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from datetime import datetime


class Timers:
    """Deadlines keyed by ``(kind, key)``; arming again replaces the deadline (lazy deletion in a heap)."""

    def __init__(self) -> None:
        self._heap: list[tuple[datetime, int, str, object]] = []
        self._live: dict[tuple[str, object], int] = {}
        self._seq = itertools.count()

    def arm(self, kind: str, key: object, when: datetime) -> None:
        """Set (or move) the deadline of ``(kind, key)``."""
        seq = next(self._seq)
        self._live[(kind, key)] = seq
        heapq.heappush(self._heap, (when, seq, kind, key))

    def cancel(self, kind: str, key: object) -> None:
        """Forget the deadline of ``(kind, key)`` (no-op when none)."""
        self._live.pop((kind, key), None)

    def next(self) -> datetime | None:
        """The earliest live deadline."""
        while self._heap:
            when, seq, kind, key = self._heap[0]
            if self._live.get((kind, key)) == seq:
                return when
            heapq.heappop(self._heap)
        return None

    def due(self, now: datetime) -> Iterator[tuple[str, object]]:
        """Pop every live deadline at or before ``now``, in time order (safe to arm new ones meanwhile)."""
        while self._heap and self._heap[0][0] <= now:
            _when, seq, kind, key = heapq.heappop(self._heap)
            if self._live.get((kind, key)) == seq:
                del self._live[(kind, key)]
                yield kind, key
