"""``/ws/v1/patients``: the dashboard's live feed of its patient list (vitals + alert events), with replay.

Protocol (JSON text frames, server to client; the client sends nothing but may send ``{"type": "pong"}``):

- ``{"type": "hello", "patients": n, "last_event_id": N, "interval_s": 1.0}`` once, after authentication;
- ``{"type": "alert", "id": N, "event": "raised|updated|cleared|escalated|acknowledged|resolved|note", "at": ...,
  "alert": {...alerts row...}}`` — the same frame as ``/ws/v1/alerts``; ids increase. Connect with
  ``?last_event_id=N`` to first receive every event after N of the caller's patients (replay), then live ones;
- ``{"type": "vitals", "items": [[patient_id, metric, value, unit, measured_at], ...]}`` at most once per
  ``interval_s``, coalesced per (patient, metric): a client that falls behind gets the newest values, never a backlog;
- ``{"type": "call", "patient_id", "call_id", "gateway_id", "state", "reason", "at"}``: progress of a call started
  from the dashboard (``docs/teleconsultation.md``), live only (a reload asks again);
- ``{"type": "ping", "at": ...}`` every 15 s (heartbeat);
- ``{"type": "resync", "reason": ...}`` when the server lost events (database connection lost, client too slow): reload
  the snapshot (``GET /api/v1/patients`` and ``/patients/alerts``) and reconnect with the snapshot's last event id.

One :class:`LiveHub` per process LISTENs on PostgreSQL (``tbib_readings`` from committed readings, ``tbib_alert_events``
from the alert store), so every API node sees every event whichever node or worker wrote it. Authorization: the
care-team set is computed on connect and refreshed every minute (by a task of its own, never between two sends); the
subscription is audited once.

Fan-out (one process, many sockets): the two channels have separate connections (an alert never waits behind a burst
of reading notifications); an alert notification carries its frame, which is encoded once for every socket (the store
is read only for an event announced by id); subscribers are indexed by patient, so a reading costs the sockets that
see its patient, not all of them. Each socket has its own sender task: alerts are queued in order (a client that falls
``MAX_PENDING_ALERTS`` behind is told to resync and replays from the store: none is lost), vitals coalesce.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import psycopg
from fastapi import APIRouter, FastAPI, WebSocket, WebSocketException, status
from starlette.websockets import WebSocketDisconnect, WebSocketState

from teleconsult.api.deps import DbPool, accept_websocket, audit, authenticate_websocket, client_addr
from teleconsult.security.models import Role

log = logging.getLogger(__name__)

READINGS_CHANNEL: Final = "tbib_readings"
ALERTS_CHANNEL: Final = "tbib_alert_events"
CALLS_CHANNEL: Final = "tbib_calls"
"""Progress of calls started from the dashboard (:mod:`teleconsult.calls.service`): sent as they come, not replayed."""
HEARTBEAT_S: Final = 15.0
REFRESH_ACCESS_S: Final = 60.0
MAX_PENDING_ALERTS: Final = 2000
REPLAY_LIMIT: Final = 5000
#: Dashboards woken per event-loop turn when readings arrive (an alert notification is read between two chunks).
VITALS_WAKE_CHUNK: Final = 50

ws_router = APIRouter(tags=["dashboard"])


@dataclass(eq=False)
class Subscriber:
    """One connected dashboard."""

    patients: set[uuid.UUID]
    vitals: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    alerts: list[tuple[int, str]] = field(default_factory=list)
    """Pending alert frames: (event id, JSON text encoded once for every socket)."""
    calls: list[str] = field(default_factory=list)
    """Pending ``call`` frames (JSON text), in order."""
    resync: str | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    close: bool = False
    vitals_due: bool = False
    """Queued for a (chunked) wake-up by the hub's vitals waker."""


