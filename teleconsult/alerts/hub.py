"""Per-process fan-out of alert events and live readings to websocket subscribers.

One :class:`Hub` per API process LISTENs on PostgreSQL (``tbib_alert_events`` from the alert store, ``tbib_readings``
from committed readings), so a subscriber on any node sees what the engine leader or any ingest worker committed.
An alert notification carries the frame itself (or, for a large event, only its id: the hub then reads the rows of
``alert_events`` with id > its cursor); each event is offered to the subscribers whose patients include its patient.

Each subscriber has a bounded queue. When it is full the subscriber is *overflowed*: its queue is emptied and replaced
by one ``{"type": "resync"}`` marker, and nothing more is queued for it: one slow client never holds the others back.
If the hub loses its database connection every subscriber is told to resync, and the hub reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import psycopg

from teleconsult.alerts import store
from teleconsult.alerts.service import parse_readings

log = logging.getLogger(__name__)

RESYNC: Final[dict[str, Any]] = {"type": "resync"}
#: Key of a queued alert item holding its JSON text (encoded once, sent as is to every subscriber).
TEXT: Final = "_text"


@dataclass(eq=False)
class Subscriber:
    """One websocket: the patients it may see and its bounded queue of frames."""

    patients: set[uuid.UUID]
    maxsize: int = 1000
    queue: asyncio.Queue[dict[str, Any]] = field(init=False)
    overflowed: bool = False
    reason: str = ""

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(self.maxsize + 1)  # + 1: room for the resync marker

    def offer(self, frame: dict[str, Any]) -> None:
        """Queue ``frame`` unless the client is too slow (then it is told to resync)."""
        if self.overflowed:
            return
        if self.queue.qsize() >= self.maxsize:
            self.resync("client too slow")
            return
        self.queue.put_nowait(frame)

    def resync(self, reason: str) -> None:
        """Drop what is queued and leave a single resync marker."""
        if self.overflowed:
            return
        self.overflowed, self.reason = True, reason
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait({**RESYNC, "reason": reason})


class Hub:
    """See the module docstring. ``run()`` until cancelled; ``ready`` is set once it listens."""

    def __init__(self, conninfo: str, *, retry_s: float = 1.0) -> None:
        self.conninfo = conninfo
        self.retry_s = retry_s
        self.ready = asyncio.Event()
        self.cursor = 0
        """Id of the newest alert event dispatched."""
        self._alerts: set[Subscriber] = set()
        self._vitals: dict[str, set[Subscriber]] = {}

    def subscribe_alerts(self, patients: Iterable[uuid.UUID], maxsize: int = 1000) -> Subscriber:
        """A new alert subscriber (register *before* replaying from the store, then skip ids already sent)."""
        sub = Subscriber(set(patients), maxsize)
        self._alerts.add(sub)
        return sub

    def subscribe_vitals(self, patient: uuid.UUID, maxsize: int = 1000) -> Subscriber:
        """A new subscriber to one patient's live readings."""
        sub = Subscriber({patient}, maxsize)
        self._vitals.setdefault(str(patient), set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """Forget ``sub`` (idempotent)."""
        self._alerts.discard(sub)
        for p in sub.patients:
            subs = self._vitals.get(str(p))
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._vitals[str(p)]

    @property
    def subscribers(self) -> int:
        """Connected subscribers (alerts and vitals)."""
        return len(self._alerts) + sum(len(s) for s in self._vitals.values())

    async def run(self) -> None:
        """Listen and dispatch forever; reconnect after a database failure (subscribers are told to resync)."""
        while True:
            try:
                async with (
                    await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as listen,
                    await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as fetch,
                ):
                    await listen.execute(f"listen {store.EVENTS_CHANNEL}")
                    await listen.execute(f"listen {store.READINGS_CHANNEL}")
                    if self.ready.is_set():
                        self._resync_all("server reconnected to the database")
                    self.cursor = await store.last_event_id(fetch)
                    self.ready.set()
                    async for n in listen.notifies():
                        if n.channel == store.READINGS_CHANNEL:
                            self._dispatch_readings(n.payload)
                        elif n.payload.startswith("{"):
                            self._dispatch_frame(json.loads(n.payload), n.payload)
                        elif n.payload.isdigit() and int(n.payload) > self.cursor:
                            await self._fetch(fetch)
            except psycopg.Error as exc:
                log.warning("alert hub lost the database (%s); reconnecting", exc)
                self._resync_all("server lost the database")
            await asyncio.sleep(self.retry_s)

    def _dispatch_frame(self, frame: dict[str, Any], text: str | None = None) -> None:
        """An event carried in its notification (notifications arrive in id order: see :mod:`store`).

        The frame is encoded once (``TEXT`` key) for all its subscribers.
        """
        if int(frame["id"]) <= self.cursor:
            return
        self.cursor = int(frame["id"])
        patient = uuid.UUID(str(frame["alert"]["patient_id"]))
        item = {"id": frame["id"], TEXT: text if text is not None else json.dumps(frame, separators=(",", ":"))}
        for sub in self._alerts:
            if patient in sub.patients:
                sub.offer(item)

    async def _fetch(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while True:
            events = await store.events_since(conn, self.cursor, limit=1000)
            for ev in events:
                self._dispatch_frame(ev.message())
            if len(events) < 1000:
                return

    def _dispatch_readings(self, payload: str) -> None:
        if not self._vitals:
            return
        with contextlib.suppress(ValueError, TypeError):
            for r in parse_readings(payload):
                for sub in self._vitals.get(r.patient_id, ()):
                    sub.offer(
                        {
                            "type": "reading",
                            "patient_id": r.patient_id,
                            "metric": r.metric,
                            "value": r.value,
                            "unit": r.unit,
                            "measured_at": r.measured_at.isoformat(),
                            "device_id": r.device_id,
                        }
                    )

    def _resync_all(self, reason: str) -> None:
        for sub in list(self._alerts):
            sub.resync(reason)
        for subs in self._vitals.values():
            for sub in subs:
                sub.resync(reason)
