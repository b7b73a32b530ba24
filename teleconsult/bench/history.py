"""History benchmark: ``tbib bench history [--days 30] [--patients 50] [--queries 30] [--json]``.

One run, on the project's PostgreSQL/TimescaleDB (``scripts/services.sh up``, or ``--dsn``), in a fresh database:
1. Bulk load: ``--days`` of 1 Hz heart rate for one patient and a reading every ``--others-step`` seconds for the
   other ``--patients - 1`` over the same days, as one binary ``COPY`` built by numpy (indexes dropped during the load
   and rebuilt after, as a bulk import does); then the rollups by :func:`teleconsult.store.rollups.rebuild` (the
   function behind ``tbib db rebuild-rollups``), then ``VACUUM ANALYZE`` of the rollups (what autovacuum does after
   inserts: all-visible pages, so that charts read the covering keys with index-only scans).
2. Chart queries through the API's own code (:func:`teleconsult.store.readings.history` with ``max_points``, tier
   chosen automatically) over the last 7, 30 and 90 days of the 1 Hz patient: p50/p95 over ``--queries`` queries each,
   end times spread over the last hour. Baseline in the same run: the same 30-day query forced on raw rows
   (``source="raw"``, the pre-rollup code path): ``raw_p95_ms_30d``; ``ratio_30d`` = raw / rollup p95.
3. Ingest cost of the rollup (:func:`ingest_cost`): the worker's ``copy_rows`` and ``write_batch`` (direct COPY path)
   on 10 000-reading batches of payload v1 messages for all patients, in rotation without rollup, with the rollup
   aggregated by PostgreSQL, and with the worker's own per-minute aggregate (what ``tbib ingest`` does).
The last stdout line is one JSON object; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import urlsplit

import numpy as np
import psycopg

from teleconsult.store.migrate import upgrade

RANGES: Final = {"7d": timedelta(days=7), "30d": timedelta(days=30), "90d": timedelta(days=90)}
_PG_EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)
_ROW: Final = np.dtype(
    [
        ("n", ">i2"),
        ("l_pid", ">i4"), ("pid", "V16"),
        ("l_metric", ">i4"), ("metric", "S10"),
        ("l_value", ">i4"), ("value", ">f8"),
        ("l_unit", ">i4"), ("unit", "S4"),
        ("l_t", ">i4"), ("t", ">i8"),
        ("l_rid", ">i4"), ("rid", "V16"),
    ]
)  # fmt: skip


def log(msg: str) -> None:
    """Progress on stderr (stdout is reserved for the result)."""
    print(f"bench history: {msg}", file=sys.stderr, flush=True)


def copy_stream(pid: uuid.UUID, start: datetime, step_s: float, values: np.ndarray, seed: int) -> bytes:
    """Binary COPY rows (patient_id, metric, value, unit, measured_at, reading_id) of one heart-rate series."""
    n = len(values)
    rows = np.zeros(n, dtype=_ROW)
    rows["n"] = 6
    for col, size in (("pid", 16), ("metric", 10), ("value", 8), ("unit", 4), ("t", 8), ("rid", 16)):
        rows["l_" + col] = size
    rows["pid"] = np.frombuffer(pid.bytes, dtype="V16")[0]
    rows["metric"] = b"heart_rate"
    rows["unit"] = b"/min"
    rows["value"] = values
    start_us = int((start - _PG_EPOCH).total_seconds() * 1_000_000)
    rows["t"] = start_us + (np.arange(n, dtype=np.int64) * int(step_s * 1_000_000))
    rows["rid"] = np.frombuffer(np.random.default_rng(seed).bytes(16 * n), dtype="V16")
    return rows.tobytes()


def series(n: int, step_s: float, seed: int) -> np.ndarray:
    """Heart rate with a circadian swing and noise (one decimal), and one spike 2.5 days before the end (inside every
    charted range) that each chart must show."""
    t = np.arange(n, dtype=np.float64) * step_s
    rng = np.random.default_rng(seed)
    hr = 68 + 8 * np.sin(2 * np.pi * t / 86_400) + rng.normal(0, 2, n)
    hr[max(n - int(2.5 * 86_400 / step_s), n // 2)] = 185.0
    return np.round(hr, 1)


def bulk_load(dsn: str, patients: list[uuid.UUID], start: datetime, days: float, others_step: float) -> int:
    """One binary COPY of every series; indexes rebuilt afterwards. Returns the row count."""
    seconds = int(days * 86_400)
    total = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.executemany(
                "insert into patients (id, display_name) values (%s, %s)",
                [(p, f"Bench {i}") for i, p in enumerate(patients)],
            )
        indexes = conn.execute(
            "select indexname, indexdef from pg_indexes where tablename = 'readings' and schemaname = 'public'"
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f'drop index "{name}"')
        with (
            conn.transaction(),
            conn.cursor() as cur,
            cur.copy(
                "copy readings (patient_id, metric, value, unit, measured_at, reading_id) from stdin (format binary)"
            ) as copy,
        ):
            copy.write(b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8)
            for i, pid in enumerate(patients):
                step = 1.0 if i == 0 else others_step
                n = int(seconds / step)
                body = copy_stream(pid, start + timedelta(seconds=i % 7), step, series(n, step, i), 100 + i)
                for k in range(0, len(body), 1 << 24):
                    copy.write(body[k : k + (1 << 24)])
                total += n
            copy.write(b"\xff\xff")
        for _, definition in indexes:
            conn.execute(definition)
        conn.execute("analyze readings")
    return total


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2)


async def chart_queries(
    dsn: str, pid: uuid.UUID, end: datetime, queries: int, raw_queries: int, max_points: int
) -> dict[str, Any]:
    """p50/p95 per range (automatic tier) and the raw 30-day baseline."""
    from psycopg_pool import AsyncConnectionPool

    from teleconsult.store.readings import history

    out: dict[str, Any] = {}
    rng = np.random.default_rng(5)
    async with AsyncConnectionPool(dsn, min_size=1, max_size=2, open=False) as pool:
        plan: list[tuple[str, str, int]] = [(r, "auto", queries) for r in RANGES] + [("30d", "raw", raw_queries)]
        for rname, source, n in plan:
            timings: list[float] = []
            tiers: set[str] = set()
            peak = True
            for k in range(n + 2):  # two warm-up queries (plans, caches), not counted
                e = end - timedelta(seconds=float(rng.uniform(0, 3600)))
                t0 = time.perf_counter()
                h = await history(pool, pid, "heart_rate", e - RANGES[rname], e, max_points=max_points, source=source)  # type: ignore[arg-type]
                ms = (time.perf_counter() - t0) * 1000
                if k >= 2:
                    timings.append(ms)
                tiers.add(h.source)
                peak = peak and max(p.value for p in h.points) == 185.0
            key = f"{rname}" if source == "auto" else f"raw_{rname}"
            out[key] = {
                "p50_ms": pct(timings, 50),
                "p95_ms": pct(timings, 95),
                "max_ms": round(max(timings), 2),
                "queries": n,
                "points": len(h.points),
                "source": ",".join(sorted(tiers)),
                "spike_kept": peak,
            }
            log(f"{key}: p50 {out[key]['p50_ms']} ms, p95 {out[key]['p95_ms']} ms ({out[key]['source']})")
    return out


@dataclass(frozen=True, slots=True)
class _Binding:
    device_id: uuid.UUID
    patient_id: uuid.UUID
    monitoring_consent: bool = True


def _messages(patients: list[uuid.UUID], start: datetime, batch: int, per_patient: int) -> list[tuple[str, bytes]]:
    """One batch as payload v1 messages of 10 readings (a gateway's second), one gateway per patient."""
    out = []
    for i in range(len(patients)):
        for m in range(per_patient // 10):
            readings = []
            for k in range(10):
                t = start + timedelta(seconds=batch * per_patient + m * 10 + k)
                readings.append(
                    {"id": str(uuid.uuid4()), "device": {"address": "AA:00"}, "metric": "heart_rate",
                     "value": 60.0 + (i + k) % 40, "unit": "/min", "measured_at": t.isoformat(),
                     "received_at": t.isoformat(), "group": None, "flags": None}
                )  # fmt: skip
            doc = {"v": 1, "gateway_id": f"gw-{i}", "sent_at": start.isoformat(), "readings": readings}
            out.append((f"tbib/v1/gw/gw-{i}/readings", json.dumps(doc).encode()))
    return out


#: The alternative to the in-transaction merge: an incremental job over the rows ingested since its durable watermark.
#: Needs an index on ``ingested_at`` (paid by every insert). Correct only while no transaction older than the watermark
#: is still uncommitted (ingested_at is the transaction's start time): a real job would also need a safety lag.
_JOB_SQL: Final = "with {} , w as (update bench_watermark set wm = %(hi)s) select 1"


async def ingest_cost(dsn: str, patients: list[uuid.UUID], start: datetime, batches: int) -> dict[str, Any]:
    """The ingest path's cost of the rollup, same table, batches of 10 000 readings in rotation: ``none`` (no rollup),
    ``sql`` (PostgreSQL aggregates a second, temp-table COPY of the batch) and ``worker`` (the worker's Python
    per-minute aggregate sent as arrays: what ``tbib ingest`` does); then, with an index on ``readings.ingested_at``,
    ``none_indexed`` and ``job`` (no rollup in the batch; an incremental step after each batch merges the rows ingested
    since a durable watermark). Database time per batch and the worker's ``copy_rows`` time per reading."""
    from teleconsult.ingest.payload import Decoded, copy_rows, decode_batch, default_vocabulary
    from teleconsult.ingest.writer import prepare_connection, write_batch
    from teleconsult.store.rollups import delta_sql

    per_patient = 10_000 // len(patients) // 10 * 10
    bindings = {(f"gw-{i}", "AA:00"): _Binding(uuid.uuid4(), pid) for i, pid in enumerate(patients)}
    vocab = default_vocabulary()
    phases = (("none", "sql", "worker"), ("none_indexed", "job"))
    modes = [m for ms in phases for m in ms]
    db_s = dict.fromkeys(modes, 0.0)
    py_s = dict.fromkeys(modes, 0.0)
    rows = dict.fromkeys(modes, 0)
    job_s = 0.0
    now = datetime.now(UTC) + timedelta(days=1)
    job_sql = _JOB_SQL.format(
        delta_sql(
            "(select patient_id, metric, value, measured_at from readings"
            " where ingested_at > (select wm from bench_watermark) and ingested_at <= %(hi)s) r"
        )
    )
    b = 0
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await prepare_connection(conn)
        # migration 0210 (the alert feed) creates this index: the first phase measures the writer without it
        await conn.execute("drop index if exists readings_ingested_at")
        for phase in phases:
            if phase[0] == "none_indexed":
                await conn.execute("create index readings_ingested_at on readings (ingested_at)")
                await conn.execute("create table bench_watermark (wm timestamptz not null)")
                await conn.execute("insert into bench_watermark values (now())")
            for k in range(len(phase) * (batches + 1)):
                mode = phase[k % len(phase)]
                b += 1
                decoded = [
                    decode_batch(topic, body, vocab=vocab, now=now)
                    for topic, body in _messages(patients, start, b, per_patient)
                ]
                t0 = time.perf_counter()
                lines: list[str] = []
                latest: dict[Any, Any] = {}
                minutes: dict[Any, list[float]] | None = {} if mode == "worker" else None
                for d in decoded:
                    assert isinstance(d, Decoded)
                    ls, _ = copy_rows(d, bindings, latest, minutes)
                    lines += ls
                t1 = time.perf_counter()
                rollups = mode in ("sql", "worker")
                await write_batch(conn, lines, [], list(latest.values()), minutes=minutes, rollups=rollups)
                t2 = time.perf_counter()
                if mode == "job":
                    await conn.execute(job_sql, {"hi": datetime.now(UTC)})
                t3 = time.perf_counter()
                if k >= len(phase):  # the first round of each phase is warm-up
                    py_s[mode] += t1 - t0
                    db_s[mode] += t3 - t1
                    rows[mode] += len(lines)
                    job_s += t3 - t2
    out: dict[str, Any] = {"batch_readings": per_patient * len(patients), "batches_each": batches}
    for m in modes:
        out[f"{m}_db_readings_per_s"] = round(rows[m] / db_s[m])
        out[f"{m}_db_ms_per_batch"] = round(db_s[m] / batches * 1000, 2)
        out[f"{m}_copy_rows_us_per_reading"] = round(py_s[m] / rows[m] * 1e6, 3)
    for m in ("sql", "worker", "none_indexed", "job"):
        out[f"{m}_db_ratio"] = round(db_s["none"] / db_s[m], 3)
    out["job_step_ms_per_batch"] = round(job_s / batches * 1000, 2)
    out["worker_aggregate_us_per_reading"] = round((py_s["worker"] - py_s["none"]) / rows["worker"] * 1e6, 3)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from teleconsult.bench.ingest import project_dsn
    from teleconsult.cli.common import print_json

    ap = argparse.ArgumentParser(prog="tbib bench history", description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=float, default=30, help="days of data loaded (default 30)")
    ap.add_argument("--patients", type=int, default=50, help="patients in the table (default 50)")
    ap.add_argument("--others-step", type=float, default=60, help="seconds between the others' readings (60)")
    ap.add_argument("--queries", type=int, default=30, help="timed queries per range (default 30)")
    ap.add_argument("--raw-queries", type=int, default=10, help="timed raw 30-day queries (default 10)")
    ap.add_argument("--max-points", type=int, default=1000, help="chart points (default 1000)")
    ap.add_argument("--writer-batches", type=int, default=20, help="ingest-cost batches per mode (default 20)")
    ap.add_argument("--dsn", help="server DSN to create the benchmark database in (default: project services)")
    ap.add_argument("--plain", action="store_true", help="plain PostgreSQL schema instead of TimescaleDB")
    ap.add_argument("--keep-db", action="store_true", help="do not drop the benchmark database")
    ap.add_argument("--json", action="store_true", help="print the JSON result (last stdout line)")
    args = ap.parse_args(argv)
    if args.patients < 1 or args.days <= 0:
        ap.error("--patients >= 1 and --days > 0")

    server_dsn = args.dsn or project_dsn()
    name = f"tbib_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    dsn = urlsplit(server_dsn)._replace(path="/" + name).geturl()
    load0 = os.getloadavg()[0]
    try:
        upgrade(dsn, timescaledb=not args.plain)
        with psycopg.connect(dsn) as conn:
            flavour = "timescaledb" if conn.execute(
                "select 1 from pg_extension where extname = 'timescaledb'"
            ).fetchone() else "plain"  # fmt: skip
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        start = end - timedelta(days=args.days)
        patients = [uuid.uuid4() for _ in range(args.patients)]
        t0 = time.perf_counter()
        rows = bulk_load(dsn, patients, start, args.days, args.others_step)
        load_s = time.perf_counter() - t0
        log(f"loaded {rows} rows in {load_s:.1f} s ({flavour})")

        from teleconsult.store.rollups import rebuild

        async def build() -> Any:
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                return await rebuild(conn, chunk=timedelta(days=1))

        t0 = time.perf_counter()
        report = asyncio.run(build())
        rebuild_s = time.perf_counter() - t0
        log(f"rollups rebuilt in {rebuild_s:.1f} s: {report.minute_rows} minute, {report.hour_rows} hour rows")
        t0 = time.perf_counter()
        with psycopg.connect(dsn, autocommit=True) as conn:  # what autovacuum does after the inserts: all-visible
            conn.execute("vacuum analyze readings_1m")  # pages, so that charts use index-only scans
            conn.execute("vacuum analyze readings_1h")
        vacuum_s = time.perf_counter() - t0
        q = asyncio.run(chart_queries(dsn, patients[0], end, args.queries, args.raw_queries, args.max_points))
        log("ingest writer cost ...")
        cost = asyncio.run(ingest_cost(dsn, patients, end + timedelta(hours=1), args.writer_batches))
        log(
            f"writer: {cost['none_db_ms_per_batch']} ms per batch without rollup, {cost['sql_db_ms_per_batch']} with"
            f" (SQL aggregate), {cost['worker_db_ms_per_batch']} with the worker's aggregate"
            f" (+{cost['worker_aggregate_us_per_reading']} us Python per reading); incremental job: write"
            f" {cost['none_indexed_db_ms_per_batch']} ms with the ingested_at index, {cost['job_db_ms_per_batch']} with"
            f" the job step"
        )
        result: dict[str, Any] = {
            "benchmark": "history",
            "flavour": flavour,
            "patients": args.patients,
            "days_loaded": args.days,
            "rows": rows,
            "target_patient_rows": int(args.days * 86_400),
            "max_points": args.max_points,
            "load_s": round(load_s, 2),
            "rebuild_s": round(rebuild_s, 2),
            "rebuild_rows_per_s": round(rows / rebuild_s),
            "vacuum_s": round(vacuum_s, 2),
            "minute_rows": report.minute_rows,
            "hour_rows": report.hour_rows,
            "p95_ms_7d": q["7d"]["p95_ms"],
            "p95_ms_30d": q["30d"]["p95_ms"],
            "p95_ms_90d": q["90d"]["p95_ms"],
            "raw_p95_ms_30d": q["raw_30d"]["p95_ms"],
            "ratio_30d": round(q["raw_30d"]["p95_ms"] / q["30d"]["p95_ms"], 1),
            "queries": q,
            "ingest_cost": cost,
            "loadavg_before": round(load0, 2),
            "loadavg_after": round(os.getloadavg()[0], 2),
        }
    finally:
        if not args.keep_db:
            with psycopg.connect(server_dsn, autocommit=True) as conn:
                conn.execute(f'drop database if exists "{name}" with (force)')
    if args.json:
        print_json(result)
    else:
        for k, v in result.items():
            if k not in ("queries", "ingest_cost"):
                print(f"{k}: {v}")
        print(f"ingest_cost: {cost}")
    return 0 if all(x["spike_kept"] for x in q.values()) else 1