class LiveHub:
    """Fans database notifications out to subscribers (one LISTEN connection per process)."""

    def __init__(self, dsn: str, pool: DbPool, *, interval_s: float = 1.0) -> None:
        self.dsn = dsn
        self.pool = pool
        self.interval_s = interval_s
        self.subscribers: set[Subscriber] = set()
        self._by_patient: dict[uuid.UUID, set[Subscriber]] = {}
        self._vitals_due: collections.deque[Subscriber] = collections.deque()
        self._vitals_wake = asyncio.Event()
        self.last_event_id = 0
        self.listening = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Start listening (reconnects by itself)."""
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="live-hub")

    async def stop(self) -> None:
        """Stop listening and close every subscriber."""
        self.disconnect_all("server shutting down")
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def add(self, sub: Subscriber) -> None:
        """Register a dashboard."""
        self.subscribers.add(sub)
        for p in sub.patients:
            self._by_patient.setdefault(p, set()).add(sub)

    def remove(self, sub: Subscriber) -> None:
        """Forget a dashboard (idempotent)."""
        self.subscribers.discard(sub)
        for p in sub.patients:
            subs = self._by_patient.get(p)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._by_patient[p]

    def set_patients(self, sub: Subscriber, patients: set[uuid.UUID]) -> None:
        """The dashboard's care-team set changed."""
        self.remove(sub)
        sub.patients = patients
        self.add(sub)

    def disconnect_all(self, reason: str = "closed by the server") -> None:
        """Close every dashboard socket (they reconnect and replay): shutdown, and network-cut tests."""
        for sub in list(self.subscribers):
            sub.close = True
            sub.resync = reason
            sub.wake.set()

    def disconnect_all_threadsafe(self) -> None:
        """:meth:`disconnect_all` from another thread (tests drive a server running in a thread)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.disconnect_all)

    async def _run(self) -> None:
        helpers = [
            asyncio.create_task(self._run_readings(), name="live-hub-readings"),
            asyncio.create_task(self._wake_vitals(), name="live-hub-vitals-waker"),
            asyncio.create_task(self._run_calls(), name="live-hub-calls"),
        ]
        try:
            await self._run_alerts()
        finally:
            for task in helpers:
                task.cancel()
            for task in helpers:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _wake_vitals(self) -> None:
        """Wake dashboards with new vitals ``VITALS_WAKE_CHUNK`` at a time, yielding in between: a burst of readings
        for many dashboards never holds an alert notification behind a thousand vitals sends."""
        while True:
            await self._vitals_wake.wait()
            self._vitals_wake.clear()
            while self._vitals_due:
                for _ in range(min(VITALS_WAKE_CHUNK, len(self._vitals_due))):
                    sub = self._vitals_due.popleft()
                    sub.vitals_due = False
                    sub.wake.set()
                await asyncio.sleep(0)

    async def _run_alerts(self) -> None:
        backoff = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
                    await conn.execute(f"listen {ALERTS_CHANNEL}")
                    cur = await conn.execute("select coalesce(max(id), 0) from alert_events")
                    row = await cur.fetchone()
                    if self.listening.is_set() or self.last_event_id:
                        await self._fetch_alerts()  # events committed while we were not listening
                    else:
                        self.last_event_id = int(row[0]) if row else 0
                    self.listening.set()
                    backoff = 0.5
                    async for note in conn.notifies():
                        if note.payload.startswith("{"):
                            self._on_alert_frame(note.payload)
                        elif note.payload.isdigit() and int(note.payload) > self.last_event_id:
                            await self._fetch_alerts()  # a large event, announced by id only
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError) as exc:
                log.warning("live feed lost the database (%s); retrying in %.1f s", exc, backoff)
                self._resync_all("database connection lost")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def _run_readings(self) -> None:
        backoff = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
                    await conn.execute(f"listen {READINGS_CHANNEL}")
                    backoff = 0.5
                    async for note in conn.notifies():
                        self._on_readings(note.payload)
            except (psycopg.Error, OSError) as exc:
                log.warning("live feed lost the database (%s); retrying in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)  # vitals coalesce: the next readings bring every value up to date
                backoff = min(backoff * 2, 10.0)

    async def _run_calls(self) -> None:
        backoff = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
                    await conn.execute(f"listen {CALLS_CHANNEL}")
                    backoff = 0.5
                    async for note in conn.notifies():
                        self._on_call(note.payload)
            except (psycopg.Error, OSError) as exc:
                log.warning("live feed lost the database (%s); retrying in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    def _on_call(self, payload: str) -> None:
        try:
            pid = uuid.UUID(str(json.loads(payload)["patient_id"]))
        except (ValueError, KeyError, TypeError):
            return
        for sub in self._by_patient.get(pid, ()):
            sub.calls.append(payload)
            sub.wake.set()

    def _resync_all(self, reason: str) -> None:
        for sub in self.subscribers:
            sub.resync = reason
            sub.wake.set()

    def _on_readings(self, payload: str) -> None:
        if not self._by_patient:
            return
        try:
            rows = json.loads(payload)
        except ValueError:
            return
        for row in rows:
            try:
                pid = uuid.UUID(str(row[0]))
            except (ValueError, IndexError, TypeError):
                continue
            subs = self._by_patient.get(pid)
            if not subs:
                continue
            item = [str(pid), row[1], row[2], row[3], row[4]]
            for sub in subs:
                sub.vitals[(item[0], str(item[1]))] = item  # coalesced: the newest per (patient, metric)
                if not sub.vitals_due:  # woken in chunks by _wake_vitals (the sender paces by interval_s anyway)
                    sub.vitals_due = True
                    self._vitals_due.append(sub)
                    self._vitals_wake.set()

    def _on_alert_frame(self, payload: str) -> None:
        try:
            frame = json.loads(payload)
            event_id, pid = int(frame["id"]), uuid.UUID(str(frame["alert"]["patient_id"]))
        except (ValueError, KeyError, TypeError):
            return
        if event_id <= self.last_event_id:
            return
        self.last_event_id = event_id
        self._offer(event_id, pid, payload)  # the store's compact JSON, sent as is

    def _offer(self, event_id: int, pid: uuid.UUID, text: str) -> None:
        for sub in self._by_patient.get(pid, ()):
            if len(sub.alerts) >= MAX_PENDING_ALERTS:
                sub.resync = "too many pending alert events"
            else:
                sub.alerts.append((event_id, text))
            sub.wake.set()

    async def _fetch_alerts(self) -> None:
        try:
            events = await events_after(self.pool, self.last_event_id, None, REPLAY_LIMIT)
        except psycopg.Error as exc:
            log.warning("live feed could not read alert events: %s", exc)
            return
        for ev in events:
            self.last_event_id = max(self.last_event_id, ev["id"])
            text = json.dumps(ev, separators=(",", ":"), default=str)
            self._offer(int(ev["id"]), uuid.UUID(str(ev["alert"]["patient_id"])), text)


async def events_after(pool: DbPool, last_id: int, patients: set[uuid.UUID] | None, limit: int) -> list[dict[str, Any]]:
    """Alert events with id > ``last_id`` (of ``patients`` when given), oldest first, as websocket frames."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "select id, type, created_at, payload from alert_events where id > %s"
            " and (%s::uuid[] is null or patient_id = any(%s)) order by id limit %s",
            (last_id, None if patients is None else list(patients), None if patients is None else list(patients),
             limit),
        )  # fmt: skip
        return [
            {"type": "alert", "id": int(i), "event": t, "at": at.isoformat(), "alert": dict(p)}
            for i, t, at, p in await cur.fetchall()
        ]


