"""Rollups in both flavours: maintained by the ingest writer in the readings' transaction, idempotent, late readings,
concurrent writers, rebuild from raw rows, migration backfill."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from teleconsult.ingest.payload import Decoded, copy_rows, decode_batch
from teleconsult.ingest.writer import prepare_connection, write_batch
from teleconsult.security import consent
from teleconsult.security.models import ConsentPurpose
from teleconsult.store.enrolment import DeviceSpec, enrol, enrolment_map
from teleconsult.store.migrate import load_migrations, upgrade
from teleconsult.store.retention import RetentionPolicy, RetentionRule, apply_retention
from teleconsult.store.rollups import rebuild, rebuild_sync
from tests.teleconsult.store.test_queries import VOCAB

T0 = datetime(2026, 10, 5, 8, 0, tzinfo=UTC)
COLS = "bucket, min, min_at, max, max_at, sum, count, first_at, last_at"


def body(gw: str, rows: list[tuple[str, datetime, float, str]]) -> bytes:
    """A payload v1 message of heart-rate readings ``(id, measured_at, value, metric)``."""
    readings = [
        {
            "id": rid,
            "device": {"address": "AA:01"},
            "metric": metric,
            "value": value,
            "unit": {"heart_rate": "/min", "spo2": "%"}[metric],
            "measured_at": t.isoformat(),
            "received_at": None,
            "group": None,
            "flags": None,
        }
        for rid, t, value, metric in rows
    ]
    return json.dumps(
        {"v": 1, "gateway_id": gw, "sent_at": datetime.now(UTC).isoformat(), "readings": readings}
    ).encode()


def hr(
    t: datetime, value: float, rid: str | None = None, metric: str = "heart_rate"
) -> tuple[str, datetime, float, str]:
    return (rid or str(uuid.uuid4()), t, value, metric)


async def write(
    conn: psycopg.AsyncConnection, gw: str, rows: list[tuple[str, datetime, float, str]], **kw: Any
) -> tuple[int, int]:
    d = decode_batch(f"tbib/v1/gw/{gw}/readings", body(gw, rows), vocab=VOCAB, now=datetime.now(UTC))
    assert isinstance(d, Decoded)
    latest: dict = {}
    minutes: dict | None = {} if DELTA["mode"] == "worker" else None
    lines, rejects = copy_rows(d, await enrolment_map(conn), latest, minutes)
    assert rejects == []
    r = await write_batch(conn, lines, [], list(latest.values()), minutes=minutes, **kw)
    return r.inserted, r.duplicate


DELTA = {"mode": "worker"}


@pytest.fixture(autouse=True, params=["worker", "sql"])
def delta_mode(request: pytest.FixtureRequest) -> str:
    """Both ways of the fast path: the worker's per-minute aggregate (Python) or PostgreSQL aggregating a staged copy.
    The idempotent path (a duplicate in the batch) always aggregates the rows ``INSERT ... RETURNING`` gave back."""
    DELTA["mode"] = request.param
    return str(request.param)


@pytest.fixture
async def conn(store_dsn: str):
    async with await psycopg.AsyncConnection.connect(store_dsn, autocommit=True) as c:
        await prepare_connection(c)
        yield c


@pytest.fixture
async def patient(pool: AsyncConnectionPool) -> tuple[uuid.UUID, str]:
    gw = f"gw-{uuid.uuid4().hex[:8]}"
    e = await enrol(pool, display_name="Roll", gateway_id=gw, devices=[DeviceSpec("AA:01", model="HRM", kind="hr")])
    async with pool.connection() as conn:  # no decision on file is no consent (issue 19)
        await consent.record(
            conn, patient_id=e.patient_id, purpose=ConsentPurpose.REMOTE_MONITORING, granted=True, recorded_by=None
        )
    return e.patient_id, gw


async def rollup(conn: psycopg.AsyncConnection, table: str, pid: uuid.UUID, metric: str = "heart_rate") -> list[tuple]:
    cur = await conn.execute(
        f"select {COLS} from {table} where patient_id = %s and metric = %s order by bucket", (pid, metric)
    )
    return await cur.fetchall()


async def test_writer_fills_minute_and_hour_rollups_in_the_batch(conn, patient) -> None:
    pid, gw = patient
    s = timedelta(seconds=1)
    rows = [hr(T0 + 5 * s, 70), hr(T0 + 10 * s, 90), hr(T0 + 20 * s, 60), hr(T0 + 70 * s, 80), hr(T0 + 80 * s, 80)]
    assert await write(conn, gw, rows) == (5, 0)
    assert await rollup(conn, "readings_1m", pid) == [
        (T0, 60.0, T0 + 20 * s, 90.0, T0 + 10 * s, 220.0, 3, T0 + 5 * s, T0 + 20 * s),
        # equal maxima: the latest one; equal minima: the earliest one
        (T0 + 60 * s, 80.0, T0 + 70 * s, 80.0, T0 + 80 * s, 160.0, 2, T0 + 70 * s, T0 + 80 * s),
    ]
    assert await rollup(conn, "readings_1h", pid) == [
        (T0, 60.0, T0 + 20 * s, 90.0, T0 + 10 * s, 380.0, 5, T0 + 5 * s, T0 + 80 * s)
    ]


async def test_a_duplicate_reading_never_counts_twice(conn, patient) -> None:
    pid, gw = patient
    first = [hr(T0 + timedelta(seconds=i), 60 + i) for i in range(10)]
    assert await write(conn, gw, first) == (10, 0)
    assert await write(conn, gw, first) == (0, 10)  # a QoS 1 redelivery: idempotent path, nothing merged
    # a resend mixing 5 stored readings with 2 new ones (one a new maximum): only the new ones merge
    mixed = [*first[:5], hr(T0 + timedelta(seconds=30), 200), hr(T0 + timedelta(seconds=31), 61)]
    assert await write(conn, gw, mixed) == (2, 5)
    ((bucket, lo, lo_at, hi, hi_at, total, n, first_at, last_at),) = await rollup(conn, "readings_1m", pid)
    assert (bucket, first_at, last_at) == (T0, T0, T0 + timedelta(seconds=31))
    assert (n, total) == (12, sum(60 + i for i in range(10)) + 200 + 61)
    assert (lo, lo_at, hi, hi_at) == (60, T0, 200, T0 + timedelta(seconds=30))
    ((*_, hour_total, hour_n, _, _),) = await rollup(conn, "readings_1h", pid)
    assert (hour_n, hour_total) == (12, total)


async def test_a_late_backlog_reading_updates_its_old_bucket(conn, patient) -> None:
    pid, gw = patient
    old = T0 - timedelta(days=3)
    await write(conn, gw, [hr(old + timedelta(seconds=10), 70), hr(old + timedelta(seconds=50), 72)])
    await write(conn, gw, [hr(T0 + timedelta(seconds=i), 65) for i in range(5)])  # live readings in between
    # the outbox replays a reading measured three days ago, lower than anything in its minute
    assert await write(conn, gw, [hr(old + timedelta(seconds=30), 41), hr(T0 + timedelta(seconds=9), 66)]) == (2, 0)
    minutes = await rollup(conn, "readings_1m", pid)
    assert [m[0] for m in minutes] == [old, T0]
    assert minutes[0][1:7] == (41.0, old + timedelta(seconds=30), 72.0, old + timedelta(seconds=50), 183.0, 3)
    assert minutes[1][6] == 6
    hours = await rollup(conn, "readings_1h", pid)
    assert [(h[0], h[1], h[6]) for h in hours] == [(old, 41.0, 3), (T0, 65.0, 6)]


async def test_rollups_off_then_rebuild_from_raw_rows(conn, patient) -> None:
    pid, gw = patient
    rows = [hr(T0 + timedelta(seconds=7 * i), 50 + (i * 37) % 60) for i in range(1200)]  # 2h20 over 3 hours
    await write(conn, gw, rows[:600])
    live_1m = await rollup(conn, "readings_1m", pid)
    await write(conn, gw, rows[600:], rollups=False)
    assert await rollup(conn, "readings_1m", pid) == live_1m  # stale: the second half is not there
    await write(conn, gw, rows[300:900])  # half duplicates, merged only for the new ones
    report = await rebuild(conn, patient_id=pid, chunk=timedelta(hours=1))
    minutes, hours = await rollup(conn, "readings_1m", pid), await rollup(conn, "readings_1h", pid)
    assert report.chunks == 3
    assert (report.minute_rows, report.hour_rows) == (len(minutes), len(hours)) == (140, 3)
    assert sum(m[6] for m in minutes) == sum(h[6] for h in hours) == 1200
    assert min(m[1] for m in minutes) == min(r[2] for r in rows)
    assert minutes[: len(live_1m) - 1] == live_1m[:-1]  # rebuild and the writer agree row for row
    assert hours[0][0] == T0


async def test_rebuild_equals_what_the_writer_maintained(conn, patient) -> None:
    pid, gw = patient
    base = T0 + timedelta(days=1)
    stored: list[tuple[str, datetime, float, str]] = []
    for k in range(6):  # out-of-order batches with duplicates and late readings
        batch = [
            hr(base + timedelta(seconds=(k * 997 + 13 * i) % 7200), float((k * 31 + i * 7) % 50 + 50))
            for i in range(40)
        ]
        await write(conn, gw, batch + stored[-5:])
        stored += batch
    by_writer = {t: await rollup(conn, t, pid) for t in ("readings_1m", "readings_1h")}
    await rebuild(conn, patient_id=pid, start=base, end=base + timedelta(hours=2))
    for table, rows in by_writer.items():
        rebuilt = await rollup(conn, table, pid)
        assert [r[:5] + r[6:] for r in rebuilt] == [r[:5] + r[6:] for r in rows]
        assert [r[5] for r in rebuilt] == pytest.approx([r[5] for r in rows])


async def test_concurrent_writers_on_the_same_buckets(store_dsn: str, patient) -> None:
    """Three workers write interleaved batches into the same minutes (a gateway's messages spread over a shared
    subscription): no deadlock, every reading counted once."""
    pid, gw = patient
    base = T0 + timedelta(days=2)
    batches = [[hr(base + timedelta(seconds=(b * 10 + i) % 180), 60 + b) for i in range(10)] for b in range(30)]

    async def worker(part: list[list]) -> None:
        async with await psycopg.AsyncConnection.connect(store_dsn, autocommit=True) as c:
            await prepare_connection(c)
            for batch in part:
                await write(c, gw, batch)

    await asyncio.gather(*(worker(batches[k::3]) for k in range(3)))
    async with await psycopg.AsyncConnection.connect(store_dsn, autocommit=True) as c:
        minutes = await rollup(c, "readings_1m", pid)
    assert len(minutes) == 3
    assert sum(m[6] for m in minutes) == 300
    assert (min(m[1] for m in minutes), max(m[3] for m in minutes)) == (60, 89)


@pytest.mark.parametrize("flavour", ["timescaledb", "plain"])
def test_migration_backfills_rollups_of_existing_rows(make_database, flavour: str) -> None:
    dsn = make_database(flavour)
    core = next(m for m in load_migrations() if m.name == "0001_core.sql")
    pid = uuid.uuid4()
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("create table schema_migrations (name text primary key, flavour text not null,"
                  " applied_at timestamptz not null default now())")  # fmt: skip
        c.execute(core.sql_for(flavour))  # type: ignore[arg-type]
        c.execute("insert into schema_migrations (name, flavour) values (%s, %s)", (core.name, flavour))
        with (
            c.cursor() as cur,
            cur.copy("copy readings (patient_id, metric, value, unit, measured_at, reading_id) from stdin") as cp,
        ):
            for i in range(600):
                cp.write_row((pid, "spo2", 90 + i % 9, "%", T0 + timedelta(seconds=12 * i), uuid.uuid4()))
    assert "0002_rollups.sql" in upgrade(dsn)
    with psycopg.connect(dsn, autocommit=True) as c:
        m = c.execute("select count(*), sum(count), min(min), max(max) from readings_1m where patient_id = %s", (pid,))
        assert m.fetchone() == (120, 600, 90, 98)
        h = c.execute("select bucket, count, min_at from readings_1h where patient_id = %s order by bucket", (pid,))
        assert h.fetchall() == [(T0, 300, T0), (T0 + timedelta(hours=1), 300, T0 + timedelta(hours=1, seconds=72))]


async def test_retention_keeps_rollups_longer_than_raw_rows(pool: AsyncConnectionPool, conn, patient) -> None:
    pid, gw = patient
    now = datetime.now(UTC)
    ages = (5, 45, 100, 400)  # days
    await write(conn, gw, [hr(now - timedelta(days=d), 60 + d % 50) for d in ages])
    policy = RetentionPolicy(
        default_keep=timedelta(days=30),
        minute_rollup_keep=timedelta(days=90),
        hour_rollup_keep=timedelta(days=365),
    )
    report = await apply_retention(pool, policy, now)
    assert report.rollup_rows_deleted["readings_1m"] + report.rollup_chunks_dropped >= 1

    async def ages_in(table: str, column: str) -> list[int]:
        cur = await conn.execute(f"select {column} from {table} where patient_id = %s order by 1 desc", (pid,))
        return [round((now - t).total_seconds() / 86_400) for (t,) in await cur.fetchall()]

    assert await ages_in("readings", "measured_at") == [5]
    assert await ages_in("readings_1m", "min_at") == [5, 45]
    assert await ages_in("readings_1h", "min_at") == [5, 45, 100]
    # a rollup is never kept for less than the raw rows it summarizes
    assert RetentionPolicy(default_keep=timedelta(days=30), minute_rollup_keep=timedelta(days=7)).rollup_keeps() == (
        timedelta(days=30),
        None,
    )
    assert RetentionPolicy(rules=(RetentionRule("all", frozenset({"spo2"}), None),)).rollup_keeps() == (None, None)


def test_rebuild_sync_for_bulk_loads(store_dsn: str) -> None:
    pid = uuid.uuid4()
    with psycopg.connect(store_dsn, autocommit=True) as c:
        copy_sql = "copy readings (patient_id, metric, value, unit, measured_at, reading_id) from stdin"
        with c.cursor() as cur, cur.copy(copy_sql) as cp:
            for i in range(240):
                cp.write_row((pid, "spo2", 95 - i % 3, "%", T0 + timedelta(seconds=30 * i), uuid.uuid4()))
        report = rebuild_sync(c, start=T0, end=T0 + timedelta(hours=2), patient_id=pid)
        assert (report.chunks, report.minute_rows, report.hour_rows) == (1, 120, 2)
        row = c.execute("select sum(count), min(min), max(max) from readings_1h where patient_id = %s", (pid,))
        assert row.fetchone() == (240, 93, 95)
