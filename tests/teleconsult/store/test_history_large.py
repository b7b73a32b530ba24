"""30 days of 1 Hz heart rate for one patient (2 592 000 rows, binary COPY) -> a 1 000-point chart series."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from teleconsult.store.history import daily_summary
from teleconsult.store.readings import history
from teleconsult.store.rollups import rebuild

pytestmark = pytest.mark.slow

START = datetime(2026, 9, 1, tzinfo=UTC)
SECONDS = 30 * 86_400


def heart_rate(n: int) -> np.ndarray:
    t = np.arange(n, dtype=np.float64)
    rng = np.random.default_rng(7)
    hr = 65 + 8 * np.sin(2 * np.pi * t / 86_400) + rng.normal(0, 2, n)
    hr[1_000_000] = 190.0  # one tachycardia spike the chart must show
    return np.round(hr, 1)


_ROW = np.dtype(
    [
        ("n", ">i2"),
        ("l_pid", ">i4"), ("pid", "V16"),
        ("l_dev", ">i4"), ("dev", "V16"),
        ("l_metric", ">i4"), ("metric", "S10"),
        ("l_value", ">i4"), ("value", ">f8"),
        ("l_unit", ">i4"), ("unit", "S4"),
        ("l_t", ">i4"), ("t", ">i8"),
        ("l_rid", ">i4"), ("rid", "V16"),
    ]
)  # fmt: skip
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def binary_copy(pid: uuid.UUID, device: uuid.UUID, values: np.ndarray) -> bytes:
    """The whole month as one PostgreSQL binary COPY stream, built by numpy (no Python object per row)."""
    n = len(values)
    rows = np.zeros(n, dtype=_ROW)
    rows["n"] = 7
    for col, size in (("pid", 16), ("dev", 16), ("metric", 10), ("value", 8), ("unit", 4), ("t", 8), ("rid", 16)):
        rows["l_" + col] = size
    rows["pid"] = np.frombuffer(pid.bytes, dtype="V16")[0]
    rows["dev"] = np.frombuffer(device.bytes, dtype="V16")[0]
    rows["metric"] = b"heart_rate"
    rows["unit"] = b"/min"
    rows["value"] = values
    start_us = int((START - _PG_EPOCH).total_seconds()) * 1_000_000
    rows["t"] = start_us + np.arange(n, dtype=np.int64) * 1_000_000
    rows["rid"] = np.frombuffer(np.random.default_rng(11).bytes(16 * n), dtype="V16")
    return b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8 + rows.tobytes() + b"\xff\xff"


@pytest.fixture(scope="module")
def month(store_dsn: str) -> Iterator[uuid.UUID]:
    pid, device = uuid.uuid4(), uuid.uuid4()
    data = binary_copy(pid, device, heart_rate(SECONDS))
    with psycopg.connect(store_dsn) as conn:
        conn.execute("insert into patients (id, display_name) values (%s, 'Month')", (pid,))
        # bulk load: build the indexes once afterwards (sorted) instead of 2.6 M random-order index inserts
        indexes = conn.execute(
            "select indexname, indexdef from pg_indexes where tablename = 'readings' and schemaname = 'public'"
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f'drop index "{name}"')
        with (
            conn.cursor() as cur,
            cur.copy(
                "copy readings (patient_id, device_id, metric, value, unit, measured_at, reading_id)"
                " from stdin (format binary)"
            ) as copy,
        ):
            for k in range(0, len(data), 1 << 24):
                copy.write(data[k : k + (1 << 24)])
        for _, definition in indexes:
            conn.execute(definition)
        conn.execute("analyze readings")

    async def rollups() -> None:
        async with await psycopg.AsyncConnection.connect(store_dsn, autocommit=True) as aconn:
            await rebuild(aconn, patient_id=pid)

    asyncio.run(rollups())  # the bulk load bypassed the ingest writer
    return pid


async def test_month_of_1hz_to_1000_points(pool: AsyncConnectionPool, month: uuid.UUID) -> None:
    end = START + timedelta(seconds=SECONDS)
    for source in ("raw", "1m", "1h", "auto"):
        t0 = time.perf_counter()
        h = await history(pool, month, "heart_rate", START, end, max_points=1000, source=source)  # type: ignore[arg-type]
        ms = (time.perf_counter() - t0) * 1000
        assert (h.method, len(h.points)) == ("minmax+lttb", 1000)
        assert h.source == ("1m" if source == "auto" else source)
        assert h.points[0].t >= START
        assert h.points[-1].t < end
        assert max(p.value for p in h.points) == 190.0  # the spike survives downsampling
        print(f"history {source}: 2.6M rows -> 1000 points in {ms:.0f} ms")

    buckets = await history(pool, month, "heart_rate", START, end, bucket=timedelta(days=1))
    assert len(buckets.buckets) == 30
    assert sum(b.count for b in buckets.buckets) == SECONDS

    df = await daily_summary(pool, month, "heart_rate", START, end, target=(50, 100))
    assert len(df) == 30
    assert int(df["count"].sum()) == SECONDS
