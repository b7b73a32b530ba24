"""The server side of ``tbib bench broker``: competing consumers that count reading ids.

- RabbitMQ: AMQP consumers (aio-pika) on the quorum queue, manual acks, each on its own node; a consumer whose node
  dies connects to the next one.
- NATS: pull subscriptions (nats-py) bound to one durable JetStream consumer, explicit acks; the client library
  reconnects to another server of its list.
- Mosquitto: a paho MQTT 5 shared subscription (the ingest worker's way, ``$share/...``), QoS 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from teleconsult.bench.broker_cluster import DURABLE, QUEUE, STREAM, SUBJECTS

CONSUMERS = 2
_SEQ_MASK = (1 << 40) - 1


@dataclass(slots=True)
class Consumed:
    """What the consumers got in one phase."""

    tag: int
    counts: Counter[tuple[int, int]] = field(default_factory=Counter)
    """(gateway index, reading seq) -> deliveries"""
    reconnects: int = 0
    redelivered: int = 0
    """readings of this run in deliveries the broker marked as redeliveries"""
    bad: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, body: bytes, *, redelivered: bool = False) -> None:
        """Count the readings of one delivered batch (other runs' batches are ignored)."""
        try:
            readings = orjson.loads(body)["readings"]
            ids = [uuid.UUID(r["id"]).int for r in readings]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            self.bad += 1
            return
        with self.lock:
            for u in ids:
                if u >> 64 == self.tag:
                    self.counts[((u >> 40) & 0xFFFFFF, u & _SEQ_MASK)] += 1
                    self.redelivered += redelivered


async def _rabbit_consumer(k: int, urls: list[str], got: Consumed, stop: asyncio.Event) -> None:
    import aio_pika

    i = k
    while not stop.is_set():
        url = urls[i % len(urls)]
        i += 1
        try:
            conn = await aio_pika.connect(url, timeout=5)
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError):
            await asyncio.sleep(0.2)
            continue
        closed = asyncio.Event()
        conn.close_callbacks.add(lambda *_a, ev=closed: ev.set())
        try:
            ch = await conn.channel()
            await ch.set_qos(prefetch_count=1000)
            queue = await ch.declare_queue(QUEUE, durable=True, arguments={"x-queue-type": "quorum"})

            async def on_message(msg: Any) -> None:
                got.record(msg.body, redelivered=bool(msg.redelivered))
                await msg.ack()

            await queue.consume(on_message)
            waits = [asyncio.create_task(stop.wait()), asyncio.create_task(closed.wait())]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError, RuntimeError):
            pass
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2.0)
        if not stop.is_set():
            got.reconnects += 1
            await asyncio.sleep(0.2)


async def _nats_consumer(k: int, urls: list[str], got: Consumed, stop: asyncio.Event) -> None:
    import nats
    from nats.errors import TimeoutError as NatsTimeout

    servers = urls[k % len(urls) :] + urls[: k % len(urls)]

    async def on_reconnect() -> None:
        got.reconnects += 1

    nc = await nats.connect(
        servers=servers,
        dont_randomize=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,
        connect_timeout=2,
        reconnected_cb=on_reconnect,
    )
    js = nc.jetstream(timeout=5)
    sub = await js.pull_subscribe(SUBJECTS, durable=DURABLE, stream=STREAM)
    try:
        while not stop.is_set():
            try:
                msgs = await sub.fetch(500, timeout=0.5)
            except (NatsTimeout, TimeoutError):
                continue
            except Exception:  # noqa: BLE001 (the server we pulled from died: nats-py reconnects, we pull again)
                await asyncio.sleep(0.2)
                continue
            for m in msgs:
                got.record(m.data, redelivered=m.metadata.num_delivered > 1)
                with contextlib.suppress(Exception):
                    await m.ack()
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


def _mosquitto_consumers(url: str, got: Consumed) -> list[Any]:
    from urllib.parse import urlsplit

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    parts = urlsplit(url)
    clients = []
    for k in range(CONSUMERS):
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{got.tag:x}-{k}", protocol=mqtt.MQTTv5)
        c.on_connect = lambda cl, _u, _f, _rc, _p: cl.subscribe("$share/bench/tbib/v1/gw/+/readings", qos=1)
        c.on_message = lambda _c, _u, msg: got.record(bytes(msg.payload))
        c.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
        c.loop_start()
        clients.append(c)
    return clients


async def _purge(kind: str, urls: list[str]) -> None:
    """Empty the queue/stream of earlier runs' readings (they are ignored by tag anyway, but cost time)."""
    if kind == "rabbitmq":
        import aio_pika

        conn = await aio_pika.connect(urls[0], timeout=10)
        async with conn:
            ch = await conn.channel()
            q = await ch.declare_queue(QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
            await q.purge()
    elif kind == "nats":
        import nats

        nc = await nats.connect(servers=urls, connect_timeout=5)
        try:
            await nc.jetstream(timeout=10).purge_stream(STREAM)
        finally:
            await nc.close()


async def consume(kind: str, urls: list[str], got: Consumed, stop: asyncio.Event) -> None:
    """Run the competing consumers of ``kind`` until ``stop``."""
    await _purge(kind, urls)
    if kind == "mosquitto":
        clients = _mosquitto_consumers(urls[0], got)
        await stop.wait()
        for c in clients:
            c.loop_stop()
            c.disconnect()
        return
    run = _rabbit_consumer if kind == "rabbitmq" else _nats_consumer
    await asyncio.gather(*(run(k, urls, got, stop) for k in range(CONSUMERS)))
