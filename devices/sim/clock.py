"""Simulated time: maps the event loop's monotonic clock to simulated aware-UTC datetimes with a speed factor.

Only the asyncio driver and the bleak backend read a `SimClock`; the peripherals and the physiology receive `now`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta

from devices.errors import SimulationError


class SimClock:
    """Simulated time = `start` + (monotonic elapsed) x `speed`."""

    def __init__(self, start: datetime, speed: float = 1.0, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        if start.tzinfo is None:
            raise SimulationError("SimClock start must be timezone-aware")
        if speed <= 0:
            raise SimulationError("SimClock speed must be > 0")
        self.start = start
        self.speed = speed
        self._monotonic = monotonic
        self._t0 = monotonic()

    def now(self) -> datetime:
        """Current simulated time (aware UTC)."""
        return self.start + timedelta(seconds=(self._monotonic() - self._t0) * self.speed)

    def real_delay(self, until: datetime) -> float:
        """Real seconds to wait until the simulated instant `until` (0 if it has passed)."""
        return max(0.0, (until - self.now()).total_seconds() / self.speed)

    def sim_duration(self, real_seconds: float) -> timedelta:
        """Simulated duration of `real_seconds` of real time."""
        return timedelta(seconds=real_seconds * self.speed)
