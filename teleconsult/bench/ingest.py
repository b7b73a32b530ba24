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
import asyncio
import json
import multiprocessing as mp
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import numpy as np
import psycopg

from teleconsult.bench.loadgen import Job, cpu_seconds_by_role, publisher_process
from teleconsult.bench.receipts import ReceiptSink, receipt_summary
from teleconsult.ingest.metrics import LATENCY_BUCKETS, quantile_from_buckets
from teleconsult.store.migrate import upgrade

REPO: Final = Path(__file__).resolve().parents[2]
TAGS: Final = {
    "steady": 0x51,
    "backlog": 0xBA,
    "latency": 0x1A,
    "steady_receipts": 0x52,
    "steady_receipts_ids": 0x53,
    "steady_receipts_2": 0x54,
    "steady_2": 0x55,
}


def log(msg: str) -> None:
    """Progress on stderr (stdout is reserved for the result)."""
    print(f"bench ingest: {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def project_dsn() -> str:
    """The project's database: $TBIB_TEST_DSN, else `scripts/services.sh up`."""
    if os.environ.get("TBIB_TEST_DSN"):
        return os.environ["TBIB_TEST_DSN"]
    script = str(REPO / "scripts" / "services.sh")
    out = subprocess.run([script, "up"], check=True, capture_output=True, text=True)  # noqa: S603 - our script
    m = re.search(r"^export TBIB_TEST_DSN='([^']*)'$", out.stdout, re.MULTILINE)
    if not m:
        raise RuntimeError("scripts/services.sh up did not print TBIB_TEST_DSN")
    return m.group(1)


class Broker:
    """A private Mosquitto with the project's tuned settings (persistence in a temp dir)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="tbib-bench-mq-"))
        self.port = free_port()
        base = (REPO / "config" / "mosquitto" / "tbib.conf").read_text()
        (self.dir / "mosquitto.conf").write_text(
            base + f"\nlistener {self.port} 127.0.0.1\nallow_anonymous true\npersistence_location {self.dir}/\n"
        )
        if os.geteuid() == 0:
            shutil.chown(self.dir, "mosquitto")  # mosquitto drops root privileges to this user
        self.proc = subprocess.Popen(  # noqa: S603 - fixed binary, our config
            ["/usr/sbin/mosquitto", "-c", str(self.dir / "mosquitto.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.3)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def scrape(port: int) -> dict[str, float]:
    """A worker's Prometheus text as {sample name with labels: value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def totals(ports: list[int]) -> dict[str, float]:
    """Sum of every sample over the workers."""
    acc: dict[str, float] = {}
    for p in ports:
        for k, v in scrape(p).items():
            acc[k] = acc.get(k, 0.0) + v
    return acc


def latency_quantiles(before: dict[str, float], after: dict[str, float]) -> tuple[float | None, float | None]:
    """p50/p99 (seconds) of the publish -> commit histogram between two scrapes."""
    name = "tbib_ingest_publish_to_commit_seconds_bucket"
    cum = [after.get(f'{name}{{le="{b:g}"}}', 0) - before.get(f'{name}{{le="{b:g}"}}', 0) for b in LATENCY_BUCKETS]
    inf = after.get(f'{name}{{le="+Inf"}}', 0) - before.get(f'{name}{{le="+Inf"}}', 0)
    counts = [int(c - p) for c, p in zip([*cum, inf], [0, *cum], strict=True)]
    return quantile_from_buckets(LATENCY_BUCKETS, counts, 0.5), quantile_from_buckets(LATENCY_BUCKETS, counts, 0.99)


class CpuMeter:
    """CPU seconds (user + system) used by the ingest workers, the broker and the database backends of the run."""

    def __init__(self, dsn: str, workers: list[int], broker: int | None) -> None:
        self.dsn, self.workers, self.broker = dsn, workers, broker

    def _pids(self) -> dict[str, list[int]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            rows = conn.execute(
                "select pid from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()"
            ).fetchall()
        out = {"ingest": self.workers, "postgres": [int(r[0]) for r in rows]}
        if self.broker is not None:
            out["broker"] = [self.broker]
        return out

    def sample(self) -> dict[str, float]:
        """Cumulative CPU seconds per role (processes that vanished count as 0)."""
        return cpu_seconds_by_role(self._pids())


def enrol(dsn: str, n: int) -> list[tuple[int, str, str, uuid.UUID]]:
    """``n`` patients, each with a gateway and a pulse oximeter; returns (index, gateway id, address, patient id)."""
    out = []
    with psycopg.connect(dsn) as conn:
        for i in range(n):
            pid = uuid.uuid4()
            gw = f"bench-gw-{i:04d}"
            conn.execute("insert into patients (id, display_name) values (%s, %s)", (pid, f"Bench {i}"))
            conn.execute("insert into gateways (id, patient_id) values (%s, %s)", (gw, pid))
            conn.execute(
                "insert into devices (gateway_id, patient_id, address, model, kind)"
                " values (%s, %s, %s, 'SIM-1', 'plx')",
                (gw, pid, f"AA:00:00:00:{i // 256:02X}:{i % 256:02X}"),
            )
            conn.execute(  # no decision on file is no consent: the bench patients consent to monitoring
                "insert into consents (patient_id, purpose, granted, note)"
                " values (%s, 'remote_monitoring', true, 'bench')",
                (pid,),
            )
            out.append((i, gw, f"AA:00:00:00:{i // 256:02X}:{i % 256:02X}", pid))
    return out


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
) -> dict[str, Any]:
    """Publish for ``seconds``, wait until the workers committed everything; rates and latency.

    ``named``: batches carry a batch name, so the workers publish commit receipts (``docs/mqtt.md``)."""
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
    }


