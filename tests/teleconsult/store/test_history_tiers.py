"""History from raw rows, the 1-minute or the hourly rollup: tier choice, and the M4 guarantee on every tier (a single
spike and a single dip in 30 days survive in a 1 000-point chart)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from teleconsult.store.readings import choose_source, downsample, history
from teleconsult.store.rollups import rebuild

START = datetime(2026, 8, 3, tzinfo=UTC)
DAYS = 30
STEP = 20  # seconds: 129 600 readings
SPIKE = START + timedelta(days=11, hours=5, minutes=17, seconds=40)
DIP = START + timedelta(days=23, hours=19, seconds=20)


@pytest.fixture(scope="module")
def month(store_dsn: str) -> uuid.UUID:
    pid = uuid.uuid4()
    n = DAYS * 86_400 // STEP
    t = np.arange(n) * STEP
    values = np.round(72 + 6 * np.sin(2 * np.pi * t / 86_400) + np.random.default_rng(3).normal(0, 1.5, n), 1)
    values[int((SPIKE - START).total_seconds()) // STEP] = 190.0
    values[int((DIP - START).total_seconds()) // STEP] = 30.0
    with psycopg.connect(store_dsn, autocommit=True) as conn:
        with (
            conn.cursor() as cur,
            cur.copy("copy readings (patient_id, metric, value, unit, measured_at, reading_id) from stdin") as cp,
        ):
            for ti, v in zip(t.tolist(), values.tolist(), strict=True):
                cp.write_row((pid, "heart_rate", v, "/min", START + timedelta(seconds=ti), uuid.uuid4()))
        conn.execute("analyze readings")

    async def build() -> None:
        async with await psycopg.AsyncConnection.connect(store_dsn, autocommit=True) as aconn:
            await rebuild(aconn, patient_id=pid, chunk=timedelta(days=7))

    asyncio.run(build())
    return pid


def test_choose_source_by_range_and_points() -> None:
    assert choose_source(timedelta(hours=1), 600) == "raw"
    assert choose_source(timedelta(hours=24), 600) == "1m"
    assert choose_source(timedelta(days=7), 1000) == "1m"
    assert choose_source(timedelta(days=30), 1000) == "1m"
    assert choose_source(timedelta(days=90), 1000) == "1h"
    assert choose_source(timedelta(hours=24), 2000) == "raw"  # 43 s per point: finer than a minute


def test_downsample_keeps_extremes_that_lttb_alone_may_drop() -> None:
    t = np.arange(10_000, dtype=np.float64)
    v = np.sin(t / 50)
    v[5_001] = 1.3  # a small overshoot on a crest: LTTB's triangle rule does not have to pick it
    v[7_003] = -1.2
    tt, vv = downsample(t, v, 100)
    assert len(tt) == 100
    assert np.all(np.diff(tt) > 0)
    assert (vv.max(), vv.min()) == (1.3, -1.2)
    assert {5_001.0, 7_003.0} <= set(tt.tolist())


@pytest.mark.parametrize("source", ["raw", "1m", "1h"])
async def test_single_spike_and_dip_in_30_days_survive_on_every_tier(
    pool: AsyncConnectionPool, month: uuid.UUID, source: str
) -> None:
    end = START + timedelta(days=DAYS)
    h = await history(pool, month, "heart_rate", START, end, max_points=1000, source=source)  # type: ignore[arg-type]
    assert (h.method, h.source, len(h.points)) == ("minmax+lttb", source, 1000)
    values = [p.value for p in h.points]
    assert (max(values), min(values)) == (190.0, 30.0)
    times = [p.t for p in h.points]
    assert times == sorted(times)
    assert times[0] >= START
    assert times[-1] < end
    spike = h.points[values.index(190.0)].t
    if source == "raw":  # raw pre-buckets place a point within the bucket (width range / 4 000)
        assert abs(spike - SPIKE) <= timedelta(seconds=DAYS * 86_400 / 4000)
    else:  # a rollup keeps the time the extreme was measured
        assert spike == SPIKE
        assert h.points[values.index(30.0)].t == DIP


async def test_auto_picks_the_tier_and_agrees_with_raw(pool: AsyncConnectionPool, month: uuid.UUID) -> None:
    end = START + timedelta(days=DAYS)
    month_chart = await history(pool, month, "heart_rate", START, end, max_points=1000)
    quarter = await history(pool, month, "heart_rate", end - timedelta(days=90), end, max_points=1000)
    hour = await history(
        pool, month, "heart_rate", SPIKE - timedelta(minutes=30), SPIKE + timedelta(minutes=30), max_points=600
    )
    assert (month_chart.source, quarter.source, hour.source) == ("1m", "1h", "raw")
    assert hour.method == "lttb"  # 180 raw rows: no reduction needed
    assert max(p.value for p in quarter.points) == 190.0
    assert month_chart.bucket_s == 660.0  # 30 d / 4 000 = 648 s, rounded up to whole minutes


async def test_daily_buckets_from_the_hourly_rollup_equal_raw(pool: AsyncConnectionPool, month: uuid.UUID) -> None:
    end = START + timedelta(days=DAYS)
    rolled = await history(pool, month, "heart_rate", START, end, bucket=timedelta(days=1))
    raw = await history(pool, month, "heart_rate", START, end, bucket=timedelta(days=1), source="raw")
    assert (rolled.source, raw.source) == ("1h", "raw")
    assert len(rolled.buckets) == DAYS
    for a, b in zip(rolled.buckets, raw.buckets, strict=True):
        assert (a.start, a.min, a.max, a.count) == (b.start, b.min, b.max, b.count)
        assert a.avg == pytest.approx(b.avg)
    assert sum(b.count for b in rolled.buckets) == DAYS * 86_400 // STEP
    # unaligned bounds: raw rows (a rollup bucket would straddle the bound)
    odd = await history(pool, month, "heart_rate", START + timedelta(seconds=30), end, bucket=timedelta(hours=1))
    assert odd.source == "raw"
