"""Hub subscriber buffers: alerts are never dropped (in order, or one resync for a replay), vitals coalesce; one slow
client never holds the others back. Also the hub over a real PostgreSQL: alerts and vitals on separate connections."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import psycopg

from teleconsult.alerts import store
from teleconsult.alerts.hub import Hub, Subscriber
from teleconsult.alerts.model import AlertEvent, AlertKey, EventKind, Severity
from tests.teleconsult.alerts.conftest import new_patient
from tests.teleconsult.alerts.helpers import ingest

T0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


def drain(sub: Subscriber) -> list[dict[str, object]]:
    out = []
    while (frame := sub.get_nowait()) is not None:
        out.append(frame)
    return out


def reading(p: uuid.UUID, metric: str, value: float, seconds: int) -> dict[str, object]:
    at = (T0 + timedelta(seconds=seconds)).isoformat()
    return {"type": "reading", "patient_id": str(p), "metric": metric, "value": value, "measured_at": at}


def test_alerts_are_kept_in_order_up_to_the_bound() -> None:
    sub = Subscriber({uuid.uuid4()}, maxsize=1000)
    for i in range(1000):
        sub.offer({"type": "alert", "id": i})
    assert [f["id"] for f in drain(sub)] == list(range(1000))  # none dropped, none coalesced
    assert not sub.overflowed


def test_slow_alert_subscriber_gets_one_resync_and_nothing_more() -> None:
    sub = Subscriber({uuid.uuid4()}, maxsize=3)
    for i in range(3):
        sub.offer({"type": "alert", "id": i})
    assert len(sub) == 3
    sub.offer({"type": "alert", "id": 3})  # the fourth does not fit: resync (the client replays from the store)
    assert sub.overflowed
    assert drain(sub) == [{"type": "resync", "reason": "client too slow"}]
    sub.offer({"type": "alert", "id": 4})
    assert sub.get_nowait() is None


def test_fast_subscriber_unaffected_by_slow_one() -> None:
    p = uuid.uuid4()
    hub = Hub("postgresql://unused")
    slow = hub.subscribe_alerts([p], maxsize=2)
    fast = hub.subscribe_alerts([p], maxsize=100)
    got = []
    for i in range(10):
        hub._dispatch_frame({"type": "alert", "id": i + 1, "alert": {"patient_id": str(p)}})
        got += drain(fast)  # the fast client keeps up
    assert [json.loads(str(f["_text"]))["id"] for f in got] == list(range(1, 11))
    assert slow.overflowed
    assert not fast.overflowed
    assert hub.subscribers == 2
    hub.unsubscribe(slow)
    hub.unsubscribe(slow)
    assert hub.subscribers == 1


def test_vitals_coalesce_per_metric_newest_wins() -> None:
    p = uuid.uuid4()
    sub = Subscriber({p}, maxsize=10, coalesce=True)
    for s in range(5):
        sub.offer(reading(p, "spo2", 90.0 + s, s))
    sub.offer(reading(p, "heart_rate", 80.0, 2))
    sub.offer(reading(p, "spo2", 50.0, 1))  # late and older than the pending one: does not replace it
    frames = drain(sub)
    assert [(f["metric"], f["value"]) for f in frames] == [("heart_rate", 80.0), ("spo2", 94.0)]
    assert sub.dropped == 5
    assert not sub.overflowed


def test_vitals_drop_oldest_when_full_and_never_resync() -> None:
    sub = Subscriber({uuid.uuid4()}, maxsize=3, coalesce=True)
    patients = [uuid.uuid4() for _ in range(10)]
    for i, p in enumerate(patients):
        sub.offer(reading(p, "spo2", float(i), i))
    frames = drain(sub)
    assert [f["value"] for f in frames] == [7.0, 8.0, 9.0]  # the three newest arrivals
    assert sub.dropped == 7
    assert not sub.overflowed


def test_alerts_pass_before_pending_vitals_on_one_subscriber() -> None:
    p = uuid.uuid4()
    sub = Subscriber({p}, maxsize=10, coalesce=True)
    sub.offer(reading(p, "spo2", 95.0, 0))
    sub.offer({"type": "resync", "reason": "x"})
    assert sub.get_nowait() == {"type": "resync", "reason": "x"}


async def test_get_waits_and_times_out() -> None:
    sub = Subscriber({uuid.uuid4()})
    assert await sub.get(0.01) is None
    asyncio.get_running_loop().call_later(0.01, sub.offer, {"type": "alert", "id": 1})
    assert await sub.get(5.0) == {"type": "alert", "id": 1}


async def test_hub_over_postgres_alerts_and_vitals(alerts_dsn: str) -> None:
    """Every stored alert event reaches its subscribers in id order while a stalled vitals subscriber on the same
    patient is flooded (its buffer coalesces; nobody waits for it)."""
    p = new_patient(alerts_dsn, "Hub")
    hub = Hub(alerts_dsn)
    task = asyncio.create_task(hub.run())
    try:
        await asyncio.wait_for(hub.ready.wait(), 10)
        alerts = hub.subscribe_alerts([p], maxsize=1000)
        stalled = hub.subscribe_vitals(p, maxsize=5)  # never drained
        fresh = hub.subscribe_vitals(p, maxsize=5)
        now = datetime.now(UTC)
        for i in range(20):
            await ingest(alerts_dsn, [(p, "heart_rate", 60.0 + i, "/min", now + timedelta(seconds=i))])
        key = AlertKey(str(p), "spo2")
        events = [
            AlertEvent(EventKind.RAISED, key, Severity.HIGH, now, {"n": 1}),
            AlertEvent(EventKind.UPDATED, key, Severity.MEDIUM, now, {"n": 2}),
            AlertEvent(EventKind.CLEARED, key, Severity.MEDIUM, now, {"n": 3}),
        ]
        async with await psycopg.AsyncConnection.connect(alerts_dsn) as conn:
            stored = await store.record_engine_events(conn, events)
        got: list[dict[str, object]] = []
        while len(got) < 3:
            frame = await alerts.get(10.0)
            assert frame is not None
            got.append(json.loads(str(frame["_text"])))
        assert [f["id"] for f in got] == [e.id for e in stored]
        assert [f["event"] for f in got] == ["raised", "updated", "cleared"]
        values: list[float] = []
        while not values or values[-1] != 79.0:
            frame = await fresh.get(10.0)
            assert frame is not None
            values.append(float(frame["value"]))
        assert values == sorted(values)  # newest wins, in order
        assert len(stalled) == 1  # 20 readings of one metric coalesced into the newest
        assert not stalled.overflowed
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_alert_subscribers_follow_their_care_team() -> None:
    p, q = uuid.uuid4(), uuid.uuid4()
    hub = Hub("postgresql://unused")
    sub = hub.subscribe_alerts([p])
    hub._dispatch_frame({"type": "alert", "id": 1, "alert": {"patient_id": str(q)}})
    assert sub.get_nowait() is None  # not this doctor's patient
    hub.set_patients(sub, [q])  # the care team changed (refresh)
    hub._dispatch_frame({"type": "alert", "id": 2, "alert": {"patient_id": str(p)}})
    hub._dispatch_frame({"type": "alert", "id": 3, "alert": {"patient_id": str(q)}})
    assert [json.loads(str(f["_text"]))["id"] for f in drain(sub)] == [3]
    hub.unsubscribe(sub)
    assert hub.subscribers == 0
