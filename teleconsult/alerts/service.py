"""The asyncio adapter of the alert engine: feeds it from the database and the broker, stores what it emits.

Exactly one process runs the engine at a time (the *leader*): it holds a session advisory lock (:data:`LEADER_LOCK`)
on a dedicated connection; the others retry every ``retry_s`` and take over when the leader dies (PostgreSQL releases
the lock with its session). At start the leader rebuilds the engine from the store: patient profiles, open alerts
(:meth:`Engine.restore`), and the readings of the last trend/NEWS2 windows.

Inputs
- Every committed reading, through :mod:`teleconsult.alerts.feed` (migration 0210): ``NOTIFY tbib_reading_batches``
  wakes the leader, which reads the batches committed since its position and their readings (one indexed query) and
  feeds them in ``measured_at`` order with ``now = ingested_at``. The position is saved (at most every
  :data:`POSITION_EVERY_S`) after the events of those readings were stored. A new leader replays every batch committed
  since the saved position, after its warm-up on the readings before it; events replayed twice are stored once.
- ``NOTIFY tbib_alert_events``: acknowledgements/resolutions made over HTTP on any node (the engine stops escalating
  or closes the rule), and ``profile:<patient>`` when a profile changes.
- ``tbib/v1/gw/+/status`` (retained ``online``/``offline``) when a broker URL is given: gateway state for no-data.
- The engine's timer.

Failover (docs/scale-out.md): any database error ends the leadership (the lock's session may be gone with the old
PostgreSQL leader); the loop reconnects every ``retry_s`` through the DSN (HAProxy or libpq multi-host), takes the lock
on the new leader, stores again the events of a store transaction whose outcome was unknown (idempotent,
:mod:`teleconsult.alerts.store`), then rebuilds the engine from the store.

Output: engine events, stored with :func:`store.record_engine_events` (which notifies every node's hub). Events are
stored at most :data:`FLUSH_AFTER_S` after the notification that caused them, not after the rest of a burst of
notifications (an alert storm still batches its events into few transactions).

:class:`EngineThread` runs the service on its own thread and event loop inside an API process: the engine's work (rule
evaluation for every committed reading, its store transactions) never runs between two websocket sends of the API's
loop, and the process's GIL switch interval is shortened to :data:`SWITCH_INTERVAL_S` so that the loop's thread does not
wait 5 ms for the GIL after each send while the engine works. A node with ``[ext.alerts] engine = false`` does not
run it at all (a dedicated engine node is the split into processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import urlsplit

import psycopg

from teleconsult.alerts import feed, store
from teleconsult.alerts.engine import Engine
from teleconsult.alerts.model import AlertEvent, AlertKey, Reading
from teleconsult.alerts.rules import EngineConfig
from teleconsult.store.failover import RETRYABLE

log = logging.getLogger(__name__)

#: pg_advisory_lock key of the engine leader (ASCII "tbibalrt").
LEADER_LOCK: Final = 0x7462_6962_616C_7274
#: Longest time an engine event waits for the rest of a burst of notifications before it is stored.
FLUSH_AFTER_S: Final = 0.005
STATUS_TOPIC: Final = "tbib/v1/gw/+/status"
#: Shortest interval between two saves of the feed position (a replay re-feeds at most this much).
POSITION_EVERY_S: Final = 1.0
#: Readings fed per engine step during a replay (bounded memory: rows are fetched per group of batches).
REPLAY_BATCHES: Final = 50
#: Interval between two deletions of the batches before the saved position.
PRUNE_EVERY_S: Final = 10.0
#: Events of a store transaction that failed are stored again by the next leadership of this process if it starts
#: within this many seconds (a PostgreSQL failover takes 10-30 s).
UNSTORED_MAX_AGE_S: Final = 120.0
#: GIL switch interval set in a process that hosts :class:`EngineThread` (CPython's default is 5 ms). While the
#: engine's thread works through a burst of readings, the API loop's thread waits up to one interval for the GIL
#: after each socket write or poll that released it: with 5 ms, the 200 writes of one alert frame could wait ~1 s.
SWITCH_INTERVAL_S: Final = 0.0005
#: Start of an alert frame as :func:`store.notify_payload` encodes it: id and event kind.
_FRAME_HEAD: Final = re.compile(r'\{"type":"alert","id":(\d+),"event":"(\w+)"')


def utcnow() -> datetime:
    """The wall clock (the adapter's only clock)."""
    return datetime.now(UTC)


def parse_readings(payload: str) -> list[Reading]:
    """Rows of a ``tbib_readings`` notification: ``[[patient, metric, value, unit, measured_at, device], ...]``."""
    out = []
    for row in json.loads(payload):
        patient, metric, value, unit, measured_at, device = row
        out.append(
            Reading(
                str(patient),
                str(metric),
                float(value),
                str(unit),
                datetime.fromisoformat(measured_at),
                None if device is None else str(device),
            )
        )
    return out


class EngineService:
    """Runs :class:`Engine` on the leader node; see the module docstring."""

    def __init__(
        self,
        conninfo: str,
        config: EngineConfig | None = None,
        *,
        mqtt_url: str | None = None,
        retry_s: float = 2.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.conninfo = conninfo
        self.config = config or EngineConfig()
        self.mqtt_url = mqtt_url
        self.retry_s = retry_s
        self.clock = clock
        self.leader = asyncio.Event()
        """Set while this process is the leader and its engine is rebuilt."""
        self.engine: Engine | None = None
        self.stored_events = 0
        self.retried_events = 0
        self.fed = 0
        """Readings fed to the engine by this process (live and replayed)."""
        self.replayed = 0
        """Readings replayed at the start of a leadership (committed since the saved position)."""
        self._saved_at = 0.0
        self._pruned_at = 0.0
        """Events of a failed store transaction stored again after the leadership was regained."""
        self._unstored: tuple[float, list[AlertEvent]] | None = None
        self._inbox: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    async def run(self) -> None:
        """Contend for leadership forever (cancel to stop)."""
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as lock_conn:
                    cur = await lock_conn.execute("select pg_try_advisory_lock(%s)", (LEADER_LOCK,))
                    row = await cur.fetchone()
                    if row is not None and row[0]:
                        log.info("alert engine: this node is the leader")
                        await self._lead(lock_conn)
            except (psycopg.Error, ExceptionGroup) as exc:
                log.warning("alert engine: %s; retrying in %.0f s", exc, self.retry_s)
            finally:
                self.leader.clear()
                self.engine = None
            await asyncio.sleep(self.retry_s)

    async def _lead(self, lock_conn: psycopg.AsyncConnection[Any]) -> None:
        async with (
            await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as listen,
            await psycopg.AsyncConnection.connect(self.conninfo) as work,
        ):
            await listen.execute(f"listen {feed.CHANNEL}")
            await listen.execute(f"listen {store.EVENTS_CHANNEL}")
            await self._retry_unstored(work)
            engine = Engine(self.config)
            cursor, position = await self._rebuild(engine, work)
            self.engine = engine
            client = self._start_mqtt(asyncio.get_running_loop()) if self.mqtt_url else None
            try:
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self._listen(listen))
                    tasks.create_task(self._keepalive(lock_conn))
                    self.leader.set()
                    await self._loop(engine, work, cursor, position)
            finally:
                if client is not None:
                    client.loop_stop()
                    client.disconnect()

    async def _rebuild(self, engine: Engine, work: psycopg.AsyncConnection[Any]) -> tuple[int, str]:
        now = self.clock()
        position = await feed.load_position(work) or await feed.current_position(work)
        new_position, gap = await feed.fetch(work, position)
        gap_ids: set[Any] = set()
        for i in range(0, len(gap), REPLAY_BATCHES):
            cur = await work.execute(
                "select reading_id from readings where ingested_at = any(%s)", (gap[i : i + REPLAY_BATCHES],)
            )
            gap_ids.update(r[0] for r in await cur.fetchall())
        for profile in await store.profiles(work):
            engine.set_patient(profile, now)
        engine.restore(await store.open_alerts(work), now)
        cursor = await store.last_event_id(work)
        # Bounded warm-up: the newest reading of every metric still fresh for NEWS2 (latest_readings), plus the
        # history of the trend metrics over their windows; fed in measured_at order.
        horizon = now + timedelta(minutes=5)
        cur = await work.execute(
            "select patient_id, metric, value, unit, measured_at, device_id, reading_id, updated_at"
            " from latest_readings"
            " where measured_at > %s and measured_at <= %s",
            (now - self.config.news2_freshness, horizon),
        )
        rows = list(await cur.fetchall())
        for trend in self.config.trends:
            cur = await work.execute(
                "select patient_id, metric, value, unit, measured_at, device_id, reading_id, ingested_at from readings"
                " where metric = %s and measured_at > %s and measured_at <= %s",
                (trend.metric, now - trend.window, horizon),
            )
            rows += await cur.fetchall()
        # the warm-up is the state before the position: readings committed after it are replayed below, in order
        # each with now = its commit time (latest_readings.updated_at is the now() of the batch that wrote it), so
        # that an episode the last leader stored is stored again as the same, idempotent events
        rows = sorted((r for r in rows if r[6] not in gap_ids), key=lambda r: r[4])
        self._feed(engine, rows)
        await work.commit()
        await self._flush(engine, work)
        for i in range(0, len(gap), REPLAY_BATCHES):
            self.replayed += self._feed(engine, await feed.readings_of(work, gap[i : i + REPLAY_BATCHES]))
            await work.commit()
            await self._flush(engine, work)
        if gap:
            log.info("alert engine: replayed %d batches committed since the last position", len(gap))
        await feed.save_position(work, new_position)
        await feed.prune(work, new_position)
        self._saved_at = self._pruned_at = time.monotonic()
        return cursor, new_position

    @staticmethod
    def _feed(engine: Engine, rows: list[tuple[Any, ...]]) -> int:
        """Feed readings rows (:func:`feed.readings_of`: batch by batch, each in ``measured_at`` order), each with
        ``now`` = its commit time."""
        for r in rows:
            engine.receive(feed.to_reading(r), r[7])
        return len(rows)

    async def _listen(self, listen: psycopg.AsyncConnection[Any]) -> None:
        async for n in listen.notifies():
            self._inbox.put_nowait((n.channel, n.payload))

    async def _keepalive(self, lock_conn: psycopg.AsyncConnection[Any]) -> None:
        """Leadership is the lock's session: if it dies, stop leading (the TaskGroup cancels the rest)."""
        while True:
            await asyncio.sleep(5.0)
            await lock_conn.execute("select 1")

    async def _loop(self, engine: Engine, work: psycopg.AsyncConnection[Any], cursor: int, position: str) -> None:
        saved = position
        while True:
            timer = engine.get_timer()
            timeout = None if timer is None else max(0.0, (timer - self.clock()).total_seconds())
            if position != saved:  # the position is saved within POSITION_EVERY_S of its last change
                timeout = POSITION_EVERY_S if timeout is None else min(timeout, POSITION_EVERY_S)
            try:
                first = await asyncio.wait_for(self._inbox.get(), timeout)
            except TimeoutError:
                batch: list[tuple[str, str]] = []
            else:
                batch = [first]
                while not self._inbox.empty():
                    batch.append(self._inbox.get_nowait())
            pending: list[AlertEvent] = []
            first_at = 0.0
            fetched = False
            for channel, payload in batch:
                now = self.clock()
                if channel == feed.CHANNEL:
                    if fetched:  # one fetch reads every batch committed so far
                        continue
                    fetched = True
                    position, batches = await feed.fetch(work, position)
                    self.fed += self._feed(engine, await feed.readings_of(work, batches))
                    await work.commit()
                elif channel == store.EVENTS_CHANNEL:
                    cursor = await self._clinician_actions(engine, work, payload, cursor, now)
                elif channel == "gateway":
                    gateway_id, _, state = payload.partition(" ")
                    engine.gateway_status(gateway_id, state == "online", now)
                while (ev := engine.next_event()) is not None:
                    if not pending:
                        first_at = time.monotonic()
                    pending.append(ev)
                # an alert waits for the rest of a burst at most FLUSH_AFTER_S (an alert storm still batches)
                if pending and time.monotonic() - first_at >= FLUSH_AFTER_S:
                    await self._store(work, pending)
                    pending = []
            engine.handle_timer(self.clock())
            await self._flush(engine, work, pending)
            if position != saved and time.monotonic() - self._saved_at >= POSITION_EVERY_S:
                await feed.save_position(work, position)  # after the events of the readings before it were stored
                saved, self._saved_at = position, time.monotonic()
                if self._saved_at - self._pruned_at >= PRUNE_EVERY_S:
                    await feed.prune(work, position)
                    self._pruned_at = self._saved_at

    async def _clinician_actions(
        self, engine: Engine, work: psycopg.AsyncConnection[Any], payload: str, cursor: int, now: datetime
    ) -> int:
        if payload.startswith("profile:"):
            patient = uuid.UUID(payload.removeprefix("profile:"))
            for profile in await store.profiles(work):
                if profile.patient_id == str(patient):
                    engine.set_patient(profile, now)
            await work.commit()
            return cursor
        if payload.startswith("{"):  # the frame itself (notifications come in id order)
            head = _FRAME_HEAD.match(payload)  # most are this engine's own events: no need to parse them
            if head is not None and head[2] not in ("acknowledged", "resolved"):
                return max(cursor, int(head[1]))
            frame = json.loads(payload)
            if int(frame["id"]) > cursor:
                cursor = int(frame["id"])
                self._apply_action(engine, str(frame["event"]), frame["alert"], now)
            return cursor
        if int(payload) <= cursor:
            return cursor
        events = await store.events_since(work, cursor)
        await work.commit()
        for ev in events:
            cursor = max(cursor, ev.id)
            self._apply_action(engine, ev.type, ev.payload, now)
        return cursor

    @staticmethod
    def _apply_action(engine: Engine, kind: str, alert: dict[str, Any], now: datetime) -> None:
        """A clinician acknowledged or resolved an alert (on any node): tell the engine."""
        key = AlertKey(str(alert.get("patient_id")), str(alert.get("rule")))
        if kind == "acknowledged":
            engine.acknowledge(key, now)
        elif kind == "resolved":
            engine.resolve(key, now)

    async def _flush(
        self, engine: Engine, work: psycopg.AsyncConnection[Any], pending: list[AlertEvent] | None = None
    ) -> None:
        events = pending or []
        while (ev := engine.next_event()) is not None:
            events.append(ev)
        await self._store(work, events)

    async def _store(self, work: psycopg.AsyncConnection[Any], events: list[AlertEvent]) -> None:
        if events:
            try:
                stored = await store.record_engine_events(work, events)
            except RETRYABLE:
                # outcome unknown (the leader may have died at COMMIT): kept for the next leadership, then stored
                # again (idempotent: a committed event is not logged twice); the engine itself is rebuilt
                self._unstored = (time.monotonic(), list(events))
                raise
            self.stored_events += len(stored)

    async def _retry_unstored(self, work: psycopg.AsyncConnection[Any]) -> None:
        """Store the events of the transaction that failed when the last leadership ended (if still recent: older
        ones the rebuilt engine derives again from the store and the readings)."""
        if self._unstored is None:
            return
        failed_at, events = self._unstored
        self._unstored = None
        if time.monotonic() - failed_at > UNSTORED_MAX_AGE_S:
            log.warning("alert engine: %d events of a failed transaction dropped (too old to replay)", len(events))
            return
        stored = await store.record_engine_events(work, events)
        self.stored_events += len(stored)
        self.retried_events += len(stored)
        log.info("alert engine: retried %d events, %d were not stored yet", len(events), len(stored))

    def _start_mqtt(self, loop: asyncio.AbstractEventLoop) -> Any:
        """Subscribe to the gateways' retained status topics (paho's own thread) and forward them to the loop."""
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

        assert self.mqtt_url is not None
        url = urlsplit(self.mqtt_url)
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"tbib-alerts-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        if url.username:
            client.username_pw_set(url.username, url.password)

        def on_connect(c: Any, _u: Any, _f: Any, _rc: Any, _p: Any) -> None:
            c.subscribe(STATUS_TOPIC, qos=1)

        def on_message(_c: Any, _u: Any, msg: Any) -> None:
            parts = str(msg.topic).split("/")
            state = bytes(msg.payload).decode("utf-8", "replace").strip()
            if len(parts) == 5 and state in ("online", "offline"):
                with contextlib.suppress(RuntimeError):  # the loop is closing
                    loop.call_soon_threadsafe(self._inbox.put_nowait, ("gateway", f"{parts[3]} {state}"))

        client.on_connect = on_connect
        client.on_message = on_message
        client.connect_async(url.hostname or "127.0.0.1", url.port or 1883)
        client.loop_start()
        return client


class EngineThread:
    """Runs an :class:`EngineService` on a dedicated thread with its own event loop (see the module docstring)."""

    def __init__(self, service: EngineService) -> None:
        self.service = service
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name="alert-engine", daemon=True)

    def start(self) -> None:
        """Start the thread (returns once its loop runs); shortens the process's GIL switch interval (see
        :data:`SWITCH_INTERVAL_S`)."""
        if sys.getswitchinterval() > SWITCH_INTERVAL_S:
            sys.setswitchinterval(SWITCH_INTERVAL_S)
        self._thread.start()
        self._started.wait(10.0)

    def stop(self, timeout_s: float = 15.0) -> None:
        """Cancel the service and wait for the thread (blocking: call it through ``asyncio.to_thread``)."""
        loop, task = self._loop, self._task
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(task.cancel)
        self._thread.join(timeout_s)

    def _main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._started.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self.service.run()
