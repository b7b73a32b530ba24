"""Every committed reading reaches the engine, in order, exactly once across a leader failover (real PostgreSQL, both
flavours): the reading feed of migration 0210 and the stored position."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg

from teleconsult.alerts import feed, store
from teleconsult.alerts.model import AlertEvent, AlertKey, EventKind, Severity
from teleconsult.alerts.service import EngineService

from .conftest import new_patient
from .helpers import ingest


def desaturation(patient: uuid.UUID) -> list[tuple[uuid.UUID, str, float, str, datetime]]:
    """One batch (one transaction): SpO2 97, 85, 97 one second apart, and a heart rate."""
    t0 = datetime.now(UTC) - timedelta(seconds=10)
    return [
        (patient, "heart_rate", 70.0, "/min", t0),
        (patient, "spo2", 97.0, "%", t0),
        (patient, "spo2", 85.0, "%", t0 + timedelta(seconds=1)),
        (patient, "spo2", 97.0, "%", t0 + timedelta(seconds=2)),
    ]


def events_of(dsn: str, patient: uuid.UUID) -> list[tuple[str, str]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "select type, payload->>'rule' from alert_events where patient_id = %s order by id", (patient,)
        ).fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


def position(dsn: str) -> str | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("select snapshot::text from alert_engine_state").fetchone()
    return None if row is None else str(row[0])


@contextlib.asynccontextmanager
async def leader(dsn: str) -> AsyncIterator[EngineService]:
    """An engine service that leads (rebuilt, replay stored) until the block ends; leaving it is the leader's death:
    its sessions close and PostgreSQL drops the lock."""
    service = EngineService(dsn, retry_s=0.1)
    task = asyncio.create_task(service.run())
    try:
        await asyncio.wait_for(service.leader.wait(), 30)
        yield service
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(predicate: object, wait: float = 30.0) -> None:
    """Poll a condition on the database (the engine works on its own schedule)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while not predicate():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


RAISED_CLEARED = [("raised", "spo2_falling"), ("cleared", "spo2_falling")]


async def test_every_reading_of_a_batch_reaches_the_engine(alerts_dsn: str) -> None:
    patient = new_patient(alerts_dsn)
    async with leader(alerts_dsn):
        await ingest(alerts_dsn, desaturation(patient))
        await until(lambda: len(events_of(alerts_dsn, patient)) >= 2)
    assert events_of(alerts_dsn, patient) == RAISED_CLEARED


async def test_readings_committed_without_a_leader_are_replayed_once(alerts_dsn: str) -> None:
    async with leader(alerts_dsn):
        pass  # a leader stored its position, then died
    patient = new_patient(alerts_dsn)
    await ingest(alerts_dsn, desaturation(patient))  # committed, not processed by anyone
    assert events_of(alerts_dsn, patient) == []
    async with leader(alerts_dsn):  # the new leader's rebuild replays since the position (stored before leader())
        assert events_of(alerts_dsn, patient) == RAISED_CLEARED
    async with leader(alerts_dsn):  # and a third one does not replay it again
        pass
    assert events_of(alerts_dsn, patient) == RAISED_CLEARED


async def test_replay_of_the_same_range_raises_nothing_twice(alerts_dsn: str) -> None:
    async with leader(alerts_dsn):
        pass
    before = position(alerts_dsn)
    assert before is not None
    patient = new_patient(alerts_dsn)
    await ingest(alerts_dsn, desaturation(patient))
    async with leader(alerts_dsn):
        pass
    assert events_of(alerts_dsn, patient) == RAISED_CLEARED
    with psycopg.connect(alerts_dsn) as conn:  # as if the range had not been processed
        conn.execute("update alert_engine_state set snapshot = %s::pg_snapshot", (before,))
    async with leader(alerts_dsn):
        assert position(alerts_dsn) != before
    assert events_of(alerts_dsn, patient) == RAISED_CLEARED


async def test_batches_committed_out_of_id_order_are_all_fetched(alerts_dsn: str) -> None:
    """A batch that took its log id first but committed last is not skipped (positions are snapshots)."""
    async with await psycopg.AsyncConnection.connect(alerts_dsn) as conn:
        start = await feed.begin_snapshot(conn)
        await conn.commit()
        async with await psycopg.AsyncConnection.connect(alerts_dsn) as slow:
            line = (
                f"{uuid.uuid4()}\t\\N\tspo2\t91.0\t%\t{datetime.now(UTC).isoformat()}\t\\N\t{uuid.uuid4()}\t\\N\t\\N\n"
            )
            await slow.execute("insert into reading_log (data) values (%s)", (line,))  # lower id, still open
            await conn.execute("insert into reading_log (data) values (%s)", (line.replace("91.0", "92.0"),))
            await conn.commit()
            first = await feed.fetch_since(conn, start)
            assert [r.value for r in first.readings] == [92.0]
            await slow.commit()
        second = await feed.fetch_since(conn, first.position)
        assert [r.value for r in second.readings] == [91.0]
        assert (await feed.fetch_since(conn, second.position)).readings == []


async def test_raise_of_an_occurrence_already_stored_is_a_no_op(alerts_dsn: str) -> None:
    patient = new_patient(alerts_dsn)
    at = datetime.now(UTC)
    raise_ = AlertEvent(
        EventKind.RAISED,
        AlertKey(str(patient), "spo2"),
        Severity.HIGH,
        at,
        {"measured_at": "2026-12-07T10:00:00+00:00"},
    )
    clear = AlertEvent(EventKind.CLEARED, AlertKey(str(patient), "spo2"), Severity.HIGH, at, {})
    async with await psycopg.AsyncConnection.connect(alerts_dsn) as conn:
        assert len(await store.record_engine_events(conn, [raise_, clear])) == 2
        assert await store.record_engine_events(conn, [raise_, clear]) == []
    assert events_of(alerts_dsn, patient) == [("raised", "spo2"), ("cleared", "spo2")]
