"""Per-process fan-out of alert events and live readings to websocket subscribers.

One :class:`Hub` per API process LISTENs on PostgreSQL (``tbib_alert_events`` from the alert store, ``tbib_readings``
from committed readings), so a subscriber on any node sees what the engine leader or any ingest worker committed.
The two channels have **separate connections**: an alert notification never waits in the socket behind a burst of
reading notifications (10 000 readings/s of ingest make ~400 of them per second). An alert notification carries the
frame itself (or, for a large event, only its id: the hub then reads the rows of ``alert_events`` with id > its
cursor); each event is offered to the subscribers whose patients include its patient, encoded once for all of them.

Each subscriber has its own bounded buffer, drained by its own writer task (one slow socket delays nobody else):
- **alerts are never dropped**: frames are kept in order; when ``maxsize`` are pending the subscriber is *overflowed*:
  its buffer is replaced by one ``{"type": "resync"}`` marker (the socket then closes, and the client reconnects with
  its ``last_event_id``: the store replays every event it missed);
- **vitals coalesce**: a pending reading is replaced by a newer one of the same (patient, metric), and when
  ``maxsize`` distinct ones are pending the oldest is dropped (``dropped`` counts them): a slow client gets the newest
  values, never a backlog and never a resync.
If the hub loses its database connection every subscriber of that channel is told to resync, and the hub reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import psycopg

from teleconsult.alerts import store
from teleconsult.alerts.service import parse_readings
from teleconsult.alerts.trace import DeliveryTrace

log = logging.getLogger(__name__)

RESYNC: Final[dict[str, Any]] = {"type": "resync"}
#: Key of a queued alert item holding its JSON text (encoded once, sent as is to every subscriber).
TEXT: Final = "_text"


@dataclass(eq=False)
class Subscriber:
    """One websocket: the patients it may see and its bounded buffer (policy in the module docstring)."""

    patients: set[uuid.UUID]
    maxsize: int = 1000
    coalesce: bool = False
    """Vitals: keep the newest frame per (patient, metric), drop the oldest when full. Alerts: keep all, or resync."""
    overflowed: bool = False
    reason: str = ""
    dropped: int = 0
    """Vitals frames dropped (replaced by a newer one of the same metric, or the oldest when full)."""
    _frames: deque[dict[str, Any]] = field(init=False, default_factory=deque)
    _latest: dict[tuple[str, str], dict[str, Any]] = field(init=False, default_factory=dict)
    _ready: asyncio.Event = field(init=False, default_factory=asyncio.Event)

    def __len__(self) -> int:
        return len(self._frames) + len(self._latest)

    def offer(self, frame: dict[str, Any]) -> None:
        """Queue ``frame`` under this subscriber's policy; never blocks, never waits for the client."""
        if self.overflowed:
            return
        if self.coalesce and frame.get("type") == "reading":
            key = (str(frame.get("patient_id")), str(frame.get("metric")))
            held = self._latest.pop(key, None)
            if held is not None:
                self.dropped += 1
                if str(held.get("measured_at")) > str(frame.get("measured_at")):
                    frame = held  # a late, older reading does not replace a newer one
            elif len(self._latest) >= self.maxsize:
                del self._latest[next(iter(self._latest))]  # drop the oldest pending reading
                self.dropped += 1
            self._latest[key] = frame  # re-inserted: the order of the dict is the order of arrival
        elif len(self._frames) >= self.maxsize:
            self.resync("client too slow")
            return
        else:
            self._frames.append(frame)
        self._ready.set()

    def resync(self, reason: str) -> None:
        """Drop what is pending and leave a single resync marker (the client replays from the store)."""
        if self.overflowed:
            return
        self.overflowed, self.reason = True, reason
        self._frames.clear()
        self._latest.clear()
        self._frames.append({**RESYNC, "reason": reason})
        self._ready.set()

    def get_nowait(self) -> dict[str, Any] | None:
        """The next pending frame (alerts and markers first, then coalesced readings), or None."""
        if self._frames:
            return self._frames.popleft()
        if self._latest:
            key = next(iter(self._latest))
            return self._latest.pop(key)
        self._ready.clear()
        return None

    async def get(self, wait_s: float | None = None) -> dict[str, Any] | None:
        """The next frame, waiting at most ``wait_s`` seconds (None when none came)."""
        frame = self.get_nowait()
        if frame is not None:
            return frame
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                await self._ready.wait()
        return self.get_nowait()