async def _accessible(pool: DbPool, user_id: uuid.UUID) -> set[uuid.UUID]:
    async with pool.connection() as conn:
        cur = await conn.execute("select p from tbib_accessible_patients(%s) as p", (user_id,))
        return {r[0] for r in await cur.fetchall()}


async def _send(ws: WebSocket, frame: dict[str, Any]) -> None:
    await ws.send_text(json.dumps(frame, separators=(",", ":"), default=str))


@ws_router.websocket("/patients")
async def patients_feed(websocket: WebSocket) -> None:
    """The dashboard's live feed (protocol in the module docstring)."""
    user = await authenticate_websocket(websocket)
    if user.role is Role.PATIENT:
        raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION, reason="clinicians only")
    hub: LiveHub = websocket.app.state.live_hub
    pool = hub.pool
    try:
        last_id = int(websocket.query_params.get("last_event_id", "0"))
    except ValueError:
        last_id = 0
    patients = await _accessible(pool, user.id)
    await audit(pool, user, action="subscribe", resource="WS /ws/v1/patients", outcome="allowed",
                client_addr=client_addr(websocket), detail={"patients": len(patients)})  # fmt: skip
    await accept_websocket(websocket)
    sub = Subscriber(patients=patients)
    hub.add(sub)
    reader = asyncio.create_task(_drain(websocket, sub))
    refresher = asyncio.create_task(_refresh(hub, sub, user.id))
    try:
        await _send(websocket, {"type": "hello", "patients": len(patients), "last_event_id": hub.last_event_id,
                                "interval_s": hub.interval_s})  # fmt: skip
        sent = last_id
        if last_id > 0:
            for frame in await events_after(pool, last_id, patients, REPLAY_LIMIT):
                await _send(websocket, frame)
                sent = frame["id"]
        await _serve(websocket, hub, sub, sent)
    except (WebSocketDisconnect, RuntimeError, OSError) as exc:
        log.debug("dashboard feed ended: %r", exc)
    finally:
        hub.remove(sub)
        for task in (reader, refresher):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if websocket.client_state is WebSocketState.CONNECTED:
            with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
                await websocket.close()


