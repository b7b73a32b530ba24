"""The ingest benchmark's checks and baselines on the same table: lost/duplicated ids, raw COPY, naive INSERT, chart
queries."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg


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
