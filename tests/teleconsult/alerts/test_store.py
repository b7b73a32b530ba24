"""Alert store against real PostgreSQL (both flavours): lifecycle, dedup, event ordering, notify, restore."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from teleconsult.alerts import store
from teleconsult.alerts.errors import AlertNotFoundError, AlertStateError
from teleconsult.alerts.model import AlertEvent, AlertKey, EventKind, Severity
from tests.teleconsult.alerts.conftest import new_clinician, new_patient

T0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


def ev(kind: EventKind, patient: object, rule: str, sev: Severity, t: float, **details: object) -> AlertEvent:
    return AlertEvent(kind, AlertKey(str(patient), rule), sev, T0 + timedelta(seconds=t), details)


async def test_lifecycle_and_events(alerts_dsn: str) -> None:
    patient = new_patient(alerts_dsn)
    first = new_clinician(alerts_dsn, [patient])
    second = new_clinician(alerts_dsn, [patient])
    async with await psycopg.AsyncConnection.connect(alerts_dsn) as conn:
        start = await store.last_event_id(conn)
        raised = await store.record_engine_events(
            conn, [ev(EventKind.RAISED, patient, "spo2", Severity.MEDIUM, 0, v=91)]
        )
        assert len(raised) == 1
        alert = raised[0].payload
        assert alert["state"] == "open"
        assert alert["severity"] == "medium"
        assert alert["details"] == {"v": 91}
        # a second "raised" for the same key does not create a second open alert (dedup in the schema too)
        again = await store.record_engine_events(conn, [ev(EventKind.RAISED, patient, "spo2", Severity.HIGH, 1)])
        assert again[0].alert_id == raised[0].alert_id
        upd = await store.record_engine_events(conn, [ev(EventKind.UPDATED, patient, "spo2", Severity.HIGH, 2)])
        assert upd[0].payload["severity"] == "high"
        esc = await store.record_engine_events(conn, [ev(EventKind.ESCALATED, patient, "spo2", Severity.HIGH, 300)])
        assert esc[0].payload["escalated_to"] == str(second.id)  # the second clinician of the care team
        acked = await store.acknowledge(conn, alert["id"], user_id=first.id, note="called the patient", now=T0)
        assert acked.payload["state"] == "acknowledged"
        assert acked.payload["acked_by"] == str(first.id)
        assert acked.payload["notes"] == "called the patient"
        with pytest.raises(AlertStateError):
            await store.acknowledge(conn, alert["id"], user_id=first.id, note="", now=T0)
        assert [a.key.rule for a in await store.open_alerts(conn) if a.key.patient_id == str(patient)] == ["spo2"]
        restored = next(a for a in await store.open_alerts(conn) if a.key.patient_id == str(patient))
        assert restored.acknowledged
        assert restored.escalated
        assert restored.severity is Severity.HIGH
        done = await store.resolve(conn, alert["id"], user_id=first.id, note="better", now=T0)
        assert done.payload["state"] == "resolved"
        assert done.payload["resolution"] == "resolved"
        assert done.payload["notes"] == "called the patient\nbetter"
        with pytest.raises(AlertStateError):
            await store.resolve(conn, alert["id"], user_id=first.id, note="", now=T0)
        with pytest.raises(AlertNotFoundError):
            await store.acknowledge(conn, 10**9, user_id=first.id, note="", now=T0)
        # after resolution a new occurrence is a new alert
        new = await store.record_engine_events(conn, [ev(EventKind.RAISED, patient, "spo2", Severity.MEDIUM, 400)])
        assert new[0].alert_id != alert["id"]
        cleared = await store.record_engine_events(conn, [ev(EventKind.CLEARED, patient, "spo2", Severity.MEDIUM, 500)])
        assert cleared[0].payload["state"] == "resolved"
        assert cleared[0].payload["resolution"] == "cleared"
        assert cleared[0].payload["resolved_by"] is None
        # events of the patient in order, with increasing ids
        events = await store.events_since(conn, start, patient_ids=[patient])
        assert [e.type for e in events] == [
            "raised",
            "raised",
            "updated",
            "escalated",
            "acknowledged",
            "resolved",
            "raised",
            "cleared",
        ]
        ids = [e.id for e in events]
        assert ids == sorted(ids)
        assert len(set(ids)) == len(ids)
        assert events[0].message()["type"] == "alert"


async def test_event_on_no_open_alert_is_skipped(alerts_dsn: str) -> None:
    patient = new_patient(alerts_dsn)
    async with await psycopg.AsyncConnection.connect(alerts_dsn) as conn:
        assert await store.record_engine_events(conn, [ev(EventKind.CLEARED, patient, "x", Severity.LOW, 0)]) == []


async def test_notify_after_commit_and_concurrent_writers_keep_id_order(alerts_dsn: str) -> None:
    patients = [new_patient(alerts_dsn) for _ in range(8)]
    async with await psycopg.AsyncConnection.connect(alerts_dsn, autocommit=True) as listener:
        await listener.execute(f"listen {store.EVENTS_CHANNEL}")
        start = 0
        async with await psycopg.AsyncConnection.connect(alerts_dsn) as c0:
            start = await store.last_event_id(c0)
            await c0.commit()

        async def writer(p: object) -> None:
            async with await psycopg.AsyncConnection.connect(alerts_dsn) as conn:
                for i in range(5):
                    await store.record_engine_events(conn, [ev(EventKind.RAISED, p, f"r{i}", Severity.LOW, i)])

        await asyncio.gather(*(writer(p) for p in patients))
        seen: list[int] = []
        async for n in listener.notifies(timeout=5.0, stop_after=40):
            seen.append(int(json.loads(n.payload)["id"]))  # the frame itself (small events)
        assert seen == sorted(seen)  # notifications arrive in commit order == id order
        async with await psycopg.AsyncConnection.connect(alerts_dsn) as conn:
            events = await store.events_since(conn, start)
        assert len(events) == 40
        assert [e.id for e in events] == seen


async def test_readings_trigger_notifies_committed_newest_readings(alerts_dsn: str) -> None:
    patient = new_patient(alerts_dsn)
    async with await psycopg.AsyncConnection.connect(alerts_dsn, autocommit=True) as listener:
        await listener.execute(f"listen {store.READINGS_CHANNEL}")
        async with await psycopg.AsyncConnection.connect(alerts_dsn) as conn:
            await conn.execute(  # one statement of 100 rows, as ingest writes a batch
                "insert into latest_readings (patient_id, metric, value, unit, measured_at, reading_id)"
                " select %s, 'm' || i, i, '1', %s, gen_random_uuid() from generate_series(0, 99) i",
                (patient, T0),
            )
            await conn.commit()
            await conn.execute(
                "insert into latest_readings (patient_id, metric, value, unit, measured_at, reading_id)"
                " select %s, 'spo2', v, '%%', %s, gen_random_uuid() from generate_series(1, 1) v"
                " on conflict (patient_id, metric) do update set value = excluded.value",
                (patient, T0),
            )
            await conn.commit()
        got: list[list[object]] = []
        chunks = 0
        async for n in listener.notifies(timeout=5.0, stop_after=4):  # 40 + 40 + 20 rows, then the upsert
            assert len(n.payload) < 8000
            got += json.loads(n.payload)
            chunks += 1
    assert chunks == 4
    assert {g[1] for g in got} == {f"m{i}" for i in range(100)} | {"spo2"}
    assert got[0][0] == str(patient)


async def test_profiles(alerts_dsn: str) -> None:
    patient = new_patient(alerts_dsn, gateway="gw-prof")
    async with await psycopg.AsyncConnection.connect(alerts_dsn) as conn:
        await store.set_profile(
            conn, patient, {"spo2_scale": 2, "heart_failure": True, "expected_intervals_s": {"body_weight": 86400}}
        )
        profile = next(p for p in await store.profiles(conn) if p.patient_id == str(patient))
    assert profile.spo2_scale == 2
    assert profile.heart_failure
    assert profile.expected_intervals == {"body_weight": timedelta(days=1)}
    assert profile.gateway_id == "gw-prof"


async def test_large_event_is_announced_by_id(alerts_dsn: str) -> None:
    patient = new_patient(alerts_dsn)
    async with await psycopg.AsyncConnection.connect(alerts_dsn, autocommit=True) as listener:
        await listener.execute(f"listen {store.EVENTS_CHANNEL}")
        async with await psycopg.AsyncConnection.connect(alerts_dsn) as conn:
            big = ev(EventKind.RAISED, patient, "big", Severity.LOW, 0, blob="x" * 9000)
            small = ev(EventKind.RAISED, patient, "small", Severity.LOW, 0)
            stored = await store.record_engine_events(conn, [big, small])
        payloads = [n.payload async for n in listener.notifies(timeout=5.0, stop_after=2)]
    assert payloads[0] == str(stored[0].id)
    assert json.loads(payloads[1]) == json.loads(json.dumps(stored[1].message()))


async def test_engine_events_stored_twice_log_once(alerts_dsn: str) -> None:
    """A transaction retried after a failover, whose first attempt committed: every kind is a no-op the second time."""
    patient = new_patient(alerts_dsn)
    new_clinician(alerts_dsn, [patient])
    new_clinician(alerts_dsn, [patient])
    steps = [
        ev(EventKind.RAISED, patient, "hr", Severity.MEDIUM, 0, v=131),
        ev(EventKind.UPDATED, patient, "hr", Severity.HIGH, 5, v=142),
        ev(EventKind.ESCALATED, patient, "hr", Severity.HIGH, 300),
        ev(EventKind.CLEARED, patient, "hr", Severity.HIGH, 400, v=80),
    ]
    async with await psycopg.AsyncConnection.connect(alerts_dsn) as conn:
        start = await store.last_event_id(conn)
        for step in steps:
            first = await store.record_engine_events(conn, [step])
            assert len(first) == 1, step
            assert await store.record_engine_events(conn, [step]) == [], step  # the replay
        # a whole batch replayed at once (the retry of a multi-event transaction) stores nothing either
        assert await store.record_engine_events(conn, steps) == []
        events = await store.events_since(conn, start, patient_ids=[patient])
        assert [e.type for e in events] == ["raised", "updated", "escalated", "cleared"]
        assert len({e.alert_id for e in events}) == 1
        # a real change is still stored: a later update, a second escalation after it
        raised = await store.record_engine_events(conn, [ev(EventKind.RAISED, patient, "hr", Severity.LOW, 500)])
        assert len(raised) == 1
        assert len(await store.record_engine_events(conn, [ev(EventKind.ESCALATED, patient, "hr", Severity.LOW, 600)]))
        assert len(await store.record_engine_events(conn, [ev(EventKind.UPDATED, patient, "hr", Severity.HIGH, 601)]))
        assert len(await store.record_engine_events(conn, [ev(EventKind.ESCALATED, patient, "hr", Severity.HIGH, 900)]))


async def test_leader_stores_again_the_events_of_a_failed_transaction(alerts_dsn: str) -> None:
    """After a store transaction failed on a connection error (outcome unknown), the next leadership stores its events
    again: those that had committed are not logged twice, the others are stored; too old ones are dropped."""
    import time

    from teleconsult.alerts.service import UNSTORED_MAX_AGE_S, EngineService

    patient = new_patient(alerts_dsn)
    committed = ev(EventKind.RAISED, patient, "rr", Severity.MEDIUM, 0, v=25)
    lost = ev(EventKind.UPDATED, patient, "rr", Severity.HIGH, 3, v=29)
    service = EngineService(alerts_dsn)
    async with await psycopg.AsyncConnection.connect(alerts_dsn) as conn:
        start = await store.last_event_id(conn)
        await store.record_engine_events(conn, [committed])  # the first attempt's commit went through
        service._unstored = (time.monotonic(), [committed, lost])
        await service._retry_unstored(conn)
        assert service.retried_events == 1
        assert service._unstored is None
        types = [e.type for e in await store.events_since(conn, start, patient_ids=[patient])]
        assert types == ["raised", "updated"]
        service._unstored = (
            time.monotonic() - UNSTORED_MAX_AGE_S - 1,
            [ev(EventKind.CLEARED, patient, "rr", Severity.HIGH, 9)],
        )
        await service._retry_unstored(conn)
        assert service.retried_events == 1
        assert [a.key.rule for a in await store.open_alerts(conn) if a.key.patient_id == str(patient)] == ["rr"]
