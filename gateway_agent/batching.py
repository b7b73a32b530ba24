"""Pure cores of the publisher: which outbox entries make the next batch (:class:`BatchPlanner`) and the reconnect
delays (:class:`Backoff`). No socket, no clock: the caller passes ``now``."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from gateway_agent.outbox import OutboxEntry


@dataclass(frozen=True, slots=True)
class Batch:
    """A batch in flight: its reading ids and capture sequence range."""

    ids: tuple[str, ...]
    first_seq: int
    last_seq: int


class BatchPlanner:
    """Which readings to send next and which to remove on PUBACK. Pure: the caller passes ``now`` and entries."""

    def __init__(self, *, max_readings: int, max_delay: float, window: int) -> None:
        self.max_readings = max_readings
        self.max_delay = max_delay
        self.window = window
        self.cursor = 0
        """Highest capture sequence number already put into a batch."""
        self._inflight: dict[int, Batch] = {}
        self._unsent_since: float | None = None

    def noticed(self, now: float) -> None:
        """New readings were appended to the outbox (or found there at start)."""
        if self._unsent_since is None:
            self._unsent_since = now

    def room(self) -> int:
        """How many more batches may be published now."""
        return max(0, self.window - len(self._inflight))

    def inflight(self) -> int:
        """Batches published and not yet acknowledged."""
        return len(self._inflight)

    def inflight_readings(self) -> int:
        """Readings in the batches in flight."""
        return sum(len(b.ids) for b in self._inflight.values())

    def should_send(self, entries: Sequence[OutboxEntry], now: float) -> bool:
        """Whether these entries (peeked after :attr:`cursor`) make a batch now: full, or the oldest waited enough."""
        if not entries or not self.room():
            return False
        if len(entries) >= self.max_readings:
            return True
        since = self._unsent_since if self._unsent_since is not None else now
        return now - since >= self.max_delay

    def sent(self, mid: int, entries: Sequence[OutboxEntry], *, now: float) -> Batch:
        """Record a published batch (``mid`` from paho)."""
        batch = Batch(tuple(e.id for e in entries), entries[0].seq, entries[-1].seq)
        self._inflight[mid] = batch
        self.cursor = max(self.cursor, batch.last_seq)
        self._unsent_since = None if len(entries) < self.max_readings else now
        return batch

    def resent(self, mid: int, entries: Sequence[OutboxEntry]) -> Batch:
        """Record a re-sent batch (receipt overdue): in flight again, without moving the cursor or the batch timer."""
        batch = Batch(tuple(e.id for e in entries), entries[0].seq, entries[-1].seq)
        self._inflight[mid] = batch
        return batch

    def nothing_unsent(self) -> None:
        """The outbox has nothing after :attr:`cursor`."""
        self._unsent_since = None

    def acked(self, mid: int, *, success: bool) -> Batch | None:
        """A PUBACK arrived: the batch (remove its readings if ``success``; a failed one is re-sent later)."""
        batch = self._inflight.pop(mid, None)
        if batch is not None and not success:
            self.cursor = min(self.cursor, batch.first_seq - 1)
        return batch

    def forget_inflight(self) -> None:
        """The client that carried the in-flight batches is gone: re-send everything after the last acknowledged one."""
        if self._inflight:
            self.cursor = min(b.first_seq for b in self._inflight.values()) - 1
        self._inflight.clear()

    def get_timer(self) -> float | None:
        """When a partial batch becomes due (monotonic seconds), if one is waiting."""
        return None if self._unsent_since is None else self._unsent_since + self.max_delay


class Backoff:
    """Exponential backoff with "equal jitter": the n-th delay is in [d/2, d], d = min(maximum, initial * 2**n)."""

    def __init__(self, *, initial: float = 0.5, maximum: float = 60.0, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.maximum = maximum
        self.attempts = 0
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not crypto)

    def next_delay(self, *, floor: float = 0.0) -> float:
        """The next delay (seconds); at least ``floor`` before jitter (refused credentials back off harder)."""
        d = min(self.maximum, max(floor, self.initial * 2.0**self.attempts))
        self.attempts += 1
        return d / 2 + self._rng.uniform(0, d / 2)

    def reset(self) -> None:
        """The link worked: start again from the initial delay."""
        self.attempts = 0
