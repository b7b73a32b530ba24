"""The ingest worker: MQTT (paho, shared subscription, manual PUBACK) -> validation -> batched idempotent COPY.

At-least-once, idempotent end to end:
- paho runs its network loop in its own thread; ``on_message`` only appends to a deque and wakes the event loop.
- The batcher (event loop) drains up to ``max_batch_readings``, validates (:mod:`.payload`, pure), resolves devices
  through a cached enrolment map (refreshed on a miss), and hands a batch to one of ``writers`` tasks, each with its
  own database connection. A writer commits (:mod:`.writer`) then PUBACKs every message of the batch.
- Backpressure: the broker never has more than ``receive_maximum`` (MQTT v5) unacknowledged messages in flight to
  us, and the batcher waits on a bounded queue of batches; a database outage therefore stops the flow at the broker.
- A failed batch is retried with backoff on a fresh connection (the write is idempotent, so an unknown commit outcome is
  safe). A batch that fails for a data reason is split per message; a message that still fails goes to dead_letters.
- Commit receipts (:mod:`.receipts`, ``docs/mqtt.md``): after the commit and *before* the PUBACKs, one receipt per
  gateway of the batch is published (QoS 1) on ``tbib/v1/gw/{id}/receipts``; paho sends it ahead of the acks on the same
  connection. A crash between commit and receipt means a redelivery, a duplicate-free re-commit and a receipt. Batches
  from gateways older than receipts get none (one warning per such gateway).
- The session is persistent (stable ``client_id``, ``clean_start=False``): after a crash the broker redelivers what was
  not acknowledged. Acks of messages received on an older connection are dropped (the broker redelivers them).
- :meth:`IngestWorker.stop` unsubscribes, drains what the broker already assigned to this session (a shared
  subscription does not hand a departing member's queue to the others), acknowledges, and ends the session.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from teleconsult.errors import IngestError
from teleconsult.ingest.metrics import IngestMetrics
from teleconsult.ingest.payload import (
    CONSENT_WITHDRAWN,
    Decoded,
    LatestRow,
    MinuteDelta,
    Rejected,
    Vocabulary,
    copy_rows,
    decode_batch,
    default_vocabulary,
    utc_now,
)
from teleconsult.ingest.receipts import ReceiptBook, ReceiptForm, outcome_of
from teleconsult.ingest.writer import DeadLetter, prepare_connection, write_batch
from teleconsult.store.enrolment import DeviceBinding, enrolment_map

log = logging.getLogger(__name__)

SHARED_TOPIC: Final = "$share/tbib-ingest/tbib/v1/gw/+/readings"


@dataclass(frozen=True, slots=True)
class IngestConfig:
    """Settings of one ingest worker."""

    dsn: str
    """PostgreSQL connection string (schema upgraded with ``tbib db upgrade``)."""
    mqtt_url: str
    """``mqtt://[user:password@]host:port`` (``mqtts://`` for TLS with the system CAs)."""
    client_id: str = field(default_factory=lambda: f"tbib-ingest-{socket.gethostname()}")
    """Stable per worker instance: the broker keeps its session (and unacknowledged messages) across crashes."""
    topic: str = SHARED_TOPIC
    max_batch_readings: int = 10_000
    """A batch closes at this many readings ..."""
    linger_s: float = 0.05
    """... or this long after its first message."""
    writers: int = 2
    """Concurrent batches (one database connection each)."""
    receive_maximum: int = 3000
    """MQTT v5 Receive Maximum: at most this many unacknowledged messages in flight to this worker."""
    max_payload_bytes: int = 1 << 20
    dead_letter_max_bytes: int = 64 << 10
    session_expiry_s: int = 3600
    keepalive_s: int = 30
    enrolment_refresh_s: float = 0.5
    """Minimum time between two enrolment refreshes triggered by unknown devices."""
    enrolment_max_age_s: float = 10.0
    """The enrolment map (with consent decisions) is reloaded at least this often while messages flow."""
    drain_timeout_s: float = 30.0
    """On stop, how long to keep committing what the broker already assigned to this session."""
    receipts: ReceiptForm | None = "range"
    """Commit receipts: ``"range"`` (batch names, default), ``"ids"`` (every committed id), ``None`` (none)."""


