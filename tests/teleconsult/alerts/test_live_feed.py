"""The dashboard feed's fan-out (``teleconsult.api.live``), driven with fake websockets (no timing): a stalled socket
delays nobody else, alerts reach exactly their care team in order, vitals coalesce, and a burst of readings wakes the
dashboards in chunks so that an alert notification is read in between."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from teleconsult.api import live
from teleconsult.api.live import LiveHub, Subscriber


class FakeSocket:
    """Collects text frames; ``stalled`` never completes a send (a client that stopped reading)."""

    def __init__(self, changed: asyncio.Event, *, stalled: bool = False) -> None:
        self.frames: list[dict[str, Any]] = []
        self.stalled = stalled
        self.changed = changed

    async def send_text(self, text: str) -> None:
        if self.stalled:
            await asyncio.Event().wait()  # blocks forever
        self.frames.append(json.loads(text))
        self.changed.set()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        return None


def alert_frame(event_id: int, patient: uuid.UUID) -> str:
    return json.dumps({"type": "alert", "id": event_id, "event": "raised", "alert": {"patient_id": str(patient)}})


async def wait_for(changed: asyncio.Event, predicate: Any) -> None:
    while not predicate():
        changed.clear()
        await changed.wait()


def hub() -> LiveHub:
    return LiveHub("postgresql://unused", None, interval_s=0.01)  # type: ignore[arg-type]  # no database needed


async def test_stalled_socket_does_not_delay_the_others_and_alerts_follow_the_care_team() -> None:
    h = hub()
    p, q = uuid.uuid4(), uuid.uuid4()
    changed = asyncio.Event()
    stalled_ws, fast_ws, other_ws = FakeSocket(changed, stalled=True), FakeSocket(changed), FakeSocket(changed)
    subs = [Subscriber({p}), Subscriber({p}), Subscriber({q})]
    for s in subs:
        h.add(s)
    tasks = [
        asyncio.create_task(live._serve(ws, h, s, 0))  # type: ignore[arg-type]
        for ws, s in zip((stalled_ws, fast_ws, other_ws), subs, strict=True)
    ]
    try:
        for i in range(1, 201):
            h._on_alert_frame(alert_frame(i, p if i % 2 else q))
            await asyncio.sleep(0)
        await wait_for(changed, lambda: len(fast_ws.frames) == 100 and len(other_ws.frames) == 100)
        assert [f["id"] for f in fast_ws.frames] == list(range(1, 201, 2))  # every alert of p, in order
        assert [f["id"] for f in other_ws.frames] == list(range(2, 201, 2))  # q's only
        assert stalled_ws.frames == []
        held = [i for i, _ in subs[0].alerts]  # still queued for the stalled one, in order, behind its stuck send
        assert held
        assert held == list(range(1, 201, 2))[-len(held) :]
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_vitals_coalesce_and_wake_in_chunks() -> None:
    h = hub()
    waker = asyncio.create_task(h._wake_vitals())
    p = uuid.uuid4()
    subs = [Subscriber({p}) for _ in range(3 * live.VITALS_WAKE_CHUNK)]
    for s in subs:
        h.add(s)
    try:
        for v in (70, 71, 72):
            h._on_readings(json.dumps([[str(p), "heart_rate", v, "/min", "2026-11-29T10:00:00+00:00", None]]))
        assert all(list(s.vitals.values()) == [[str(p), "heart_rate", 72, "/min", "2026-11-29T10:00:00+00:00"]]
                   for s in subs)  # fmt: skip
        woken: list[int] = []
        while len(woken) < 4:
            await asyncio.sleep(0)
            woken.append(sum(s.wake.is_set() for s in subs))
        assert woken[0] <= live.VITALS_WAKE_CHUNK  # not all at once: the loop turns in between
        assert woken[-1] == len(subs)
    finally:
        waker.cancel()
        await asyncio.gather(waker, return_exceptions=True)


async def test_alert_overflow_is_a_resync_not_a_silent_drop() -> None:
    h = hub()
    p = uuid.uuid4()
    sub = Subscriber({p})
    h.add(sub)
    for i in range(1, live.MAX_PENDING_ALERTS + 2):
        h._on_alert_frame(alert_frame(i, p))
    assert len(sub.alerts) == live.MAX_PENDING_ALERTS
    assert sub.resync == "too many pending alert events"  # the client reloads and replays from its last id
    h.remove(sub)
    h._on_alert_frame(alert_frame(live.MAX_PENDING_ALERTS + 5, p))
    assert len(sub.alerts) == live.MAX_PENDING_ALERTS  # unsubscribed: nothing more