async def _drain(ws: WebSocket, sub: Subscriber) -> None:
    """Read (and ignore) client frames so that a client close is noticed at once."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
    sub.close = True
    sub.wake.set()


async def _refresh(hub: LiveHub, sub: Subscriber, user_id: uuid.UUID) -> None:
    """Re-read the care-team set every ``REFRESH_ACCESS_S`` (its own task: the sender never waits for the query)."""
    while True:
        await asyncio.sleep(REFRESH_ACCESS_S)
        try:
            patients = await _accessible(hub.pool, user_id)
        except psycopg.Error as exc:
            log.warning("live feed could not refresh a care team: %s", exc)
            continue
        hub.set_patients(sub, patients)


async def _serve(ws: WebSocket, hub: LiveHub, sub: Subscriber, sent: int) -> None:
    loop = asyncio.get_running_loop()
    next_ping = loop.time() + HEARTBEAT_S
    next_vitals = loop.time()
    while not sub.close:
        now = loop.time()
        timeout = min(next_ping, next_vitals if sub.vitals else next_ping) - now
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sub.wake.wait(), max(0.0, timeout))
        sub.wake.clear()
        if sub.resync is not None:
            await _send(ws, {"type": "resync", "reason": sub.resync})
            if sub.close:
                await ws.close(1012, sub.resync[:120])
                return
            sub.resync = None
        calls, sub.calls = sub.calls, []
        for text in calls:
            await ws.send_text(text)
        alerts, sub.alerts = sub.alerts, []
        for event_id, text in alerts:
            if event_id > sent:
                await ws.send_text(text)
                sent = event_id
        now = loop.time()
        if sub.vitals and now >= next_vitals:
            items, sub.vitals = list(sub.vitals.values()), {}
            await _send(ws, {"type": "vitals", "items": items})
            next_vitals = now + hub.interval_s
        if now >= next_ping:
            await _send(ws, {"type": "ping", "at": datetime.now(UTC).isoformat()})
            next_ping = now + HEARTBEAT_S


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the hub on ``app.state.live_hub``."""
    settings = app.state.settings
    interval = float(settings.ext.get("dashboard", {}).get("live_interval_s", 1.0))
    hub = LiveHub(settings.database_url, app.state.pool, interval_s=interval)
    app.state.live_hub = hub
    await hub.start()
    try:
        yield
    finally:
        await hub.stop()