class _Abandoned(Exception):
    """Stopping while the database is unreachable: the batch stays unacknowledged."""


@dataclass(slots=True)
class _Incoming:
    mid: int
    qos: int
    generation: int
    topic: str
    payload: bytes
    decoded: Decoded | Rejected | None = None
    refused: str | None = None
    """Set when the database refused the whole message (poison isolation): every reading is a dead letter."""
    bound_rejects: list[str] | None = None
    """Readings refused at the device binding (not enrolled, no consent in force)."""


@dataclass(slots=True)
class _Work:
    messages: list[_Incoming]
    lines: list[list[str]]
    dead: list[DeadLetter | None]
    sent_at: list[float | None]
    latest: dict[tuple[str, str], LatestRow] = field(default_factory=dict)
    minutes: MinuteDelta = field(default_factory=dict)


class IngestWorker:
    """One ingest worker; ``await start()`` / ``await stop()`` (embedded in the server) or :func:`run` (standalone)."""

    def __init__(
        self, config: IngestConfig, *, vocabulary: Vocabulary | None = None, metrics: IngestMetrics | None = None
    ) -> None:
        self.config = config
        self.metrics = metrics or IngestMetrics()
        self._vocab = vocabulary or default_vocabulary()
        self._inbox: collections.deque[_Incoming] = collections.deque()
        self._wake_lock = threading.Lock()
        self._wake_pending = False
        self._generation = 0
        self._bindings: dict[tuple[str, str], DeviceBinding] = {}
        self._last_refresh = 0.0
        self._bindings_ok = False
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._client: mqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._queue: asyncio.Queue[_Work | None] | None = None
        self._lookup: psycopg.AsyncConnection[Any] | None = None
        self._connected = threading.Event()
        self._unsubscribed = threading.Event()
        self._last_message_at = 0.0
        self._seen: dict[str, float] = {}
        self._receipts = ReceiptBook(form=config.receipts or "range")

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Connect to the broker (retrying in the background) and start the batcher and writers."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._queue = asyncio.Queue(maxsize=self.config.writers)
        await self._refresh_enrolment(force=True)
        self._tasks = [asyncio.create_task(self._batcher(), name="ingest-batcher")]
        self._tasks += [
            asyncio.create_task(self._writer(i), name=f"ingest-writer-{i}") for i in range(self.config.writers)
        ]
        self._client = self._make_client()
        self._client.loop_start()

    async def wait_connected(self, seconds: float = 10.0) -> bool:
        """Wait until the broker session is up and the subscription acknowledged (SUBACK)."""
        return await asyncio.to_thread(self._connected.wait, seconds)

    async def stop(self) -> None:
        """Unsubscribe, drain (commit and acknowledge everything the broker already assigned to this session), end the
        session, close connections. If draining times out, the session is kept so that a restart resumes it."""
        client = self._client
        drained = False
        if client is not None and client.is_connected():
            client.unsubscribe(self.config.topic)
            # UNSUBACK comes after every PUBLISH the broker sent before it (one ordered stream)
            await asyncio.to_thread(self._unsubscribed.wait, 5.0)
            deadline = time.monotonic() + self.config.drain_timeout_s
            while time.monotonic() < deadline:
                quiet = time.monotonic() - self._last_message_at >= 0.5
                if quiet and not self._inbox and self.metrics.inflight == 0:
                    drained = True
                    break
                await asyncio.sleep(0.05)
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if client is not None:
            props = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
            if drained:
                props.SessionExpiryInterval = 0  # nothing left for this session: end it
            client.disconnect(properties=props)
            await asyncio.to_thread(client.loop_stop)
        if self._lookup is not None:
            await self._lookup.close()

    # ------------------------------------------------------------------ MQTT (paho thread)
    def _make_client(self) -> mqtt.Client:
        url = urlsplit(self.config.mqtt_url)
        if url.scheme not in ("mqtt", "mqtts") or not url.hostname:
            raise IngestError(f"bad MQTT URL {self.config.mqtt_url!r} (expected mqtt://host:port)")
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.config.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
        )
        if url.username:
            client.username_pw_set(url.username, url.password)
        if url.scheme == "mqtts":
            client.tls_set()
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = lambda *_args: self._unsubscribed.set()
        client.on_message = self._on_message
        client.reconnect_delay_set(1, 5)
        client.max_inflight_messages_set(1000)  # receipts (QoS 1) out while the broker's PUBACKs come back
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.config.session_expiry_s
        props.ReceiveMaximum = self.config.receive_maximum
        port = url.port or (8883 if url.scheme == "mqtts" else 1883)
        client.connect_async(url.hostname, port, self.config.keepalive_s, clean_start=False, properties=props)
        return client

    def _on_connect(self, client: mqtt.Client, _u: object, _f: object, reason: Any, _p: object) -> None:
        if reason.is_failure:
            log.warning("broker refused the connection: %s", reason)
            return
        self._generation += 1
        self.metrics.mqtt_reconnects += 1
        client.subscribe(self.config.topic, options=SubscribeOptions(qos=1))

    def _on_subscribe(self, _c: mqtt.Client, _u: object, _mid: int, reasons: list[Any], _p: object) -> None:
        if any(r.is_failure for r in reasons):
            log.error("broker refused the subscription to %s: %s", self.config.topic, reasons)
            return
        self._connected.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _f: object, reason: Any, _p: object) -> None:
        self._connected.clear()
        if not self._stopping:
            log.warning("broker connection lost (%s); reconnecting", reason)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        self._last_message_at = time.monotonic()
        self._inbox.append(_Incoming(msg.mid, msg.qos, self._generation, msg.topic, bytes(msg.payload)))
        with self._wake_lock:
            if self._wake_pending or self._loop is None or self._wake is None:
                return
            self._wake_pending = True
        self._loop.call_soon_threadsafe(self._wake.set)

    def _ack(self, messages: list[_Incoming]) -> None:
        client = self._client
        if client is None:
            return
        gen = self._generation
        for m in messages:
            if m.qos > 0 and m.generation == gen:
                client.ack(m.mid, m.qos)
        self.metrics.inflight -= len(messages)

    # ------------------------------------------------------------------ batcher (event loop)
    async def _batcher(self) -> None:
        assert self._wake is not None
        assert self._queue is not None
        cfg = self.config
        while True:
            await self._wake.wait()
            with self._wake_lock:
                self._wake.clear()
                self._wake_pending = False
            if not self._inbox:
                if self._stopping:
                    break
                continue
            batch: list[_Incoming] = []
            n = 0
            deadline = time.monotonic() + cfg.linger_s
            now = utc_now()
            while n < cfg.max_batch_readings:
                if not self._inbox:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._stopping:
                        break
                    await asyncio.sleep(min(remaining, 0.005))
                    continue
                m = self._inbox.popleft()
                m.decoded = decode_batch(
                    m.topic, m.payload, vocab=self._vocab, now=now, max_bytes=cfg.max_payload_bytes
                )
                if isinstance(m.decoded, Decoded):
                    n += len(m.decoded.readings)
                batch.append(m)
            self.metrics.inflight += len(batch)
            work = await self._prepare(batch)
            if work is None:
                break
            await self._queue.put(work)
            if self._inbox:
                self._wake.set()
        for _ in range(cfg.writers):
            await self._queue.put(None)

    async def _prepare(self, batch: list[_Incoming]) -> _Work | None:
        """The batch ready to write, or ``None`` when stopping with the database unreachable (left unacknowledged)."""
        missing = any(
            (m.decoded.gateway_id, r.address) not in self._bindings
            for m in batch
            if isinstance(m.decoded, Decoded)
            for r in m.decoded.readings
        )
        delay = 0.2
        # an unknown device is refused only against a fresh enrolment map: never judge with the database down
        while missing and not await self._refresh_enrolment():
            if self._stopping:
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        if not missing and time.monotonic() - self._last_refresh > self.config.enrolment_max_age_s:
            await self._refresh_enrolment()  # consent withdrawals and re-assignments take effect within the max age
        work = _Work(batch, [], [], [])
        for m in batch:
            d = m.decoded
            if isinstance(d, Rejected) or d is None:
                reason = d.reason if d is not None else "not decoded"
                gw = d.gateway_id if d is not None else None
                work.lines.append([])
                work.dead.append(self._dead(m, gw, reason))
                work.sent_at.append(None)
                self.metrics.rejected += 1
                continue
            lines, not_enrolled = copy_rows(d, self._bindings, work.latest, work.minutes)
            m.bound_rejects = not_enrolled or None
            reasons = d.rejects + not_enrolled
            work.lines.append(lines)
            work.sent_at.append(d.sent_at)
            if reasons:
                self.metrics.rejected += len(reasons)
                shown = "; ".join(reasons[:10]) + (f"; ... ({len(reasons)} refused)" if len(reasons) > 10 else "")
                # readings without consent in force are not kept anywhere: the dead letter has the reason and size only
                keep = not any(r.endswith(CONSENT_WITHDRAWN) for r in reasons)
                work.dead.append(self._dead(m, d.gateway_id, shown, keep_payload=keep))
            else:
                work.dead.append(None)
        return work

    def _dead(self, m: _Incoming, gateway_id: str | None, reason: str, *, keep_payload: bool = True) -> DeadLetter:
        payload = m.payload[: self.config.dead_letter_max_bytes] if keep_payload else b""
        return DeadLetter(m.topic, gateway_id, reason, payload, len(m.payload))

    async def _refresh_enrolment(self, *, force: bool = False) -> bool:
        """Reload the enrolment map (at most every ``enrolment_refresh_s``); False when the database is unreachable."""
        now = time.monotonic()
        if not force and self._bindings_ok and now - self._last_refresh < self.config.enrolment_refresh_s:
            return True
        self._last_refresh = now
        try:
            if self._lookup is None or self._lookup.closed:
                self._lookup = await psycopg.AsyncConnection.connect(
                    self.config.dsn, autocommit=True, connect_timeout=5
                )
            self._bindings = await enrolment_map(self._lookup)
        except psycopg.Error as exc:
            log.warning("enrolment refresh failed: %s", str(exc).strip()[:200])
            self.metrics.db_errors += 1
            if self._lookup is not None:
                await self._lookup.close()
            self._lookup = None
            self._bindings_ok = False
            return False
        self._bindings_ok = True
        return True

    # ------------------------------------------------------------------ writers (event loop)
    async def _writer(self, index: int) -> None:
        assert self._queue is not None
        conn: psycopg.AsyncConnection[Any] | None = None
        try:
            while True:
                work = await self._queue.get()
                if work is None:
                    return
                try:
                    conn = await self._commit(conn, work)
                except _Abandoned:
                    continue  # stopping with the database down: left unacknowledged, the broker redelivers
                except psycopg.Error:
                    # even the dead letter was refused: leave these messages unacknowledged (redelivered after a
                    # reconnect) rather than lose them or kill the writer
                    log.exception("batch could not be stored; left unacknowledged")
                    self.metrics.inflight -= len(work.messages)
                    continue
                self._send_receipts(work.messages)
                self._ack(work.messages)
        finally:
            if conn is not None:
                await conn.close()

    def _send_receipts(self, messages: list[_Incoming]) -> None:
        """Publish the commit receipts of a committed batch (before its messages are acknowledged)."""
        client = self._client
        if client is None or self.config.receipts is None:
            return
        ids = self.config.receipts == "ids"
        receipts, legacy = self._receipts.receipts(
            outcome_of(m.decoded, refused=m.refused, bound_rejects=m.bound_rejects, ids=ids) for m in messages
        )
        for gw in legacy:
            log.warning("gateway %s sends batches without a batch name: old gateway, PUBACK mode, no receipts", gw)
        for r in receipts:
            client.publish(r.topic, r.payload, qos=1)
            self.metrics.receipts += 1
            self.metrics.receipt_bytes += len(r.payload)

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(self.config.dsn, autocommit=True, connect_timeout=5)
        await prepare_connection(conn)
        return conn

    async def _commit(self, conn: psycopg.AsyncConnection[Any] | None, work: _Work) -> psycopg.AsyncConnection[Any]:
        """Write ``work`` until it is committed; returns the (possibly new) connection."""
        delay = 0.1
        split = False
        while True:
            try:
                if conn is None or conn.closed:
                    conn = await self._connect()
                await (self._write_each(conn, work) if split else self._write_all(conn, work))
            except (psycopg.OperationalError, psycopg.InterfaceError, psycopg.errors.DeadlockDetected) as exc:
                self.metrics.db_errors += 1
                if self._stopping:
                    raise _Abandoned from exc
                log.warning("database write failed (%s); retrying in %.1f s", str(exc).strip()[:200], delay)
                if conn is not None and conn.broken:
                    await conn.close()
                    conn = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except psycopg.Error as exc:
                if split:
                    raise
                log.warning("batch refused by the database (%s); writing message by message", str(exc)[:200])
                split = True
            else:
                return conn

    async def _write_all(self, conn: psycopg.AsyncConnection[Any], work: _Work) -> None:
        lines = [line for ls in work.lines for line in ls]
        dead = [d for d in work.dead if d is not None]
        t0 = time.perf_counter()
        result = await write_batch(conn, lines, dead, list(work.latest.values()), minutes=work.minutes)
        self._account(work, result.inserted, result.duplicate, len(dead), time.perf_counter() - t0)
        await self._touch_gateways(conn, work)

    async def _touch_gateways(self, conn: psycopg.AsyncConnection[Any], work: _Work) -> None:
        """``gateways.last_seen_at`` for gateways that sent valid batches, at most every 10 s each (own statement,
        after the commit: never part of the readings transaction, so workers do not queue on gateway rows)."""
        now = time.monotonic()
        due = sorted(
            {
                m.decoded.gateway_id
                for m in work.messages
                if isinstance(m.decoded, Decoded) and now - self._seen.get(m.decoded.gateway_id, -1e9) >= 10.0
            }
        )
        if not due:
            return
        for gw in due:
            self._seen[gw] = now
        try:
            await conn.execute(
                "update gateways set last_seen_at = now() where id = any(%s)"
                " and (last_seen_at is null or last_seen_at < now())",
                (due,),
            )
        except psycopg.Error as exc:  # best effort: the next batch reconnects if the connection broke
            log.debug("last_seen_at update failed: %s", exc)

    async def _write_each(self, conn: psycopg.AsyncConnection[Any], work: _Work) -> None:
        """Poison isolation: one transaction per message; a message the database refuses becomes a dead letter."""
        inserted = duplicate = dead_n = 0
        t0 = time.perf_counter()
        for m, lines, dead in zip(work.messages, work.lines, work.dead, strict=True):
            try:
                r = await write_batch(conn, lines, [dead] if dead else [])
                inserted += r.inserted
                duplicate += r.duplicate
                dead_n += 1 if dead else 0
            except (psycopg.OperationalError, psycopg.InterfaceError):
                raise
            except psycopg.Error as exc:
                reason = f"refused by the database: {str(exc).strip()[:300]}"
                m.refused = reason
                gw = m.decoded.gateway_id if m.decoded is not None else None
                await write_batch(conn, [], [self._dead(m, gw, reason)])
                self.metrics.rejected += len(lines)
                dead_n += 1
        self._account(work, inserted, duplicate, dead_n, time.perf_counter() - t0)

    def _account(self, work: _Work, inserted: int, duplicate: int, dead: int, seconds: float) -> None:
        m = self.metrics
        m.batches += 1
        m.messages += len(work.messages)
        m.accepted += inserted
        m.duplicate += duplicate
        m.dead_letters += dead
        m.commit_seconds.observe(seconds)
        now = time.time()
        for sent in work.sent_at:
            if sent is not None:
                m.publish_to_commit_seconds.observe(max(now - sent, 0.0))


async def run(config: IngestConfig, *, metrics_port: int | None = None, metrics_host: str = "127.0.0.1") -> None:
    """Run a worker until SIGINT/SIGTERM (standalone ``tbib ingest``), then stop it cleanly."""
    import signal

    from teleconsult.ingest.metrics import serve_metrics

    worker = IngestWorker(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = await serve_metrics(worker.metrics, metrics_host, metrics_port) if metrics_port is not None else None
    await worker.start()
    try:
        await stop.wait()
    finally:
        await worker.stop()
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()
