"""BLE manager against the simulated bleak backend (devices.sim): the only fake is the radio."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devices.gatt import decode_characteristic
from devices.readings import to_readings
from devices.sim import GlucoseMeter
from devices.sim.backend import SimBleakClient
from gateway_agent import ble as ble_module
from gateway_agent.ble import BleManager
from gateway_agent.outbox import Outbox
from gateway_agent.simulate import Simulation, simulate


async def until(predicate: Any, seconds: float) -> None:
    async with asyncio.timeout(seconds):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def manager(sim: Simulation, box: Outbox, devices: Any = None, **kw: Any) -> BleManager:
    kw.setdefault("backoff_initial", 0.05)
    kw.setdefault("backoff_max", 0.2)
    return BleManager(
        sim.devices if devices is None else devices,
        box,
        clock=sim.clock,
        scanner_kwargs=sim.scanner_kwargs,
        client_kwargs=sim.client_kwargs,
        **kw,
    )


def stored(box: Outbox) -> list[dict[str, Any]]:
    return [json.loads(e.body) for e in box.peek_batch(1_000_000)]


async def test_heart_rate_stream_decoded_as_encoded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sim = simulate(1, kinds=["heart_rate"], speed=5)
    box = Outbox(tmp_path / "o.sqlite3")
    raw: list[tuple[int, bytes]] = []
    real_handle = ble_module._Session.handle

    def spy(self: Any, char16: int, data: bytes) -> None:
        raw.append((char16, data))
        real_handle(self, char16, data)

    monkeypatch.setattr(ble_module._Session, "handle", spy)
    mgr = manager(sim, box)
    task = asyncio.create_task(mgr.run())
    await until(lambda: mgr.status[sim.devices[0].address].readings >= 8, 15)
    mgr.stop()
    await task
    got = stored(box)
    expected = [
        r
        for c, d in raw
        for r in to_readings(decode_characteristic(c, d), received_at=datetime.now(UTC), clock_offset=timedelta(0))
    ]

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r["metric"], r["value"], r["unit"], r["device_time"])

    assert Counter(key(r) for r in got) == Counter(
        (e.metric, e.value, e.unit, None if e.device_time is None else e.device_time.isoformat()) for e in expected
    )
    assert {r["device"]["address"] for r in got} == {sim.devices[0].address}
    assert all(r["device"]["model"] == sim.devices[0].model for r in got)
    assert len({r["id"] for r in got}) == len(got)
    st = mgr.status[sim.devices[0].address]
    assert not st.connected
    assert st.decode_errors == 0
    box.close()


async def test_only_enrolled_devices_are_used(tmp_path: Path) -> None:
    sim = simulate(2, kinds=["heart_rate"], speed=5)
    enrolled, other = sim.devices
    box = Outbox(tmp_path / "o.sqlite3")
    mgr = manager(sim, box, devices=[enrolled])
    task = asyncio.create_task(mgr.run())
    await until(lambda: mgr.status[enrolled.address].readings >= 2, 10)
    assert sim.world.get(enrolled.address).connected
    assert not sim.world.get(other.address).connected
    mgr.stop()
    await task
    assert {r["device"]["address"] for r in stored(box)} == {enrolled.address}
    assert list(mgr.status) == [enrolled.address]
    box.close()


async def test_malformed_bytes_counted_and_session_continues(tmp_path: Path) -> None:
    sim = simulate(1, kinds=["heart_rate"], speed=5)
    address = sim.devices[0].address
    box = Outbox(tmp_path / "o.sqlite3")
    mgr = manager(sim, box)
    task = asyncio.create_task(mgr.run())
    st = mgr.status[address]
    await until(lambda: st.readings >= 2, 10)
    sim.world.corrupt_next_notifications(address, count=3, keep=1)
    await until(lambda: st.decode_errors == 3, 10)
    before = st.readings
    await until(lambda: st.readings > before + 2, 10)  # the same session goes on
    assert st.connects == 1
    assert st.connected
    assert st.last_error is not None
    assert "malformed 0x2A37" in st.last_error
    mgr.stop()
    await task
    box.close()


async def test_clock_offset_measured_and_applied(tmp_path: Path) -> None:
    sim = simulate(1, kinds=["blood_pressure"], device_options={"blood_pressure": {"first_measurement": timedelta(0)}})
    entry = sim.devices[0]
    cuff = sim.world.get(entry.address)
    box = Outbox(tmp_path / "o.sqlite3")
    mgr = manager(sim, box)
    task = asyncio.create_task(mgr.run())
    st = mgr.status[entry.address]
    await until(lambda: st.readings >= 3, 10)
    mgr.stop()
    await task
    assert st.clock_offset_s == pytest.approx(-cuff.clock_offset.total_seconds(), abs=0.05)
    assert box.clock_offset(entry.address) == st.clock_offset_s
    readings = stored(box)
    metrics = {r["metric"] for r in readings}
    assert {"systolic_bp", "diastolic_bp"} <= metrics
    assert len({r["group"] for r in readings}) == 1  # one measurement, one group
    r = readings[0]
    measured = datetime.fromisoformat(r["measured_at"].replace("Z", "+00:00"))
    device_time = datetime.fromisoformat(r["device_time"])
    assert abs((measured - sim.world.clock.start).total_seconds()) < 2  # true time of the measurement
    assert abs((device_time - measured.replace(tzinfo=None)) - cuff.clock_offset) < timedelta(seconds=1)
    box.close()


async def test_spot_check_device_disconnected_when_idle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sim = simulate(
        1,
        kinds=["thermometer"],
        device_options={"thermometer": {"first_measurement": timedelta(0)}},
        idle_disconnect_s=0.3,
    )
    entry = sim.devices[0]
    calls: list[str] = []
    for name in ("stop_notify", "disconnect"):
        real = getattr(SimBleakClient, name)

        async def spy(self: Any, *a: Any, _real: Any = real, _name: str = name, **kw: Any) -> Any:
            calls.append(_name)
            return await _real(self, *a, **kw)

        monkeypatch.setattr(SimBleakClient, name, spy)
    box = Outbox(tmp_path / "o.sqlite3")
    mgr = manager(sim, box, spot_recheck_s=60)
    task = asyncio.create_task(mgr.run())
    st = mgr.status[entry.address]
    await until(lambda: st.readings >= 1, 10)
    await until(lambda: not st.connected, 5)
    assert not sim.world.get(entry.address).connected
    assert st.connects == 1
    assert stored(box)[0]["metric"] == "body_temperature"
    assert calls[:2] == ["stop_notify", "disconnect"]  # notifications off before the requested disconnect
    mgr.stop()
    await task
    box.close()


async def test_glucose_racp_disconnect_midway_resumes_from_last_sequence(tmp_path: Path) -> None:
    sim = simulate(1, kinds=["glucose_meter"], device_options={"glucose_meter": {"history": 40}})
    entry = sim.devices[0]
    sim.world.disconnect_during_racp(entry.address, after_records=15)
    box = Outbox(tmp_path / "o.sqlite3")
    mgr = manager(sim, box, spot_recheck_s=0.2)
    task = asyncio.create_task(mgr.run())
    st = mgr.status[entry.address]
    await until(lambda: box.racp_last_seq(entry.address) == 40, 20)
    assert st.connects >= 2
    assert "interrupted" in (st.last_error or "")
    seqs = [r["flags"]["sequence_number"] for r in stored(box) if r["metric"] == "glucose"]
    assert sorted(seqs) == list(range(1, 41))  # every record exactly once
    # a later session asks only for newer records: nothing is fetched twice
    meter = sim.world.get(entry.address)
    assert isinstance(meter, GlucoseMeter)
    meter.trigger(sim.world.clock.now())
    await until(lambda: box.racp_last_seq(entry.address) == 41, 10)
    mgr.stop()
    await task
    seqs = [r["flags"]["sequence_number"] for r in stored(box) if r["metric"] == "glucose"]
    assert sorted(seqs) == list(range(1, 42))
    box.close()


async def test_resume_after_restart_uses_persisted_sequence(tmp_path: Path) -> None:
    sim = simulate(1, kinds=["glucose_meter"], device_options={"glucose_meter": {"history": 10}})
    entry = sim.devices[0]
    box = Outbox(tmp_path / "o.sqlite3")
    box.set_racp_last_seq(entry.address, 7)  # a previous run stored 1..7
    mgr = manager(sim, box)
    task = asyncio.create_task(mgr.run())
    await until(lambda: box.racp_last_seq(entry.address) == 10, 10)
    mgr.stop()
    await task
    assert sorted(r["flags"]["sequence_number"] for r in stored(box)) == [8, 9, 10]
    box.close()


async def test_transient_connect_failures_are_retried(tmp_path: Path) -> None:
    sim = simulate(1, kinds=["heart_rate"], speed=5)
    entry = sim.devices[0]
    # bleak-retry-connector retries BlueZ's transient errors itself (up to ~9 times); beyond that our backoff retries
    sim.world.fail_next_connects(entry.address, 14)
    box = Outbox(tmp_path / "o.sqlite3")
    mgr = manager(sim, box, connect_attempts=2)
    task = asyncio.create_task(mgr.run())
    st = mgr.status[entry.address]
    await until(lambda: st.readings >= 2, 30)
    assert "le-connection-abort-by-local" in (st.last_error or "")  # the failed session was recorded
    mgr.stop()
    await task
    box.close()


async def test_link_lost_reconnects(tmp_path: Path) -> None:
    sim = simulate(1, kinds=["heart_rate"], speed=5)
    entry = sim.devices[0]
    box = Outbox(tmp_path / "o.sqlite3")
    mgr = manager(sim, box)
    task = asyncio.create_task(mgr.run())
    st = mgr.status[entry.address]
    await until(lambda: st.readings >= 2, 10)
    sim.world.disconnect(entry.address)
    await until(lambda: st.connects >= 2 and st.connected, 10)
    n = st.readings
    await until(lambda: st.readings > n, 10)
    mgr.stop()
    await task
    box.close()
