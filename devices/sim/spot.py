"""Spot-check devices: measure on a schedule (or on demand), store, and indicate stored results when subscribed.

Contract: like real cuffs, thermometers and scales, a spot device measures at `first + k x interval` whether or not a
gateway is connected (or when `trigger(now)` is called: the patient pressed the button), keeps up to `memory` results
stamped with its own clock, and indicates each stored result once the client has subscribed to the measurement
characteristic (oldest first), then stays idle until the next measurement.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta
from typing import Any

from devices.sim.base import Schedule, SimPeripheral


class SpotDevice(SimPeripheral):
    """Base of the spot-check devices; subclasses define `measurement_uuid` and `measure(now)`."""

    measurement_uuid: str = ""

    def __init__(
        self,
        *,
        interval: timedelta = timedelta(minutes=30),
        first_measurement: timedelta | None = None,
        memory: int = 30,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        start = self.patient.profile.start
        self.schedule = Schedule(start + (interval if first_measurement is None else first_measurement), interval)
        self.stored: deque[bytes] = deque(maxlen=memory)
        """Encoded results not yet delivered, oldest first (bounded like a device memory)."""

    def measure(self, now: datetime) -> bytes:
        """Encode one measurement taken at `now` (subclasses)."""
        raise NotImplementedError

    def trigger(self, now: datetime) -> None:
        """The patient starts a measurement now (outside the schedule)."""
        self.stored.append(self.measure(now))
        self._deliver()

    def get_timer(self) -> datetime | None:
        """Next scheduled measurement."""
        return self.schedule.next_at

    def handle_timer(self, now: datetime) -> None:
        """Take the measurements due by `now`, then deliver what is stored."""
        for at in self.schedule.due(now):
            self.stored.append(self.measure(at))
        self._deliver()

    def on_subscribe(self, char_uuid: str, now: datetime) -> None:
        """Deliver the stored results as soon as the measurement characteristic is subscribed."""
        self.handle_timer(now)

    def _deliver(self) -> None:
        while self.stored and self.emit(self.measurement_uuid, self.stored[0]):
            self.stored.popleft()
