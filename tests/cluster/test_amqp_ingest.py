"""Ingest from the quorum queue (teleconsult/ingest/brokers/amqp.py) across a node kill: gateway-style paho QoS 1
publishers on the three MQTT URLs, two competing AMQP ingest consumers writing to TimescaleDB (one in this process on
node 1, one ``tbib ingest --amqp-url ...`` process on node 2), kill -9 of node 1, where the first publisher and the
first consumer are. Asserts on the database: every reading a broker acknowledged
is stored, each once; nothing was refused; commit receipts went out."""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import aio_pika
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from teleconsult.bench.broker import make_jobs
from teleconsult.bench.broker_cluster import QUEUE, Node
from teleconsult.bench.broker_pub import batch_readings, publisher_process
from teleconsult.bench.loadgen import reading_id
from teleconsult.ingest.brokers.amqp import AmqpIngest, AmqpIngestConfig
from teleconsult.store.migrate import upgrade
from tests.teleconsult.ingest.helpers import enrol_sync, free_port

from .conftest import Cluster

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]


async def _purge(url: str) -> None:
    conn = await aio_pika.connect(url, timeout=10)
    async with conn:
        ch = await conn.channel()
        q = await ch.declare_queue(QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
        await q.purge()


def _receipt_listener(node: Node, gateway_id: str) -> tuple[mqtt.Client, list[bytes]]:
    """A gateway's receipts subscription (MQTT 3.1.1 on a node that survives)."""
    got: list[bytes] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"rcpt-{gateway_id}", protocol=MQTTProtocolVersion.MQTTv311)
    c.on_message = lambda _c, _u, msg: got.append(bytes(msg.payload))
    c.connect("127.0.0.1", node.mqtt_port)
    c.subscribe(f"tbib/v1/gw/{gateway_id}/receipts", qos=1)
    c.loop_start()
    return c, got


async def _run(cl: list[Node], dsn: str, jobs: list[Any]) -> tuple[list[dict[str, Any]], list[AmqpIngest]]:
    amqp = [n.client_url for n in cl]
    await _purge(amqp[1])
    ingests = [AmqpIngest(AmqpIngestConfig(dsn=dsn, amqp_urls=tuple(amqp)))]
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

    listener, receipts = _receipt_listener(cl[2], "bench-gw-1")
    port = free_port()
    urls = [n.client_url for n in cl]
    cli = subprocess.Popen(  # the supported deployment: a standalone worker on the cluster
        [str(REPO / ".venv" / "bin" / "tbib"), "ingest", "--dsn", tsdb_dsn, "--metrics-port", str(port)]
        + [a for u in urls[1:] + urls[:1] for a in ("--amqp-url", u)],
    )
    try:
        time.sleep(2.0)  # subscribed and consuming before the load
        logs, expected, n_stored, n_found, ingests = asyncio.run(scenario())
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        cli.send_signal(signal.SIGTERM)
        cli.wait(30)
        listener.loop_stop()
        listener.disconnect()
    cli_metrics = {k: float(v) for k, v in (ln.split() for ln in text.splitlines() if ln and not ln.startswith("#"))}
    print(
        {k: v for k, v in cli_metrics.items() if k.endswith("_total")},
        [(i.metrics.accepted, i.metrics.duplicate) for i in ingests],
    )
    assert cli_metrics["tbib_ingest_messages_total"] > 0, "the tbib ingest process consumed nothing"
    assert cli_metrics["tbib_ingest_readings_rejected_total"] == 0
    assert cl[0].pid() is None, "the node was not killed"
    assert all(r["unacked"] == 0 for r in logs), "publishers could not deliver every batch after the failover"
    assert len(expected) >= 3000, len(expected)
    assert n_found == len(expected), f"lost {len(expected) - n_found} of {len(expected)} acknowledged readings"
    assert n_stored == len(expected), f"{n_stored} rows stored for {len(expected)} readings"  # each exactly once
    assert sum(i.metrics.rejected for i in ingests) == 0
    assert sum(i.metrics.receipts for i in ingests) + cli_metrics["tbib_ingest_receipts_total"] > 0
    # the commit receipts reach the gateway's MQTT subscription through amq.topic, naming its batches
    assert receipts, "no commit receipt reached the gateway over MQTT"
    assert all(json.loads(r)["gateway_id"] == "bench-gw-1" for r in receipts), receipts[:2]
    assert sum(i.connects for i in ingests) >= 2, "the consumer on the killed node reconnected elsewhere"
