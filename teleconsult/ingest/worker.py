"""The ingest worker, a thin pump: MQTT (paho session, shared subscription, manual PUBACK) -> validation -> batched
idempotent COPY.

At-least-once, idempotent end to end:
- paho runs its network loop in its own thread; its read path (:mod:`.link`) hands each run of received PUBLISH
  packets to ``_on_publishes``, which only appends them to a deque and wakes the event loop (once per run).
- The batcher (event loop) drains up to ``max_batch_readings``, validates (:mod:`.payload`, pure), resolves devices
  through a cached enrolment map (refreshed on a miss), builds the transaction (:mod:`.batch`, pure) and hands it to
  one of ``writers`` tasks, each with its own database connection. A writer commits (:mod:`.commit`, :mod:`.writer`)
  then PUBACKs every message of the batch in one write.
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
import gc
import logging
import threading
import time
from typing import Any, Final
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from teleconsult.errors import IngestError
from teleconsult.ingest.batch import Incoming, Work, build_work, has_unknown_device, receipt_outcomes
from teleconsult.ingest.commit import Abandoned, Committer
from teleconsult.ingest.config import SHARED_TOPIC, IngestConfig
from teleconsult.ingest.link import Delivery, IngestClient
from teleconsult.ingest.metrics import IngestMetrics
from teleconsult.ingest.payload import Decoded, Vocabulary, decode_batch, default_vocabulary, utc_now
from teleconsult.ingest.receipts import ReceiptBook
from teleconsult.store.enrolment import DeviceBinding, enrolment_map

log = logging.getLogger(__name__)

__all__ = ["SHARED_TOPIC", "IngestConfig", "IngestWorker", "run", "tune_gc"]


class IngestWorker:
    """One ingest worker; ``await start()`` / ``await stop()`` (embedded in the server) or :func:`run` (standalone)."""

    def __init__(
        self, config: IngestConfig, *, vocabulary: Vocabulary | None = None, metrics: IngestMetrics | None = None
    ) -> None:
        self.config = config
        self.metrics = metrics or IngestMetrics()
        self._vocab = vocabulary or default_vocabulary()
        self._inbox: collections.deque[Incoming] = collections.deque()
        self._wake_lock = threading.Lock()
        self._wake_pending = False
        self._generation = 0
        self._bindings: dict[tuple[str, str], DeviceBinding] = {}
        self._last_refresh = 0.0
        self._bindings_ok = False
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._client: IngestClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._queue: asyncio.Queue[Work | None] | None = None
        self._lookup: psycopg.AsyncConnection[Any] | None = None
        self._connected = threading.Event()
        self._unsubscribed = threading.Event()
        self._last_message_at = 0.0
        self._receipts = ReceiptBook(form=config.receipts or "range")
        self._committer = Committer(
            config.dsn, self.metrics, dead_max_bytes=config.dead_letter_max_bytes, stopping=lambda: self._stopping
        )

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
            # UNSUBACK comes after every PUBLISH the broker sent before it (one ordered stream, delivered in order)
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
    def _make_client(self) -> IngestClient:
        url = urlsplit(self.config.mqtt_url)
        if url.scheme not in ("mqtt", "mqtts") or not url.hostname:
            raise IngestError(f"bad MQTT URL {self.config.mqtt_url!r} (expected mqtt://host:port)")
        client = IngestClient(
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
        client.on_publishes = self._on_publishes
        client.read_pause_s = self.config.read_pause_s
        client.on_message = self._on_message  # paho's own path: only a QoS 2 PUBLISH (we subscribe at QoS 1)
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

    def _on_publishes(self, run: list[Delivery]) -> None:
        self._last_message_at = time.monotonic()
        gen = self._generation
        self._inbox.extend([Incoming(mid, qos, gen, topic, payload) for mid, qos, topic, payload in run])
        with self._wake_lock:
            if self._wake_pending or self._loop is None or self._wake is None:
                return
            self._wake_pending = True
        self._loop.call_soon_threadsafe(self._wake.set)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        self._on_publishes([(msg.mid, msg.qos, msg.topic, bytes(msg.payload))])

    def _ack(self, messages: list[Incoming]) -> None:
        client = self._client
        if client is None:
            return
        gen = self._generation
        mine = [m for m in messages if m.qos > 0 and m.generation == gen]
        client.ack_many([m.mid for m in mine if m.qos == 1])
        for m in mine:
            if m.qos == 2:
                client.ack(m.mid, 2)
        self.metrics.inflight -= len(messages)

    # ------------------------------------------------------------------ batcher (event loop)
    async def _batcher(self) -> None:
        assert self._wake is not None
        assert self._queue is not None
        cfg = self.config
        inbox = self._inbox
        vocab = self._vocab
        while True:
            await self._wake.wait()
            with self._wake_lock:
                self._wake.clear()
                self._wake_pending = False
            if not inbox:
                if self._stopping:
                    break
                continue
            batch: list[Incoming] = []
            n = 0
            deadline = time.monotonic() + cfg.linger_s
            now = utc_now()
            while n < cfg.max_batch_readings:
                if not inbox:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._stopping:
                        break
                    await asyncio.sleep(min(remaining, 0.005))
                    continue
                m = inbox.popleft()
                d = m.decoded = decode_batch(m.topic, m.payload, vocab=vocab, now=now, max_bytes=cfg.max_payload_bytes)
                if d.__class__ is Decoded:
                    n += len(d.readings)
                batch.append(m)
            self.metrics.inflight += len(batch)
            work = await self._prepare(batch)
            if work is None:
                break
            await self._queue.put(work)
            if inbox:
                self._wake.set()
        for _ in range(cfg.writers):
            await self._queue.put(None)

    async def _prepare(self, batch: list[Incoming]) -> Work | None:
        """The batch ready to write, or ``None`` when stopping with the database unreachable (left unacknowledged)."""
        missing = has_unknown_device(batch, self._bindings)
        delay = 0.2
        # an unknown device is refused only against a fresh enrolment map: never judge with the database down
        while missing and not await self._refresh_enrolment():
            if self._stopping:
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        if not missing and time.monotonic() - self._last_refresh > self.config.enrolment_max_age_s:
            await self._refresh_enrolment()  # consent withdrawals and re-assignments take effect within the max age
        work = build_work(batch, self._bindings, dead_max_bytes=self.config.dead_letter_max_bytes)
        self.metrics.rejected += work.rejected
        return work

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
                    conn = await self._committer.commit(conn, work)
                except Abandoned:
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

    def _send_receipts(self, messages: list[Incoming]) -> None:
        """Publish the commit receipts of a committed batch (before its messages are acknowledged)."""
        client = self._client
        if client is None or self.config.receipts is None:
            return
        receipts, legacy = self._receipts.receipts(receipt_outcomes(messages, ids=self.config.receipts == "ids"))
        for gw in legacy:
            log.warning("gateway %s sends batches without a batch name: old gateway, PUBACK mode, no receipts", gw)
        for r in receipts:
            client.publish(r.topic, r.payload, qos=1)
            self.metrics.receipts += 1
            self.metrics.receipt_bytes += len(r.payload)


#: Garbage collector thresholds of a standalone worker: a batch makes ~10 container objects per reading, nearly all
#: acyclic and short-lived; at the default (700, 10, 10) the collector ran every ~70 readings and its older
#: generations kept rescanning the live batches (~30 % of decode + row building, ``docs/benchmarks/ingest.md``).
GC_THRESHOLDS: Final = (50_000, 20, 100)


def tune_gc() -> None:
    """Freeze what exists now (imports, settings: never garbage, no longer scanned) and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


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
    tune_gc()  # the process is the worker's alone (the embedded worker leaves the server's collector as it is)
    try:
        await stop.wait()
    finally:
        await worker.stop()
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()
