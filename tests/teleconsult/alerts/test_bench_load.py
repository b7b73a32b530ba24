"""The alert benchmark's instruments: the background load is physiologically plausible and raises (almost) no alert
through the real engine, with every default rule on; the hub's delivery trace records what it should."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from teleconsult.alerts.engine import Engine
from teleconsult.alerts.model import Reading
from teleconsult.alerts.rules import EngineConfig
from teleconsult.alerts.trace import MAX_PENDING, DeliveryTrace
from teleconsult.bench.loadgen import METRICS, WAVE_PERIOD, Job, build_message, vital_wave

START = datetime(2026, 12, 6, 10, 0, tzinfo=UTC).timestamp()


def test_background_values_are_plausible_vitals() -> None:
    for gw in range(200):
        hr, spo2, pulse = vital_wave(gw)
        assert len(hr) == len(spo2) == len(pulse) == WAVE_PERIOD
        assert min(hr) >= 50
        assert max(hr) <= 95
        assert all(abs(h - p) <= 2 for h, p in zip(hr, pulse, strict=True))
        assert min(spo2) >= 95  # above the 92 % threshold
        assert max(spo2) <= 99  # never above 100 %
        assert max(spo2) - min(spo2) <= 2  # below the 4-point drop of spo2_falling
        assert vital_wave(gw) == (hr, spo2, pulse)  # deterministic


def test_background_messages_raise_no_alert_in_the_engine() -> None:
    """Ten simulated gateways, 6 000 readings each (10 minutes of device time at 10 readings/s), through the
    engine with its default rules (thresholds, NEWS2, spo2_falling): not one event. The old generator's SpO2
    cycled 97-103 and raised/cleared spo2_falling every cycle."""
    job = Job("127.0.0.1", 1883, [], tag=7, per_message=10, seconds=1.0, rate=None, start_epoch=START)
    engine = Engine(EngineConfig())
    events = 0
    seen = {m for m, _ in METRICS}
    for gw in range(10):
        for k in range(600):
            batch = json.loads(build_message(job, gw, f"gw-{gw}", f"AA:{gw:02d}", k * job.per_message))
            for r in batch["readings"]:
                assert r["metric"] in seen
                at = datetime.fromisoformat(r["measured_at"])
                engine.receive(Reading(f"p{gw}", r["metric"], float(r["value"]), r["unit"], at, "dev"), at)
            while engine.next_event() is not None:
                events += 1
    assert events == 0


def test_delivery_trace_records_dispatch_and_sends(tmp_path: Path) -> None:
    now = [100.0]
    trace = DeliveryTrace(tmp_path / "t.jsonl", settle_s=2.0, clock=lambda: now[0])
    trace.dispatched(7, offered=3, at=99.5)
    now[0] = 100.25
    trace.sent(7)
    now[0] = 100.5
    trace.sent(7)
    trace.sent(8)  # never dispatched: ignored
    trace.dispatched(9, offered=1)
    assert trace.write() == 0  # nothing 2 s old yet
    now[0] = 101.6
    assert trace.write() == 1  # event 7 (hub at 99.5) is due, event 9 (100.5) not yet
    assert trace.write(everything=True) == 1
    lines = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert lines[0] == {
        "id": 7,
        "hub_at": 99.5,
        "offered": 3,
        "sends": 2,
        "first_send_at": 100.25,
        "last_send_at": 100.5,
    }
    assert lines[1] == {"id": 9, "hub_at": 100.5, "offered": 1, "sends": 0, "first_send_at": None, "last_send_at": None}


def test_delivery_trace_is_bounded(tmp_path: Path) -> None:
    trace = DeliveryTrace(tmp_path / "t.jsonl", clock=lambda: 0.0)
    for i in range(MAX_PENDING + 5):
        trace.dispatched(i, offered=1)
    assert len(trace.due()) == 5  # the oldest, written early
    assert len(trace.due(everything=True)) == MAX_PENDING
