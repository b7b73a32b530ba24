"""``tbib bench broker --ingest-dsn DSN``: the AMQP ingest (``tbib ingest --amqp-url``) on the RabbitMQ cluster.

A scratch database on DSN's server (migrated, the bench gateways enrolled, dropped at the end), ``--ingest-workers``
``tbib ingest --amqp-url <every node>`` processes, the publishers as fast as PUBACKs allow; reports readings
committed per second and the ingest processes' CPU per committed reading (psutil), to set beside the MQTT worker's
figure in docs/benchmarks/ingest.md.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import subprocess
import time
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from teleconsult.bench.broker_cluster import QUEUE, REPO, Node
from teleconsult.bench.broker_pub import PubJob, publisher_process
from teleconsult.store.migrate import upgrade


def _database(dsn: str, gateways: int) -> tuple[str, str]:
    """(admin DSN, scratch DSN) with the bench gateways enrolled."""
    name = f"tbib_brk_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"create database {name}")
    scratch = urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))
    upgrade(scratch)
    with psycopg.connect(scratch) as conn:
        for g in range(gateways):
            pid = uuid.uuid4()
            gw = f"bench-gw-{g}"
            conn.execute("insert into patients (id, display_name) values (%s, %s)", (pid, f"Bench {gw}"))
            conn.execute("insert into gateways (id, patient_id) values (%s, %s)", (gw, pid))
            conn.execute(
                "insert into devices (gateway_id, patient_id, address, kind) values (%s, %s, %s, 'hr')",
                (gw, pid, f"AA:00:00:00:{g // 256:02X}:{g % 256:02X}"),
            )
            conn.execute(
                "insert into consents (patient_id, purpose, granted) values (%s, 'remote_monitoring', true)", (pid,)
            )
    return dsn, scratch


async def _purge(url: str) -> None:
    import aio_pika

    conn = await aio_pika.connect(url, timeout=10)
    async with conn:
        ch = await conn.channel()
        q = await ch.declare_queue(QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
        await q.purge()


def ingest_phase(cl: list[Node], admin_dsn: str, jobs: list[PubJob], workers: int) -> dict[str, Any]:
    """Publish ``jobs`` through the cluster into ``workers`` AMQP ingest processes; committed/s and CPU/reading."""
    import psutil  # dev extra: benchmarks only

    admin, dsn = _database(admin_dsn, max(g for j in jobs for g in j.gateways) + 1)
    urls = [n.client_url for n in cl]
    asyncio.run(_purge(urls[0]))
    procs = [
        subprocess.Popen(  # noqa: S603
            [str(REPO / ".venv" / "bin" / "tbib"), "ingest", "--dsn", dsn]
            + [a for u in urls[k % 3 :] + urls[: k % 3] for a in ("--amqp-url", u)],
        )
        for k in range(workers)
    ]
    try:
        time.sleep(3.0)  # consuming before the load
        ps = [psutil.Process(p.pid) for p in procs]
        cpu0 = sum(p.cpu_times().user + p.cpu_times().system for p in ps)
        ctx = mp.get_context("fork")
        go, results = ctx.Event(), ctx.Queue()
        pubs = [ctx.Process(target=publisher_process, args=(j, go, results), daemon=True) for j in jobs]
        for pub in pubs:
            pub.start()
        time.sleep(0.5)
        t0 = time.time()
        go.set()
        logs = [results.get(True, 120.0) for _ in pubs]
        acked = sum(len(r["acks"]) for r in logs) * jobs[0].per_message
        with psycopg.connect(dsn, autocommit=True) as conn:
            deadline = time.monotonic() + 120
            while True:
                row = conn.execute("select count(*), max(ingested_at) from readings").fetchone()
                stored = int(row[0]) if row else 0
                if stored >= acked or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            last = conn.execute("select extract(epoch from max(ingested_at)) from readings").fetchone()
        cpu1 = sum(p.cpu_times().user + p.cpu_times().system for p in ps)
        elapsed = (float(last[0]) if last and last[0] is not None else time.time()) - t0
        return {
            "workers": workers,
            "acked_readings": acked,
            "stored_readings": stored,
            "lost": max(0, acked - stored),
            "committed_readings_per_s": round(stored / elapsed) if elapsed > 0 else 0,
            "ingest_cpu_s": round(cpu1 - cpu0, 2),
            "ingest_cpu_us_per_reading": round((cpu1 - cpu0) / stored * 1e6, 2) if stored else None,
        }
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"drop database if exists {urlsplit(dsn).path.lstrip('/')} with (force)")