class Hub:
    """See the module docstring. ``run()`` until cancelled; ``ready`` is set once it listens."""

    def __init__(self, conninfo: str, *, retry_s: float = 1.0, trace: DeliveryTrace | None = None) -> None:
        self.conninfo = conninfo
        self.retry_s = retry_s
        self.trace = trace
        """Delivery timings per event (benchmarks), off when None."""
        self.ready = asyncio.Event()
        self.cursor = 0
        """Id of the newest alert event dispatched."""
        self._alerts: set[Subscriber] = set()
        self._alerts_by_patient: dict[uuid.UUID, set[Subscriber]] = {}
        self._vitals: dict[str, set[Subscriber]] = {}

    def subscribe_alerts(self, patients: Iterable[uuid.UUID], maxsize: int = 1000) -> Subscriber:
        """A new alert subscriber (register *before* replaying from the store, then skip ids already sent)."""
        sub = Subscriber(set(patients), maxsize)
        self._alerts.add(sub)
        for p in sub.patients:
            self._alerts_by_patient.setdefault(p, set()).add(sub)
        return sub

    def set_patients(self, sub: Subscriber, patients: Iterable[uuid.UUID]) -> None:
        """An alert subscriber's care-team set changed."""
        self._forget_alerts(sub)
        sub.patients = set(patients)
        for p in sub.patients:
            self._alerts_by_patient.setdefault(p, set()).add(sub)

    def _forget_alerts(self, sub: Subscriber) -> None:
        for p in sub.patients:
            subs = self._alerts_by_patient.get(p)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._alerts_by_patient[p]

    def subscribe_vitals(self, patient: uuid.UUID, maxsize: int = 1000) -> Subscriber:
        """A new subscriber to one patient's live readings (coalescing: see the module docstring)."""
        sub = Subscriber({patient}, maxsize, coalesce=True)
        self._vitals.setdefault(str(patient), set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """Forget ``sub`` (idempotent)."""
        if sub in self._alerts:
            self._alerts.discard(sub)
            self._forget_alerts(sub)
            return
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
        """Listen and dispatch forever, one connection per channel; each reconnects after a database failure (its
        subscribers are told to resync)."""
        alerts_up, readings_up = asyncio.Event(), asyncio.Event()

        async def both_up() -> None:
            await alerts_up.wait()
            await readings_up.wait()
            self.ready.set()

        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(both_up())
            if self.trace is not None:
                tasks.create_task(self.trace.run())
            tasks.create_task(self._run_alerts(alerts_up))
            tasks.create_task(self._run_readings(readings_up))

    async def _run_alerts(self, up: asyncio.Event) -> None:
        while True:
            try:
                async with (
                    await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as listen,
                    await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as fetch,
                ):
                    await listen.execute(f"listen {store.EVENTS_CHANNEL}")
                    if up.is_set():
                        self._resync(self._alerts, "server reconnected to the database")
                    self.cursor = await store.last_event_id(fetch)
                    up.set()
                    async for n in listen.notifies():
                        if n.payload.startswith("{"):
                            self._dispatch_frame(json.loads(n.payload), n.payload, time.time())
                        elif n.payload.isdigit() and int(n.payload) > self.cursor:
                            await self._fetch(fetch)
            except psycopg.Error as exc:
                log.warning("alert hub lost the database (%s); reconnecting", exc)
                self._resync(self._alerts, "server lost the database")
            await asyncio.sleep(self.retry_s)

    async def _run_readings(self, up: asyncio.Event) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as listen:
                    await listen.execute(f"listen {store.READINGS_CHANNEL}")
                    up.set()
                    async for n in listen.notifies():
                        self._dispatch_readings(n.payload)
            except psycopg.Error as exc:
                log.warning("vitals hub lost the database (%s); reconnecting", exc)
                self._resync([s for subs in self._vitals.values() for s in subs], "server lost the database")
            await asyncio.sleep(self.retry_s)

    def _dispatch_frame(self, frame: dict[str, Any], text: str | None = None, received_at: float | None = None) -> None:
        """An event carried in its notification (notifications arrive in id order: see :mod:`store`).

        The frame is encoded once (``TEXT`` key) for all its subscribers.
        """
        if int(frame["id"]) <= self.cursor:
            return
        self.cursor = int(frame["id"])
        patient = uuid.UUID(str(frame["alert"]["patient_id"]))
        item = {"id": frame["id"], TEXT: text if text is not None else json.dumps(frame, separators=(",", ":"))}
        subs = self._alerts_by_patient.get(patient, ())
        for sub in subs:
            sub.offer(item)
        if self.trace is not None and subs:
            self.trace.dispatched(self.cursor, len(subs), received_at)

    def sent(self, event_id: int) -> None:
        """A socket wrote event ``event_id`` (for the delivery trace)."""
        if self.trace is not None:
            self.trace.sent(event_id)

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

    @staticmethod
    def _resync(subs: Iterable[Subscriber], reason: str) -> None:
        for sub in list(subs):
            sub.resync(reason)
