"""Issue 15 item 2 on real PostgreSQL: every committed reading reaches the engine in time order (the reading feed of
migration 0210), and a new leader replays what was committed since the saved position -- once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg

from teleconsult.alerts import feed
from teleconsult.alerts.service import EngineService
from tests.teleconsult.alerts.conftest import new_patient
from tests.teleconsult.alerts.helpers import ingest

LEADER = (
    "import asyncio, sys\n"
    "from teleconsult.alerts.service import EngineService\n"
    "asyncio.run(EngineService(sys.argv[1], retry_s=0.2).run())\n"
)


def spo2(patient: uuid.UUID, values: list[float], start: datetime) -> list[tuple[uuid.UUID, str, float, str, datetime]]:
    return [(patient, "spo2", v, "%", start + timedelta(seconds=i)) for i, v in enumerate(values)]


def events(dsn: str, patient: uuid.UUID) -> list[tuple[str, str]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "select type, payload->>'rule' from alert_events where patient_id = %s order by id", (patient,)
        ).fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


async def wait_for(check: object, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_batches_committed_after_a_position_are_fetched_once(alerts_dsn: str) -> None:
    patient = new_patient(alerts_dsn)
    async with await psycopg.AsyncConnection.connect(alerts_dsn, autocommit=True) as conn:
        start = await feed.current_position(conn)
        now = datetime.now(UTC)
        await ingest(alerts_dsn, spo2(patient, [97, 96], now))
        await ingest(alerts_dsn, spo2(patient, [95], now + timedelta(seconds=5)))
        position, batches = await feed.fetch(conn, start)
        assert len(batches) == 2
        rows = await feed.readings_of(conn, batches)
        # ids come as text (the engine's keys), values and times decoded from the binary protocol
        assert [(r[1], r[2]) for r in rows if r[0] == str(patient)] == [("spo2", 97), ("spo2", 96), ("spo2", 95)]
        assert all(isinstance(r[0], str) and isinstance(r[4], datetime) and r[4].tzinfo for r in rows)
        assert (await feed.fetch(conn, position))[1] == []  # nothing new since
        await feed.save_position(conn, position)
        assert await feed.load_position(conn) == position
        assert await feed.prune(conn, position) >= 2


async def test_every_reading_of_a_batch_reaches_the_engine(alerts_dsn: str) -> None:
    """SpO2 97, 85, 97 in one ingest batch: spo2_falling is raised and cleared (it used to see one 97)."""
    service = EngineService(alerts_dsn, retry_s=0.2)
    task = asyncio.create_task(service.run())
    try:
        await asyncio.wait_for(service.leader.wait(), 20)
        patient = new_patient(alerts_dsn)
        await ingest(alerts_dsn, spo2(patient, [97, 85, 97], datetime.now(UTC)))
        await wait_for(lambda: len(events(alerts_dsn, patient)) >= 2)
        assert events(alerts_dsn, patient) == [("raised", "spo2_falling"), ("cleared", "spo2_falling")]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_killed_leader_the_next_one_replays_the_gap_exactly_once(alerts_tsdb_dsn: str) -> None:
    """kill -9 of the leader process mid-stream; a desaturation committed while no node leads is raised (and
    cleared) exactly once by the next leader, and a third leader replaying again stores nothing twice."""
    dsn = alerts_tsdb_dsn
    patient = new_patient(dsn)
    other = new_patient(dsn)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}

    def leader() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", LEADER, dsn], env=env)

    def position() -> str | None:
        with psycopg.connect(dsn) as conn:
            row = conn.execute("select snapshot::text from alert_feed_position").fetchone()
        return None if row is None else str(row[0])

    first = leader()
    try:
        t0 = datetime.now(UTC)
        before = position()
        with psycopg.connect(dsn) as conn:  # a position before the whole stream, for the third leader
            row = conn.execute("select pg_current_snapshot()::text").fetchone()
            assert row is not None
            oldest = str(row[0])
        for i in range(5):  # the stream: the leader processes it and saves its position
            await ingest(dsn, spo2(other, [97], t0 + timedelta(seconds=i)))
            await asyncio.sleep(0.3)
        await wait_for(lambda: position() not in (None, before))
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        # the gap: no leader; a brief desaturation between two normal readings, and the stream going on
        await ingest(dsn, spo2(patient, [97, 85, 97], t0 + timedelta(seconds=10)))
        await ingest(dsn, spo2(other, [96], t0 + timedelta(seconds=11)))
        assert events(dsn, patient) == []
        second = leader()
        try:
            await wait_for(lambda: len(events(dsn, patient)) >= 2, 30)
            await asyncio.sleep(1.5)  # past POSITION_EVERY_S
        finally:
            second.send_signal(signal.SIGKILL)
            second.wait(10)
        with psycopg.connect(dsn, autocommit=True) as conn:  # a third leader replays from an older position
            conn.execute("update alert_feed_position set snapshot = %s::pg_snapshot", (oldest,))
        third = leader()
        try:
            await wait_for(lambda: position() != oldest, 30)
            await asyncio.sleep(1.0)
        finally:
            third.send_signal(signal.SIGKILL)
            third.wait(10)
        assert events(dsn, patient) == [("raised", "spo2_falling"), ("cleared", "spo2_falling")]
    finally:
        with contextlib.suppress(ProcessLookupError):
            first.kill()