def verify(dsn: str, phases: list[dict[str, Any]]) -> tuple[int, int, int]:
    """(lost, duplicated, unexpected) by comparing stored reading ids with the deterministic ids sent."""
    buf = bytearray()
    with (
        psycopg.connect(dsn) as conn,
        conn.cursor() as cur,
        cur.copy("copy (select reading_id from readings where device_id is not null) to stdout (format binary)") as cp,
    ):
        for chunk in cp:
            buf += chunk
    rows = np.frombuffer(
        memoryview(buf)[19 : len(buf) - 2], dtype=[("n", ">i2"), ("l", ">i4"), ("hi", ">u8"), ("lo", ">u8")]
    )
    lost = duplicated = unexpected = 0
    for ph in phases:
        mine = rows["lo"][rows["hi"] == ph["tag"]]
        gw = (mine >> np.uint64(40)).astype(np.int64)
        seq = (mine & np.uint64((1 << 40) - 1)).astype(np.int64)
        for g, n_msgs in ph["sent"].items():
            s = seq[gw == g]
            expected = n_msgs * ph["per_message"]
            uniq = np.unique(s)
            inside = uniq[(uniq >= 0) & (uniq < expected)]
            lost += expected - len(inside)
            duplicated += len(s) - len(uniq)
            unexpected += len(uniq) - len(inside)
    return lost, duplicated, unexpected


