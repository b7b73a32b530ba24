"""Ingest from a RabbitMQ quorum queue (the clustered broker of docs/scale-out.md).

The gateways publish over MQTT to any node of the cluster; ``rabbitmq_mqtt`` routes ``tbib/v1/gw/{id}/readings`` to
``amq.topic`` with the routing key ``tbib.v1.gw.{id}.readings`` (``/`` and ``.`` swapped), and the quorum queue
``tbib.readings`` holds them on three nodes. :class:`AmqpIngest` is one competing consumer of that queue:

- messages arrive with manual acknowledgement (``prefetch`` unacknowledged at most); the batcher takes up to
  ``max_batch_readings`` readings or ``linger_s``, validates them (:func:`.payload.decode_batch`), resolves devices
  against the enrolment map and writes one transaction (:class:`.commit.Committer`: the ingest worker's idempotent
  path, by reading id);
- after COMMIT, the commit receipts go to ``amq.topic`` with the routing key of ``tbib/v1/gw/{id}/receipts`` (the
  gateway's MQTT subscription; publisher confirms awaited), then the batch is acknowledged (``multiple``);
- a lost connection (a node killed) leaves the batch unacknowledged: the queue redelivers it to a consumer on a
  surviving node and the idempotent write stores nothing twice. The consumer reconnects to the next URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Final

import aio_pika
import psycopg

from teleconsult.ingest.batch import Incoming, build_work, has_unknown_device, receipt_outcomes
from teleconsult.ingest.commit import Abandoned, Committer
from teleconsult.ingest.metrics import IngestMetrics
from teleconsult.ingest.payload import Decoded, Vocabulary, decode_batch, default_vocabulary, utc_now
from teleconsult.ingest.receipts import ReceiptBook, ReceiptForm
from teleconsult.store.enrolment import DeviceBinding, enrolment_map

log = logging.getLogger(__name__)

_SWAP: Final = str.maketrans("./", "/.")


def mqtt_topic(routing_key: str) -> str:
    """The MQTT topic of a routing key of ``rabbitmq_mqtt`` (it swaps ``/`` and ``.``)."""
    return routing_key.translate(_SWAP)


def routing_key(topic: str) -> str:
    """The routing key ``rabbitmq_mqtt`` matches for an MQTT topic."""
    return topic.translate(_SWAP)


@dataclass(frozen=True, slots=True)
class AmqpIngestConfig:
    """Settings of one AMQP ingest consumer."""

    dsn: str
    amqp_urls: tuple[str, ...]
    """Every node of the cluster (``amqp://user:pass@host:5672/``); tried in turn."""
    queue: str = "tbib.readings"
    exchange: str = "amq.topic"
    prefetch: int = 2000
    max_batch_readings: int = 10_000
    linger_s: float = 0.05
    max_payload_bytes: int = 1 << 20
    dead_letter_max_bytes: int = 64 << 10
    enrolment_refresh_s: float = 0.5
    receipts: ReceiptForm | None = "range"


class AmqpIngest:
    """One competing consumer of the quorum queue; ``await start()`` / ``await stop()``."""

    def __init__(
        self, config: AmqpIngestConfig, *, vocabulary: Vocabulary | None = None, metrics: IngestMetrics | None = None
    ) -> None:
        if not config.amqp_urls:
            raise ValueError("AmqpIngestConfig.amqp_urls is empty")
        self.config = config
        self.metrics = metrics or IngestMetrics()
        self.connects = 0
        self._vocab = vocabulary or default_vocabulary()
        self._bindings: dict[tuple[str, str], DeviceBinding] = {}
        self._refreshed = -1e9
        self._loaded = False
        self._lookup: psycopg.AsyncConnection[Any] | None = None
        self._receipts = ReceiptBook(form=config.receipts or "range")
        self._stopping = False
        self._committer = Committer(
            config.dsn, self.metrics, dead_max_bytes=config.dead_letter_max_bytes, stopping=lambda: self._stopping
        )
        self._task: asyncio.Task[None] | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def start(self) -> None:
        """Start consuming in the background."""
        self._task = asyncio.create_task(self._run(), name="amqp-ingest")

    async def stop(self) -> None:
        """Stop; a batch not yet committed stays unacknowledged (redelivered to another consumer)."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for conn in (self._conn, self._lookup):
            if conn is not None:
                await conn.close()

    async def _run(self) -> None:
        i = 0
        while not self._stopping:
            url = self.config.amqp_urls[i % len(self.config.amqp_urls)]
            i += 1
            try:
                connection = await aio_pika.connect(url, timeout=5)
            except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
                log.warning("cannot reach %s: %s", url.split("@")[-1], exc)
                await asyncio.sleep(0.5)
                continue
            self.connects += 1
            try:
                await self._consume(connection)
            except (OSError, TimeoutError, aio_pika.exceptions.AMQPError, RuntimeError) as exc:
                log.warning("AMQP link lost (%s): the unacknowledged batch is redelivered; reconnecting", exc)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(connection.close(), 2.0)
            await asyncio.sleep(0.2)

    async def _consume(self, connection: Any) -> None:
        cfg = self.config
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=cfg.prefetch)
        queue = await channel.declare_queue(cfg.queue, durable=True, arguments={"x-queue-type": "quorum"})
        exchange = await channel.get_exchange(cfg.exchange, ensure=False)
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        closed = asyncio.Event()
        connection.close_callbacks.add(lambda *_a: closed.set())
        await queue.consume(inbox.put)
        generation = self.connects
        while not closed.is_set():
            try:
                first = await asyncio.wait_for(inbox.get(), 0.5)
            except TimeoutError:
                continue
            batch, deliveries = await self._collect(first, inbox, generation)
            self.metrics.inflight += len(batch)
            try:
                if not await self._commit(batch, exchange):
                    return  # stopping with the database down: unacknowledged, redelivered to another consumer
                await deliveries[-1].ack(multiple=True)
            finally:
                self.metrics.inflight -= len(batch)

    async def _commit(self, batch: list[Incoming], exchange: Any) -> bool:
        """Write the batch, then publish its commit receipts; False when abandoned (stopping, database down)."""
        cfg = self.config
        try:
            work = await self._prepare(batch)
            self._conn = await self._committer.commit(self._conn, work)
        except Abandoned:
            return False
        receipts = (
            []
            if cfg.receipts is None
            else self._receipts.receipts(receipt_outcomes(work.messages, ids=cfg.receipts == "ids"))[0]
        )
        for r in receipts:
            await exchange.publish(
                aio_pika.Message(r.payload, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=routing_key(r.topic),
            )
            self.metrics.receipts += 1
            self.metrics.receipt_bytes += len(r.payload)
        return True

    async def _collect(
        self, first: Any, inbox: asyncio.Queue[Any], generation: int
    ) -> tuple[list[Incoming], list[Any]]:
        cfg = self.config
        now = utc_now()
        batch: list[Incoming] = []
        deliveries: list[Any] = []
        n = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cfg.linger_s
        msg = first
        while True:
            m = Incoming(msg.delivery_tag, 1, generation, mqtt_topic(msg.routing_key or ""), msg.body)
            d = m.decoded = decode_batch(
                m.topic, m.payload, vocab=self._vocab, now=now, max_bytes=cfg.max_payload_bytes
            )
            if isinstance(d, Decoded):
                n += len(d.readings)
            self.metrics.messages += 1
            batch.append(m)
            deliveries.append(msg)
            if n >= cfg.max_batch_readings:
                break
            if inbox.qsize():
                msg = inbox.get_nowait()
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                msg = await asyncio.wait_for(inbox.get(), remaining)
            except TimeoutError:
                break
        return batch, deliveries

    async def _prepare(self, batch: list[Incoming]) -> Any:
        delay = 0.2
        loop = asyncio.get_running_loop()
        stale = loop.time() - self._refreshed > self.config.enrolment_refresh_s
        # an unknown device is refused only against a fresh enrolment map: never judge with the database down
        while not self._loaded or (stale and has_unknown_device(batch, self._bindings)):
            if await self._refresh():
                break
            if self._stopping:
                raise Abandoned
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        work = build_work(batch, self._bindings, dead_max_bytes=self.config.dead_letter_max_bytes)
        self.metrics.rejected += work.rejected
        return work

    async def _refresh(self) -> bool:
        self._refreshed = asyncio.get_running_loop().time()
        try:
            if self._lookup is None or self._lookup.closed:
                self._lookup = await psycopg.AsyncConnection.connect(
                    self.config.dsn, autocommit=True, connect_timeout=5
                )
            self._bindings = await enrolment_map(self._lookup)
            self._loaded = True
        except psycopg.Error as exc:
            log.warning("enrolment refresh failed: %s", str(exc).strip()[:200])
            self.metrics.db_errors += 1
            self._lookup = None
            return False
        return True


async def run(config: AmqpIngestConfig, *, metrics_port: int | None = None, metrics_host: str = "127.0.0.1") -> None:
    """Run one consumer until SIGINT/SIGTERM (``tbib ingest --amqp-url ...``), then stop it."""
    import signal

    from teleconsult.ingest.metrics import serve_metrics

    ingest = AmqpIngest(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = await serve_metrics(ingest.metrics, metrics_host, metrics_port) if metrics_port is not None else None
    await ingest.start()
    try:
        await stop.wait()
    finally:
        await ingest.stop()
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()
