"""Hub subscriber queues: bounded, a slow client is told to resync instead of holding the others back."""

from __future__ import annotations

import uuid

from teleconsult.alerts.hub import Hub, Subscriber


def test_slow_subscriber_gets_one_resync_and_nothing_more() -> None:
    sub = Subscriber({uuid.uuid4()}, maxsize=3)
    for i in range(3):
        sub.offer({"type": "alert", "id": i})
    assert sub.queue.qsize() == 3
    sub.offer({"type": "alert", "id": 3})  # the fourth does not fit: resync
    assert sub.overflowed
    assert sub.queue.qsize() == 1
    assert sub.queue.get_nowait() == {"type": "resync", "reason": "client too slow"}
    sub.offer({"type": "alert", "id": 4})
    assert sub.queue.empty()


def test_fast_subscriber_unaffected_by_slow_one() -> None:
    p = uuid.uuid4()
    hub = Hub("postgresql://unused")
    slow = hub.subscribe_alerts([p], maxsize=2)
    fast = hub.subscribe_alerts([p], maxsize=100)
    for i in range(10):
        for sub in (slow, fast):
            sub.offer({"type": "alert", "id": i})
        fast.queue.get_nowait()  # the fast client keeps up
    assert slow.overflowed
    assert not fast.overflowed
    assert hub.subscribers == 2
    hub.unsubscribe(slow)
    hub.unsubscribe(slow)
    assert hub.subscribers == 1


def test_vitals_subscription_bookkeeping() -> None:
    p = uuid.uuid4()
    hub = Hub("postgresql://unused")
    a = hub.subscribe_vitals(p)
    b = hub.subscribe_vitals(p)
    payload = f'[["{p}", "spo2", 97.0, "%", "2026-11-29T10:00:00+00:00", null]]'
    hub._dispatch_readings(payload)
    assert a.queue.get_nowait()["value"] == 97.0
    assert b.queue.get_nowait()["metric"] == "spo2"
    hub._dispatch_readings("not json")  # garbage is ignored
    hub.unsubscribe(a)
    hub.unsubscribe(b)
    assert hub.subscribers == 0