def copy_limit(dsn: str, gateways: list[tuple[int, str, str, uuid.UUID]], n: int) -> tuple[float, float]:
    """Readings/s of a raw text COPY of ``n`` rows shaped like ingest's into ``readings`` (rows built beforehand), and
    the database backend's CPU microseconds per row."""
    import psutil

    with psycopg.connect(dsn) as conn:
        devs = conn.execute("select id, patient_id from devices order by gateway_id").fetchall()
    base = datetime.now(UTC) - timedelta(hours=20)
    lines = []
    for k in range(n):
        dev, pid = devs[k % len(devs)]
        t = (base + timedelta(milliseconds=100 * k)).isoformat()
        lines.append(f"{pid}\t{dev}\theart_rate\t{70 + k % 7}.0\t/min\t{t}\t{t}\t{uuid.uuid4()}\t\\N\t\\N\n")
    data = "".join(lines).encode()
    cols = "patient_id, device_id, metric, value, unit, measured_at, received_at, reading_id, group_id, flags"
    with psycopg.connect(dsn) as conn:
        backend = psutil.Process(conn.info.backend_pid)
        c0 = backend.cpu_times()
        t0 = time.perf_counter()
        with conn.cursor() as cur, cur.copy(f"copy readings ({cols}) from stdin") as cp:
            for k in range(0, len(data), 1 << 20):
                cp.write(data[k : k + (1 << 20)])
        conn.commit()
        elapsed = time.perf_counter() - t0
        c1 = backend.cpu_times()
    return n / elapsed, (c1.user + c1.system - c0.user - c0.system) / n * 1e6


def naive(dsn: str, seconds: float) -> float:
    """Readings/s of one autocommit INSERT per reading (what a simple subscriber does)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        dev, pid = conn.execute("select id, patient_id from devices limit 1").fetchone() or (None, None)
        base = datetime.now(UTC) - timedelta(hours=30)
        n = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            t = base + timedelta(milliseconds=100 * n)
            conn.execute(
                "insert into readings (patient_id, device_id, metric, value, unit, measured_at, received_at,"
                " reading_id) values (%s, %s, 'heart_rate', %s, '/min', %s, %s, %s) on conflict do nothing",
                (pid, dev, 70.0, t, t, uuid.uuid4()),
            )
            n += 1
        return n / (time.perf_counter() - t0)


def history_p95(dsn: str, gateways: list[tuple[int, str, str, uuid.UUID]], queries: int) -> tuple[float, int]:
    """p95 ms of 1 000-point chart queries over the last 2 days of heart rate of random benchmark patients."""
    from psycopg_pool import AsyncConnectionPool

    from teleconsult.store.readings import history

    async def go() -> tuple[list[float], int]:
        end = datetime.now(UTC)
        start = end - timedelta(days=2)
        timings: list[float] = []
        rows = 0
        async with AsyncConnectionPool(dsn, min_size=1, max_size=2, open=False) as pool:
            for _ in range(queries):
                pid = random.choice(gateways)[3]
                t0 = time.perf_counter()
                h = await history(pool, pid, "heart_rate", start, end, max_points=1000)
                timings.append((time.perf_counter() - t0) * 1000)
                rows = max(rows, len(h.points))
        return timings, rows

    timings, points = asyncio.run(go())
    return float(np.percentile(timings, 95)), points


def start_workers(
    dsn: str, mqtt_url: str, share: str, ports: list[int], batch: int, receipts: str
) -> list[subprocess.Popen[bytes]]:
    """``tbib ingest`` processes on one shared subscription, each serving its metrics; waits until subscribed."""
    workers = [
        subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "teleconsult.cli.main", "ingest", "--dsn", dsn, "--mqtt-url", mqtt_url,
             "--client-id", f"{share}-w{i}", "--topic", f"$share/{share}/tbib/v1/gw/+/readings",
             "--metrics-port", str(port), "--batch", str(batch), "--receipts", receipts],
            cwd=REPO,
        )
        for i, port in enumerate(ports)
    ]  # fmt: skip
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if all(scrape(p).get("tbib_ingest_mqtt_reconnects_total", 0) >= 1 for p in ports):
                break
        except OSError:
            pass
        time.sleep(0.2)
    time.sleep(0.5)
    return workers


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM (a worker drains and acknowledges what it holds), then wait."""
    for w in workers:
        w.terminate()
    for w in workers:
        w.wait(30)


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
            return run_phase(name, mqtt_url, gateways, ports, per_message=10, seconds=args.seconds, rate=None, **common)

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
