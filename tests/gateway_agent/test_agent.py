"""End to end: simulated devices -> gateway (BLE manager, outbox, publisher) -> real Mosquitto -> a test subscriber."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway_agent import cli
from gateway_agent.agent import Gateway
from gateway_agent.config import load_config
from gateway_agent.outbox import Outbox
from gateway_agent.publisher import Backoff, LinkState
from gateway_agent.simulate import simulate
from tests.processes import Spawner

from .conftest import OwnBroker

REPO = Path(__file__).resolve().parents[2]


def make_gateway(
    tmp_path: Path, url: str, sim: Any, gw: str, keepalive_s: int = 30, *, receipts: bool = False, **batching: Any
) -> Gateway:
    """A gateway over ``sim``; PUBACK mode unless ``receipts`` (these tests have no ingest behind the broker)."""
    settings = load_config(
        None,
        overrides={
            "gateway_id": gw,
            "broker_url": url,
            "keepalive_s": keepalive_s,
            "status_file": str(tmp_path / "status.json"),
            "outbox": {"path": str(tmp_path / "outbox.sqlite3")},
            "batching": {"max_readings": 50, "max_delay_ms": 100, **batching},
            "receipts": {"enabled": receipts},
            "devices": [d.model_dump() for d in sim.devices],
        },
    )
    return Gateway(
        settings,
        scanner_kwargs=sim.scanner_kwargs,
        client_kwargs=sim.client_kwargs,
        clock=sim.clock,
        status_interval=0.2,
        spot_recheck_s=0.5,
    )


def record_appends(gateway: Gateway) -> dict[str, dict[str, Any]]:
    """id -> stored JSON object of every reading the gateway captured."""
    captured: dict[str, dict[str, Any]] = {}
    real = gateway.outbox.append

    def append(readings: Any, **kw: Any) -> list[str]:
        readings = list(readings)
        ids = real(readings, **kw)
        for rid, (_addr, obj) in zip(ids, readings, strict=True):
            captured[rid] = {"id": rid, **obj}
        return ids

    gateway.outbox.append = append  # type: ignore[method-assign]
    return captured


async def test_end_to_end_every_reading_arrives_as_encoded(tmp_path: Path, mqtt_url: str, mqtt_host_port, subscribe):
    gw = f"gw-e2e-{uuid.uuid4().hex[:8]}"
    sub = subscribe(*mqtt_host_port, f"tbib/v1/gw/{gw}/#")
    sim = simulate(
        1,
        kinds=["heart_rate", "blood_pressure", "glucose_meter", "pulse_oximeter"],
        speed=3,
        device_options={"blood_pressure": {"first_measurement": timedelta(0)}, "glucose_meter": {"history": 12}},
    )
    gateway = make_gateway(tmp_path, mqtt_url, sim, gw)
    captured = record_appends(gateway)
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop))
    await asyncio.sleep(3.0)
    stop.set()
    await task
    assert gateway.outbox._closed
    with Outbox(tmp_path / "outbox.sqlite3") as box:
        assert box.depth() == 0  # flushed at stop
    await asyncio.to_thread(sub.wait_for, lambda: len(sub.readings()) >= len(captured))
    received = sub.readings()
    assert len(received) == len(captured)  # no duplicates on a healthy link
    assert {r["id"]: r for r in received} == captured  # exactly as encoded at capture, ids stable
    metrics = {r["metric"] for r in received}
    assert {"heart_rate", "systolic_bp", "diastolic_bp", "glucose", "spo2"} <= metrics
    for r in received:
        assert r["measured_at"].endswith("Z")
        assert r["received_at"].endswith("Z")
        assert set(r) == {
            "id", "device", "metric", "value", "unit", "measured_at", "device_time", "received_at", "group", "flags",
        }  # fmt: skip
    batches = sub.payloads()
    assert all(b["v"] == 1 and b["gateway_id"] == gw for b in batches)
    events = [json.loads(p)["event"] for t, p, _ in sub.messages if t.endswith("/events")]
    assert "device_connected" in events
    assert "clock_offset" in events
    statuses = [p for t, p, _ in sub.messages if t.endswith("/status")]
    assert statuses[0] == b"online"
    assert statuses[-1] == b"offline"
    doc = json.loads((tmp_path / "status.json").read_text())
    assert doc["gateway_id"] == gw
    assert doc["running"] is False
    assert doc["outbox"]["depth"] == 0
    assert {d["kind"] for d in doc["devices"]} == {"heart_rate", "blood_pressure", "glucose_meter", "pulse_oximeter"}
    assert all(d["last_reading"] for d in doc["devices"])


def test_status_command_reads_the_status_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = tmp_path / "status.json"
    assert cli.main(["gateway", "status", "--status-file", str(status)]) == 1
    assert "does not exist" in capsys.readouterr().err
    doc = {
        "gateway_id": "gw-1",
        "pid": 1,
        "running": True,
        "link": {"state": "connected", "broker": "mqtt://x", "last_error": None},
        "outbox": {"depth": 3, "dropped": 0, "max_readings": 10},
        "devices": [
            {
                "address": "C0:FF:EE:00:00:01",
                "device_id": "d1",
                "kind": "heart_rate",
                "connected": True,
                "readings": 5,
                "decode_errors": 2,
                "last_reading": {"metric": "heart_rate", "value": 71.0, "unit": "/min", "measured_at": "t"},
                "last_error": "malformed 0x2A37 value 10",
            }
        ],
    }
    status.write_text(json.dumps(doc))
    assert cli.main(["gateway", "status", "--status-file", str(status)]) == 0
    out = capsys.readouterr().out
    assert "link    connected" in out
    assert "outbox  3 waiting" in out
    assert "heart_rate=71.0 /min" in out
    assert "decode errors 2" in out
    assert cli.main(["gateway", "status", "--status-file", str(status), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["stale"] is False
    old = time.time() - 60
    os.utime(status, (old, old))
    assert cli.main(["gateway", "status", "--status-file", str(status)]) == 1
    assert "STALE" in capsys.readouterr().out
    status.write_text(json.dumps({**doc, "running": False}))
    assert cli.main(["gateway", "status", "--status-file", str(status)]) == 1
    assert "STOPPED" in capsys.readouterr().out


def test_run_with_bad_config_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "gw.toml"
    bad.write_text('gateway_id = "gw-1"\nbroker_url = "http://x"\n')
    assert cli.main(["gateway", "run", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"tbib gateway run: error: {bad}:2: broker_url: must start with mqtt:// or mqtts://"]


@pytest.mark.slow
async def test_link_outage_gateway_keeps_capturing(tmp_path: Path, own_broker: OwnBroker, subscribe):
    """Own broker stopped 10 s while 3 simulated straps stream at 1 Hz, then restarted (same port, persistence).

    10 s rather than 30 s: it spans two keepalive periods (keepalive 5 s), several reconnect attempts with backoff and
    ~60 readings queued; a 30 s outage exercises the same paths and only adds wall-clock time to the suite."""
    gw = f"gw-out-{uuid.uuid4().hex[:8]}"
    sub = subscribe("127.0.0.1", own_broker.port, f"tbib/v1/gw/{gw}/readings")
    sim = simulate(3, kinds=["heart_rate"])
    gateway = make_gateway(tmp_path, own_broker.url, sim, gw, keepalive_s=5, max_readings=20, inflight_window=3)
    gateway.publisher.backoff = Backoff(initial=0.2, maximum=1.0)
    captured = record_appends(gateway)
    acked: set[str] = set()
    violations: list[str] = []
    real_ack = gateway.outbox.ack

    def ack(ids: Any) -> int:
        acked.update(ids)
        return real_ack(ids)

    gateway.outbox.ack = ack  # type: ignore[method-assign]
    real_publish = gateway.publisher._client.publish

    def checked_publish(topic: str, payload: bytes = b"", *a: Any, **kw: Any) -> Any:
        if topic.endswith("/readings"):
            violations.extend(r["id"] for r in json.loads(payload)["readings"] if r["id"] in acked)
        return real_publish(topic, payload, *a, **kw)

    gateway.publisher._client.publish = checked_publish  # type: ignore[method-assign,assignment]
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop))
    await asyncio.sleep(2.0)
    own_broker.stop()
    await asyncio.sleep(10.0)
    assert gateway.publisher.state is not LinkState.CONNECTED
    depth_during = gateway.outbox.depth()
    own_broker.start()
    await asyncio.sleep(3.0)
    stop.set()
    await task
    await asyncio.to_thread(sub.wait_for, lambda: {r["id"] for r in sub.readings()} >= set(captured), 30)
    got = sub.readings()
    assert depth_during > 40  # readings piled up while the broker was down
    assert {r["id"] for r in got} == set(captured)
    assert violations == []  # no id published again after its PUBACK
    order = list(captured)  # capture order
    for dev in {r["device"]["address"] for r in got}:
        first_seen: list[str] = []
        for r in got:
            if r["device"]["address"] == dev and r["id"] not in first_seen:
                first_seen.append(r["id"])
        assert first_seen == [i for i in order if captured[i]["device"]["address"] == dev]
    assert gateway.publisher.stats.connects >= 2


@pytest.mark.slow
def test_kill_9_mid_stream_then_restart_replays(
    tmp_path: Path, mqtt_url: str, mqtt_host_port, subscribe, spawn: Spawner
) -> None:
    gw = f"gw-kill-{uuid.uuid4().hex[:8]}"
    sub = subscribe(*mqtt_host_port, f"tbib/v1/gw/{gw}/readings")
    outbox = tmp_path / "outbox.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(REPO), "TBIB_GATEWAY_BATCHING__MAX_DELAY_MS": "700"}
    env["TBIB_GATEWAY_RECEIPTS__ENABLED"] = "false"  # PUBACK mode: no ingest behind the broker
    base = [sys.executable, "-m", "gateway_agent.cli", "gateway", "run", "--simulate", "3", "--sim-kinds", "heart_rate"]
    base += ["--broker", mqtt_url, "--gateway-id", gw, "--outbox", str(outbox), "--status-file", str(tmp_path / "s")]
    first = spawn(base, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(sub.readings()) < 20:
        time.sleep(0.05)
    time.sleep(1.3)  # mid-stream: some batches acknowledged, the newest readings still waiting
    first.send_signal(signal.SIGKILL)
    first.wait()
    with Outbox(outbox) as box:
        assert box.integrity_check() == "ok"
        pending = {e.id for e in box.peek_batch(1_000_000)}
    before = {r["id"] for r in sub.readings()}
    assert pending, "the kill should leave unacknowledged readings"
    second = subprocess.run([*base, "--seconds", "2"], env=env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    sub.wait_for(lambda: pending <= {r["id"] for r in sub.readings()}, 20)
    got = sub.readings()
    # nothing lost: every heart_rate second of the killed run is there (1 Hz per strap, no gap)
    first_run = [r for r in got if r["id"] in before | pending and r["metric"] == "heart_rate"]
    for dev in {r["device"]["address"] for r in first_run}:
        times = sorted(
            datetime.fromisoformat(r["measured_at"].replace("Z", "+00:00"))
            for r in first_run
            if r["device"]["address"] == dev
        )
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        assert max(gaps) < 1.5, gaps
    with Outbox(outbox) as box:
        assert box.depth() == 0
