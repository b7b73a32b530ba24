"""Storage in both flavours: idempotent batch writes, latest readings, history, daily summary, CSV, retention."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from teleconsult.ingest.payload import Decoded, StaticVocabulary, copy_rows, decode_batch
from teleconsult.ingest.writer import DeadLetter, prepare_connection, write_batch
from teleconsult.security import consent
from teleconsult.security.models import ConsentPurpose
from teleconsult.store.enrolment import DeviceSpec, enrol, enrolment_map
from teleconsult.store.history import daily_summary, readings_csv, summary_csv
from teleconsult.store.readings import history, latest_for_patient, readings_between
from teleconsult.store.retention import RetentionPolicy, RetentionRule, apply_retention

VOCAB = StaticVocabulary({"heart_rate": ["/min"], "spo2": ["%"], "rr_interval": ["ms"]})
DAY = datetime(2026, 11, 1, tzinfo=UTC)


def payload(gw: str, rows: list[tuple[str, datetime, float]], address: str = "AA:01") -> tuple[bytes, list[str]]:
    readings = [
        {
            "id": str(uuid.uuid4()),
            "device": {"address": address},
            "metric": metric,
            "value": value,
            "unit": {"heart_rate": "/min", "spo2": "%", "rr_interval": "ms"}[metric],
            "measured_at": t.isoformat(),
            "received_at": t.isoformat(),
            "group": None,
            "flags": {"src": "test"},
        }
        for metric, t, value in rows
    ]
    doc = {"v": 1, "gateway_id": gw, "sent_at": datetime.now(UTC).isoformat(), "readings": readings}
    return json.dumps(doc).encode(), [r["id"] for r in readings]


async def store(pool: AsyncConnectionPool, gw: str, body: bytes) -> tuple[int, int]:
    d = decode_batch(f"tbib/v1/gw/{gw}/readings", body, vocab=VOCAB, now=datetime.now(UTC))
    assert isinstance(d, Decoded)
    assert d.rejects == []
    async with await psycopg.AsyncConnection.connect(pool.conninfo, autocommit=True) as conn:
        latest: dict = {}
        lines, rejects = copy_rows(d, await enrolment_map(conn), latest)
        assert rejects == []
        await prepare_connection(conn)
        # direct COPY path with the caller's latest rows; falls back to staging + ON CONFLICT on a duplicate
        r = await write_batch(conn, lines, [], list(latest.values()))
    return r.inserted, r.duplicate


@pytest.fixture
async def patient(pool: AsyncConnectionPool) -> tuple[uuid.UUID, str]:
    gw = f"gw-{uuid.uuid4().hex[:8]}"
    e = await enrol(pool, display_name="Test", gateway_id=gw, devices=[DeviceSpec("AA:01", model="HRM", kind="hr")])
    async with pool.connection() as conn:  # no decision on file is no consent (issue 19)
        await consent.record(
            conn, patient_id=e.patient_id, purpose=ConsentPurpose.REMOTE_MONITORING, granted=True, recorded_by=None
        )
    return e.patient_id, gw


async def test_enrolment_map_binds_device_to_patient(pool: AsyncConnectionPool, patient) -> None:
    pid, gw = patient
    async with pool.connection() as conn:
        m = await enrolment_map(conn)
    assert m[(gw, "AA:01")].patient_id == pid
    again = await enrol(pool, display_name="Test", gateway_id=gw, devices=[DeviceSpec("AA:01")], patient_id=pid)
    assert again.devices["AA:01"] == m[(gw, "AA:01")].device_id  # re-enrolment keeps the device id


async def test_same_batch_twice_is_stored_once(pool: AsyncConnectionPool, patient) -> None:
    pid, gw = patient
    body, ids = payload(gw, [("heart_rate", DAY + timedelta(seconds=i), 60 + i) for i in range(50)])
    assert await store(pool, gw, body) == (50, 0)
    assert await store(pool, gw, body) == (0, 50)
    rows = await readings_between(pool, pid, "heart_rate", DAY, DAY + timedelta(days=1))
    assert sorted(str(r.reading_id) for r in rows) == sorted(ids)
    assert rows[0].flags == {"src": "test"}


async def test_latest_is_max_measured_at(pool: AsyncConnectionPool, patient) -> None:
    pid, gw = patient
    await store(
        pool, gw, payload(gw, [("spo2", DAY + timedelta(hours=2), 97), ("spo2", DAY + timedelta(hours=1), 95)])[0]
    )
    await store(pool, gw, payload(gw, [("spo2", DAY, 80)])[0])  # older, received last
    latest = await latest_for_patient(pool, pid)
    assert latest["spo2"].value == 97
    assert latest["spo2"].measured_at == DAY + timedelta(hours=2)


async def test_dead_letters_are_written_in_the_batch(pool: AsyncConnectionPool) -> None:
    async with await psycopg.AsyncConnection.connect(pool.conninfo, autocommit=True) as conn:
        await prepare_connection(conn)
        await write_batch(conn, [], [DeadLetter("tbib/v1/gw/x/readings", "x", "invalid JSON", b"{", 1)])
        cur = await conn.execute("select reason, payload from dead_letters where gateway_id = 'x'")
        assert await cur.fetchall() == [("invalid JSON", b"{")]


async def test_history_buckets_raw_and_downsampled(pool: AsyncConnectionPool, patient) -> None:
    pid, gw = patient
    start = DAY + timedelta(days=3)
    rows = [("heart_rate", start + timedelta(seconds=10 * i), 60 + (i % 30)) for i in range(3600)]  # 10 h
    for k in range(0, len(rows), 1000):
        await store(pool, gw, payload(gw, rows[k : k + 1000])[0])
    end = start + timedelta(hours=10)
    h = await history(pool, pid, "heart_rate", start, end, bucket=timedelta(hours=1))
    assert [b.start for b in h.buckets] == [start + timedelta(hours=i) for i in range(10)]
    assert all(b.count == 360 and b.min == 60 and b.max == 89 for b in h.buckets)
    raw = await history(pool, pid, "heart_rate", start, end)
    assert len(raw.points) == 3600
    assert raw.points[0].t == start
    small = await history(pool, pid, "heart_rate", start, end, max_points=1000)  # <= 4000 rows: LTTB on raw rows
    assert (small.method, len(small.points)) == ("lttb", 1000)
    big = await history(pool, pid, "heart_rate", start, end, max_points=200)  # min/max per bucket, then LTTB
    assert (big.method, len(big.points)) == ("minmax+lttb", 200)
    assert max(p.value for p in big.points) == 89
    assert min(p.value for p in big.points) == 60
    assert big.points == sorted(big.points, key=lambda p: p.t)


async def test_daily_summary_and_csv(pool: AsyncConnectionPool, patient) -> None:
    pid, gw = patient
    start = DAY + timedelta(days=10)
    rows = [("spo2", start + timedelta(hours=h), v) for h, v in [(1, 90), (2, 95), (3, 98), (25, 99)]]
    await store(pool, gw, payload(gw, rows)[0])
    df = await daily_summary(pool, pid, "spo2", start, start + timedelta(days=2), target=(94, 100))
    assert df["count"].tolist() == [3, 1]
    assert df["min"].tolist() == [90, 99]
    assert df["max"].tolist() == [98, 99]
    assert df["mean"].iloc[0] == pytest.approx(94.333, abs=1e-3)
    assert df["in_range_fraction"].tolist() == pytest.approx([2 / 3, 1.0])
    assert summary_csv(df).splitlines()[0] == "day,count,min,mean,max,in_range_fraction"
    text = await readings_csv(pool, pid, start, start + timedelta(days=2), metrics=["spo2"])
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert [float(r["value"]) for r in parsed] == [90, 95, 98, 99]
    assert parsed[0]["measured_at"] == (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.000000Z")


async def test_retention_per_metric_family(pool: AsyncConnectionPool, patient, store_dsn: str) -> None:
    pid, gw = patient
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=200), now - timedelta(days=5)
    await store(
        pool,
        gw,
        payload(
            gw,
            [
                ("rr_interval", old, 800),
                ("rr_interval", recent, 810),
                ("heart_rate", old, 70),
                ("heart_rate", recent, 71),
            ],
        )[0],
    )
    policy = RetentionPolicy(
        rules=(RetentionRule("beat_to_beat", frozenset({"rr_interval"}), timedelta(days=30)),),
        default_keep=timedelta(days=365),
    )
    report = await apply_retention(pool, policy, now)
    assert report.deleted_rows["beat_to_beat"] >= 1
    with psycopg.connect(store_dsn) as conn:
        left = conn.execute(
            "select metric, measured_at from readings where patient_id = %s and measured_at >= %s order by 1, 2",
            (pid, old),
        ).fetchall()
    assert left == [("heart_rate", old), ("heart_rate", recent), ("rr_interval", recent)]
    report = await apply_retention(pool, RetentionPolicy(default_keep=timedelta(days=100)), now)
    with psycopg.connect(store_dsn) as conn:
        n = conn.execute(
            "select count(*) from readings where measured_at < %s", (now - timedelta(days=100),)
        ).fetchone()
    assert n == (0,)


async def test_staging_path_without_caller_latest(pool: AsyncConnectionPool, patient) -> None:
    """``latest=None`` (the per-message poison-isolation path): staging + ON CONFLICT, latest derived in SQL."""
    pid, gw = patient
    t = DAY + timedelta(days=20)
    body, _ = payload(gw, [("spo2", t, 91), ("spo2", t + timedelta(minutes=1), 93)])
    d = decode_batch(f"tbib/v1/gw/{gw}/readings", body, vocab=VOCAB, now=datetime.now(UTC))
    assert isinstance(d, Decoded)
    async with await psycopg.AsyncConnection.connect(pool.conninfo, autocommit=True) as conn:
        lines, _ = copy_rows(d, await enrolment_map(conn))
        await prepare_connection(conn)
        first = await write_batch(conn, lines, [])
        again = await write_batch(conn, lines, [])
    assert (first.inserted, first.duplicate, again.inserted, again.duplicate) == (2, 0, 0, 2)
    latest = await latest_for_patient(pool, pid)
    assert latest["spo2"].value == 93
