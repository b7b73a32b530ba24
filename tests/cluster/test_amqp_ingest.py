"""Ingest from the quorum queue (teleconsult/ingest/brokers/amqp.py) across a node kill: gateway-style paho QoS 1
publishers on the three MQTT URLs, two AMQP ingest consumers on different nodes writing to TimescaleDB, kill -9 of the
node the first publisher and the first consumer are on. Asserts on the database: every reading a broker acknowledged
is stored, each once; nothing was refused; commit receipts went out."""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import time
from typing import Any

import aio_pika
import psycopg
import pytest

from teleconsult.bench.broker import make_jobs
from teleconsult.bench.broker_cluster import QUEUE, Node
from teleconsult.bench.broker_pub import batch_readings, publisher_process
from teleconsult.bench.loadgen import reading_id
from teleconsult.ingest.brokers.amqp import AmqpIngest, AmqpIngestConfig
from teleconsult.store.migrate import upgrade
from tests.teleconsult.ingest.helpers import enrol_sync

from .conftest import Cluster

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]


async def _purge(url: str) -> None:
    conn = await aio_pika.connect(url, timeout=10)
    async with conn:
        ch = await conn.channel()
        q = await ch.declare_queue(QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
        await q.purge()


async def _run(cl: list[Node], dsn: str, jobs: list[Any]) -> tuple[list[dict[str, Any]], list[AmqpIngest]]:
    amqp = [n.client_url for n in cl]
    await _purge(amqp[1])
    ingests = [AmqpIngest(AmqpIngestConfig(dsn=dsn, amqp_urls=tuple(amqp[k:] + amqp[:k]))) for k in (0, 1)]
    for ing in ingests:
        await ing.start()
    ctx = mp.get_context("fork")
    go, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=publisher_process, args=(j, go, results), daemon=True) for j in jobs]
    for p in procs:
        p.start()
    await asyncio.sleep(1.0)
    go.set()
    await asyncio.sleep(4.0)
    cl[0].kill9()
    logs = [await asyncio.to_thread(results.get, True, 120.0) for _ in procs]
    for p in procs:
        p.join(10)
    assert not [r for r in logs if "error" in r], logs
    return sorted(logs, key=lambda r: r["index"]), ingests


def test_ingest_from_the_quorum_queue_survives_a_node_kill(rabbit_cluster: Cluster, tsdb_dsn: str) -> None:
    cl = rabbit_cluster.nodes
    rabbit_cluster.up()
    upgrade(tsdb_dsn)
    args = argparse.Namespace(gateways=4, publishers=2, per_message=10, window=20)
    tag = int(time.time()) & 0xFFFFFFFF
    jobs = make_jobs([n.mqtt_url for n in cl], args, tag, 8.0, 25.0)  # 2 x 25 batches/s = 500 readings/s
    for g in range(args.gateways):
        enrol_sync(tsdb_dsn, f"bench-gw-{g}", f"AA:00:00:00:{g // 256:02X}:{g % 256:02X}")

    async def scenario() -> tuple[list[dict[str, Any]], set[str], int, int, list[AmqpIngest]]:
        logs, ingests = await _run(cl, tsdb_dsn, jobs)
        expected: set[str] = set()
        for job, rec in zip(jobs, logs, strict=True):
            for batch, _t in rec["acks"]:
                gw, first = batch_readings(job, batch)
                expected.update(str(reading_id(tag, gw, s)) for s in range(first, first + args.per_message))
        deadline = time.monotonic() + 60
        async with await psycopg.AsyncConnection.connect(tsdb_dsn, autocommit=True) as conn:
            while True:
                cur = await conn.execute("select reading_id::text from readings")
                stored = [r[0] for r in await cur.fetchall()]
                if expected <= set(stored) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
        for ing in ingests:
            await ing.stop()
        return logs, expected, len(stored), len(set(stored) & expected), ingests

    logs, expected, n_stored, n_found, ingests = asyncio.run(scenario())
    assert cl[0].pid() is None, "the node was not killed"
    assert all(r["unacked"] == 0 for r in logs), "publishers could not deliver every batch after the failover"
    assert len(expected) >= 3000, len(expected)
    assert n_found == len(expected), f"lost {len(expected) - n_found} of {len(expected)} acknowledged readings"
    assert n_stored == len(expected), f"{n_stored} rows stored for {len(expected)} readings"  # each exactly once
    assert sum(i.metrics.rejected for i in ingests) == 0
    assert sum(i.metrics.receipts for i in ingests) > 0
    assert sum(i.connects for i in ingests) >= 3, "the consumer on the killed node reconnected elsewhere"
