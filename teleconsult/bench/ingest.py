"""Ingest benchmark: ``tbib bench ingest [--seconds S] [--gateways G] [--workers W] [--json]``.

One run, all on this machine (broker + ingest + database), measured end to end:
1. A fresh database on the project's PostgreSQL/TimescaleDB (``scripts/services.sh up``, or ``--dsn``), a private
   Mosquitto with the project's tuned config (``config/mosquitto/tbib.conf``; or ``--mqtt-url``), ``W`` `tbib ingest`
   processes on one shared subscription, ``G`` enrolled simulated gateways in separate publisher processes.
2. Steady state: 10 readings per message, QoS 1, publishers as fast as the broker takes them, for ``S`` seconds;
   ``readings_per_s`` = readings committed / (last commit - first publish).
3. Backlog replay: 100 readings per message (a gateway's outbox after an outage).
4. Latency: 10 readings per message at half the steady rate; p50/p99 publish (``sent_at``) -> COMMIT from the workers'
   histograms.
5. Baselines on the same table: raw ``COPY`` of the same rows (``copy_limit_readings_per_s``) and one autocommit
   ``INSERT`` per reading (``naive_readings_per_s``).
6. Commit receipts (``docs/mqtt.md``): the steady phase is run twice in a row, first with batches without a name (old
   gateways: no receipts), then with named batches (a receipt per gateway per transaction, delivered to one subscriber
   of ``tbib/v1/gw/+/receipts``), then once more with the workers restarted in the plain-id receipt form
   (``--no-receipt-ids`` skips it): ``receipts`` in the result compares throughput, CPU and bytes per receipt.
7. ``lost`` / ``duplicated``: every stored id is compared with the deterministic ids sent; ``history_p95_ms``: p95 of
   1 000-point chart queries (:func:`teleconsult.store.readings.history`) over the benchmark patients' data.
The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import psycopg

from teleconsult.bench.ingest_baselines import copy_limit, history_p95, naive, verify
from teleconsult.bench.ingest_profile import Recorder
from teleconsult.bench.ingest_rig import (
    REPO,
    Broker,
    CpuMeter,
    enrol,
    free_port,
    latency_quantiles,
    log,
    project_dsn,
    start_workers,
    stop_workers,
    totals,
)
from teleconsult.bench.loadgen import Job, publisher_process
from teleconsult.bench.receipts import ReceiptSink, receipt_summary
from teleconsult.store.migrate import upgrade

__all__ = ["REPO", "Broker", "enrol", "free_port", "main", "project_dsn", "run_phase"]

TAGS: Final = {
    "steady": 0x51,
    "backlog": 0xBA,
    "latency": 0x1A,
    "steady_receipts": 0x52,
    "steady_receipts_ids": 0x53,
    "steady_receipts_2": 0x54,
    "steady_2": 0x55,
}


def run_phase(
    name: str,
    mqtt_url: str,
    gateways: list[tuple[int, str, str, uuid.UUID]],
    ports: list[int],
    *,
    cpu: CpuMeter,
    publishers: int,
    per_message: int,
    seconds: float,
    rate: float | None,
    named: bool = False,
    profile: float = 0.0,
) -> dict[str, Any]:
    """Publish for ``seconds``, wait until the workers committed everything; rates and latency.

    ``named``: batches carry a batch name, so the workers publish commit receipts (``docs/mqtt.md``). ``profile``:
    record the workers with py-spy for that many seconds from the start of publishing (``profile`` in the result)."""
    url = urlsplit(mqtt_url)
    assert url.hostname is not None
    start_epoch = (datetime.now(UTC) - timedelta(days=1)).timestamp() + TAGS[name]
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    results = ctx.Queue()
    procs = []
    for k in range(publishers):
        mine = [(i, gw, addr) for i, gw, addr, _ in gateways[k::publishers]]
        job = Job(
            url.hostname,
            url.port or 1883,
            mine,
            TAGS[name],
            per_message,
            seconds,
            None if rate is None else rate / publishers,
            start_epoch,
            named=named,
        )
        p = ctx.Process(target=publisher_process, args=(job, go, results), daemon=True)
        p.start()
        procs.append(p)
    time.sleep(1.0)  # publishers connected
    before = totals(ports)
    done_before = before.get("tbib_ingest_readings_accepted_total", 0) + before.get(
        "tbib_ingest_readings_duplicate_total", 0
    )
    cpu0 = cpu.sample()
    go.set()
    spy_dir = tempfile.mkdtemp(prefix="tbib-bench-spy-") if profile else None
    spy = Recorder(cpu.workers, min(profile, seconds), Path(spy_dir)) if spy_dir else None
    reports = [results.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join(10)
    sent: dict[int, int] = {}
    for r in reports:
        sent.update({int(k): v for k, v in r["sent"].items()})
    readings = sum(sent.values()) * per_message
    began = min(r["began"] for r in reports)
    last_publish = max(r["last_publish"] for r in reports)
    deadline = time.time() + 180
    after = before
    while time.time() < deadline:
        after = totals(ports)
        done = after.get("tbib_ingest_readings_accepted_total", 0) + after.get(
            "tbib_ingest_readings_duplicate_total", 0
        )
        if done - done_before >= readings:
            break
        time.sleep(0.05)
    committed_at = time.time()
    cpu1 = cpu.sample()
    used = {role: cpu1[role] - cpu0.get(role, 0.0) for role in cpu1}
    used["publishers"] = sum(r["cpu_s"] for r in reports)
    p50, p99 = latency_quantiles(before, after)
    elapsed = committed_at - began
    log(f"{name}: {readings} readings in {elapsed:.1f} s -> {readings / elapsed:,.0f}/s (p50 {p50}, p99 {p99})")
    return {
        "readings": readings,
        "messages": sum(sent.values()),
        "per_message": per_message,
        "seconds": round(elapsed, 3),
        "publish_seconds": round(last_publish - began, 3),
        "readings_per_s": round(readings / elapsed),
        "publish_readings_per_s": round(readings / max(last_publish - began, 1e-9)),
        "p50_ms": None if p50 is None else round(p50 * 1000, 1),
        "p99_ms": None if p99 is None else round(p99 * 1000, 1),
        "cpu_us_per_reading": {k: round(v / max(readings, 1) * 1e6, 2) for k, v in used.items()},
        "cpu_cores_busy": {k: round(v / elapsed, 2) for k, v in used.items()},
        "batches": int(after.get("tbib_ingest_batches_total", 0) - before.get("tbib_ingest_batches_total", 0)),
        "receipts": int(after.get("tbib_ingest_receipts_total", 0) - before.get("tbib_ingest_receipts_total", 0)),
        "receipt_bytes": int(
            after.get("tbib_ingest_receipt_bytes_total", 0) - before.get("tbib_ingest_receipt_bytes_total", 0)
        ),
        "sent": sent,
        "tag": TAGS[name],
        "profile": spy.result() if spy is not None else None,  # it removes its files
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; the last stdout line is the JSON result."""
    ap = argparse.ArgumentParser(prog="tbib bench ingest", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=12, help="steady-state publishing time (default 12)")
    ap.add_argument("--backlog-seconds", type=float, default=4, help="backlog replay publishing time (default 4)")
    ap.add_argument("--latency-seconds", type=float, default=5, help="latency run at half rate (default 5)")
    ap.add_argument("--gateways", type=int, default=50, help="simulated gateways (default 50)")
    ap.add_argument("--publishers", type=int, default=2, help="publisher processes (default 2)")
    ap.add_argument("--workers", type=int, default=3, help="`tbib ingest` processes (default 3)")
    ap.add_argument("--batch", type=int, default=10_000, help="worker max readings per transaction")
    ap.add_argument("--dsn", help="server DSN to create the benchmark database in (default: project services)")
    ap.add_argument("--mqtt-url", help="reuse this broker (default: a private Mosquitto with the project's config)")
    ap.add_argument("--plain", action="store_true", help="plain PostgreSQL schema instead of TimescaleDB")
    ap.add_argument("--keep-db", action="store_true", help="do not drop the benchmark database")
    ap.add_argument("--json", action="store_true", help="print only the JSON result on stdout")
    ap.add_argument(
        "--profile",
        type=float,
        default=0.0,
        metavar="S",
        help="py-spy the workers for S seconds of the first steady phase: CPU share per stage (`profile`)",
    )
    ap.add_argument("--receipts-first", action="store_true", help="run the with-receipts steady phase first")
    ap.add_argument(
        "--no-abba",
        dest="abba",
        action="store_false",
        help="skip the second pair of steady phases in the other order (A B B A removes the position effect)",
    )
    ap.add_argument(
        "--no-receipt-ids",
        dest="receipt_ids",
        action="store_false",
        help="skip the steady phase with plain-id receipts (workers restarted with --receipts ids)",
    )
    args = ap.parse_args(argv)

    server_dsn = args.dsn or project_dsn()
    name = f"tbib_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    dsn = urlsplit(server_dsn)._replace(path="/" + name).geturl()
    broker = None if args.mqtt_url else Broker()
    mqtt_url = args.mqtt_url or (broker.url if broker else "")
    workers: list[subprocess.Popen[bytes]] = []
    load0 = os.getloadavg()[0]
    try:
        upgrade(dsn, timescaledb=not args.plain)
        gateways = enrol(dsn, args.gateways)
        share = f"bench-{uuid.uuid4().hex[:6]}"
        ports = [free_port() for _ in range(args.workers)]
        workers = start_workers(dsn, mqtt_url, share, ports, args.batch, "range")
        log(f"{args.workers} workers up; database {name}; broker {mqtt_url}")
        sink = ReceiptSink(mqtt_url)  # stands for the gateways' receipt subscriptions (broker fan-out cost)
        cpu = CpuMeter(dsn, [w.pid for w in workers], broker.proc.pid if broker else None)
        common: dict[str, Any] = {"publishers": args.publishers, "cpu": cpu}

        # without receipts (batches without a name: old gateways, PUBACK mode) and the same load with them, in the
        # order asked (the second phase writes into a bigger table)
        def steady_phase(name: str = "steady") -> dict[str, Any]:
            return run_phase(
                name, mqtt_url, gateways, ports, per_message=10, seconds=args.seconds, rate=None,
                profile=args.profile if name == "steady" else 0.0, **common,
            )  # fmt: skip

        def receipts_phase(name: str = "steady_receipts") -> dict[str, Any]:
            return run_phase(
                name, mqtt_url, gateways, ports, per_message=10, seconds=args.seconds, rate=None, named=True, **common
            )

        if args.receipts_first:
            with_receipts = receipts_phase()
            steady = steady_phase()
        else:
            steady = steady_phase()
            with_receipts = receipts_phase()
        abba: list[dict[str, Any]] = []
        if args.abba:  # then the other order (B, A): each form once in each position
            abba = [receipts_phase("steady_receipts_2"), steady_phase("steady_2")]
        backlog = run_phase(
            "backlog",
            mqtt_url,
            gateways,
            ports,
            per_message=100,
            seconds=args.backlog_seconds,
            rate=None,
            **common,
        )
        half = steady["messages"] / steady["seconds"] / 2
        latency = run_phase(
            "latency", mqtt_url, gateways, ports, per_message=10, seconds=args.latency_seconds, rate=half, **common
        )
        ids_phase: dict[str, Any] | None = None
        if args.receipt_ids:  # the plain-id receipt form needs workers started with --receipts ids
            stop_workers(workers)
            workers = start_workers(dsn, mqtt_url, share, ports, args.batch, "ids")
            cpu.workers = [w.pid for w in workers]
            ids_phase = run_phase(
                "steady_receipts_ids", mqtt_url, gateways, ports, per_message=10, seconds=args.seconds, rate=None,
                named=True, **common,
            )  # fmt: skip
        stop_workers(workers)
        sink_received = sink.close()
        phases = [steady, with_receipts, *abba, backlog, latency] + ([ids_phase] if ids_phase else [])
        lost, duplicated, unexpected = verify(dsn, phases)
        copy_rate, copy_cpu_us = copy_limit(dsn, gateways, min(steady["readings"], 300_000))
        naive_rate = naive(dsn, 2.0)
        hist_p95, points = history_p95(dsn, gateways, 20)
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
        if broker is not None:
            broker.close()
        if not args.keep_db:
            with psycopg.connect(server_dsn, autocommit=True) as conn:
                conn.execute(f'drop database if exists "{name}" with (force)')
    server_us = sum(v for k, v in steady["cpu_us_per_reading"].items() if k != "publishers")
    result = {
        "benchmark": "ingest",
        "readings_per_s": steady["readings_per_s"],
        "backlog_readings_per_s": backlog["readings_per_s"],
        "copy_limit_readings_per_s": round(copy_rate),
        "naive_readings_per_s": round(naive_rate),
        "ratio_to_copy": round(steady["readings_per_s"] / copy_rate, 3),
        "backlog_ratio_to_copy": round(backlog["readings_per_s"] / copy_rate, 3),
        "ratio_to_naive": round(steady["readings_per_s"] / naive_rate, 1),
        # CPU cost per reading, robust to other load on the machine: our server side vs the COPY backend alone
        "server_cpu_us_per_reading": round(server_us, 2),
        "copy_cpu_us_per_reading": round(copy_cpu_us, 2),
        "cpu_ratio_to_copy": round(copy_cpu_us / server_us, 3),
        "cpu_bound_readings_per_s": round((os.cpu_count() or 1) * 1e6 / server_us),
        "lost": lost,
        "duplicated": duplicated,
        "unexpected": unexpected,
        "p50_publish_to_commit_ms": latency["p50_ms"],
        "p99_publish_to_commit_ms": latency["p99_ms"],
        "latency_run_readings_per_s": latency["readings_per_s"],
        "steady_p99_publish_to_commit_ms": steady["p99_ms"],
        "history_p95_ms": round(hist_p95, 1),
        "history_points": points,
        "readings_total": sum(p["readings"] for p in phases),
        "profile": steady["profile"],
        "receipts": receipt_summary(steady, with_receipts, ids_phase, sink_received, abba),
        "steady": {k: v for k, v in steady.items() if k not in ("sent", "tag")},
        "steady_receipts": {k: v for k, v in with_receipts.items() if k not in ("sent", "tag")},
        "backlog": {k: v for k, v in backlog.items() if k not in ("sent", "tag")},
        "workers": args.workers,
        "publishers": args.publishers,
        "gateways": args.gateways,
        "flavour": "plain" if args.plain else "timescaledb",
        "cpus": os.cpu_count(),
        "loadavg_before": round(load0, 2),
        "loadavg_after": round(os.getloadavg()[0], 2),
    }
    if not args.json:
        for k, v in result.items():
            if not isinstance(v, dict):
                print(f"{k:32} {v}")
    print(json.dumps(result, separators=(",", ":")))
    return 0 if lost == 0 and duplicated == 0 else 1
