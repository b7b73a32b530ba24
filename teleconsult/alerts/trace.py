"""Per-event delivery timings of one node's alert hub (``[ext.alerts] trace_file``; used by ``tbib bench alerts``).

For every alert event the hub dispatches, the trace keeps when the hub took its notification off the LISTEN
connection, how many subscribers it was offered to, and when the first and the last ``/ws/v1/alerts`` socket write of
it returned (wall clock, seconds since the epoch, the clock of the other hops). An entry is written as one JSON line
``{"id", "hub_at", "offered", "sends", "first_send_at", "last_send_at"}`` once it is ``settle_s`` old, to a file
appended to by :meth:`DeliveryTrace.run`. Cost: one dict update per event and per socket write; off by default.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

#: At most this many events are held (older ones are written early rather than kept without bound).
MAX_PENDING: Final = 10_000


@dataclass(slots=True)
class _Entry:
    hub_at: float
    offered: int
    sends: int = 0
    first_send_at: float | None = None
    last_send_at: float | None = None


@dataclass
class DeliveryTrace:
    """See the module docstring. ``clock`` is injectable for tests."""

    path: Path
    settle_s: float = 2.0
    clock: Callable[[], float] = time.time
    _pending: dict[int, _Entry] = field(default_factory=dict)

    def dispatched(self, event_id: int, offered: int, at: float | None = None) -> None:
        """The hub took event ``event_id`` off its connection (``at``) and offered it to ``offered`` subscribers."""
        if event_id not in self._pending:
            self._pending[event_id] = _Entry(self.clock() if at is None else at, offered)

    def sent(self, event_id: int) -> None:
        """A socket write of event ``event_id`` returned."""
        entry = self._pending.get(event_id)
        if entry is None:
            return
        now = self.clock()
        if entry.first_send_at is None:
            entry.first_send_at = now
        entry.last_send_at = now
        entry.sends += 1

    def due(self, *, everything: bool = False) -> list[str]:
        """JSON lines of the entries old enough (or all), removed from the trace."""
        limit = self.clock() - self.settle_s
        over = len(self._pending) - MAX_PENDING
        out: list[str] = []
        for event_id in list(self._pending):
            entry = self._pending[event_id]
            if not (everything or over > 0 or entry.hub_at <= limit):
                continue  # dicts keep insertion order, but a late send may still come: check each
            over -= 1
            del self._pending[event_id]
            out.append(
                json.dumps(
                    {
                        "id": event_id,
                        "hub_at": entry.hub_at,
                        "offered": entry.offered,
                        "sends": entry.sends,
                        "first_send_at": entry.first_send_at,
                        "last_send_at": entry.last_send_at,
                    },
                    separators=(",", ":"),
                )
            )
        return out

    def write(self, *, everything: bool = False) -> int:
        """Append the due entries to :attr:`path`; returns how many were written."""
        lines = self.due(everything=everything)
        if lines:
            with self.path.open("a", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
        return len(lines)

    async def run(self, every_s: float = 1.0) -> None:
        """Write due entries every ``every_s`` until cancelled, then everything left."""
        try:
            while True:
                await asyncio.sleep(every_s)
                self.write()
        finally:
            self.write(everything=True)
