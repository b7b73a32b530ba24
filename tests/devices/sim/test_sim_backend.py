"""Done-when: real `BleakScanner`/`BleakClient` with `backend=` over the simulated world, every device type.

The world runs 20x faster than real time (HR strap: 20 notifications per real second; spot devices measure every 10
simulated seconds; CGM every 30 simulated seconds), so the whole file takes a few seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.exc import BleakDBusError, BleakDeviceNotFoundError, BleakError, BleakGATTProtocolError
from bleak_retry_connector import establish_connection

from devices.datetime_field import decode_date_time
from devices.errors import DecodeError, SimulationError
from devices.gatt import CHARACTERISTICS, decode_characteristic, uuids
from devices.gatt.blood_pressure import decode_blood_pressure_measurement
from devices.gatt.cgm import decode_cgm_measurement
from devices.gatt.glucose import decode_glucose_measurement
from devices.gatt.heart_rate import decode_heart_rate_measurement
from devices.gatt.plx import decode_plx_continuous, decode_plx_spot_check
from devices.gatt.racp import (
    OpCode,
    RacpMessage,
    ResponseCode,
    decode_racp,
    encode_racp,
    report_all_records,
    report_number_of_records,
    report_records_from,
)
from devices.gatt.temperature import decode_temperature_measurement
from devices.gatt.weight import decode_weight_measurement
from devices.readings import to_readings
from devices.sim import ALL_KINDS, SimWorld, use_world, world_from_spec
from devices.sim.backend import SimBleakClient, SimBleakScanner, bleak_backends

u = uuids.uuid16_to_str
SPEED = 20.0
SPOT = {"interval": timedelta(seconds=10), "first_measurement": timedelta(seconds=4)}
OPTIONS: dict[str, dict[str, Any]] = {
    "blood_pressure": SPOT,
    "thermometer": SPOT,
    "weight_scale": SPOT,
    "pulse_oximeter": SPOT,
    "cgm": {"interval": timedelta(seconds=30)},
    "glucose_meter": {"history": 25},
}
SERVICE = {
    "heart_rate": uuids.HEART_RATE_SERVICE,
    "blood_pressure": uuids.BLOOD_PRESSURE_SERVICE,
    "thermometer": uuids.HEALTH_THERMOMETER_SERVICE,
    "pulse_oximeter": uuids.PULSE_OXIMETER_SERVICE,
    "weight_scale": uuids.WEIGHT_SCALE_SERVICE,
    "glucose_meter": uuids.GLUCOSE_SERVICE,
    "cgm": uuids.CONTINUOUS_GLUCOSE_MONITORING_SERVICE,
}
RACP = u(uuids.RECORD_ACCESS_CONTROL_POINT)


@pytest.fixture
def world() -> Iterator[SimWorld]:
    w = SimWorld.create(2, ["stable", "sepsis"], seed=11, speed=SPEED, onset_s=0, device_options=OPTIONS)
    with use_world(w):
        yield w


async def _find(world: SimWorld, kind: str, patient: int = 0) -> BLEDevice:
    address = world.patients[patient].devices[kind].address
    device = await BleakScanner.find_device_by_address(address, timeout=2.0, backend=SimBleakScanner)
    assert device is not None
    return device


def test_world_has_every_device_type() -> None:
    w = SimWorld.create(3, "hypoxia", seed=1)
    assert len(w.peripherals) == 3 * len(ALL_KINDS)
    assert {p.kind for p in w.peripherals.values()} == set(SERVICE)


@pytest.mark.parametrize("kind", list(SERVICE))
async def test_discover_by_service_uuid(world: SimWorld, kind: str) -> None:
    found = await BleakScanner.discover(
        timeout=0.2, service_uuids=[u(SERVICE[kind])], backend=SimBleakScanner, return_adv=True
    )
    expected = {sim.devices[kind].address for sim in world.patients}
    assert set(found) == expected
    for device, adv in found.values():
        assert adv.service_uuids == [u(SERVICE[kind])]
        assert adv.local_name == device.name
        assert -100 < adv.rssi < -30


Decoder = Callable[[bytes], Any]
READINGS: list[tuple[str, int, Decoder, Callable[[Any], bool]]] = [
    ("heart_rate", uuids.HEART_RATE_MEASUREMENT, decode_heart_rate_measurement, lambda m: 40 <= m.heart_rate <= 180),
    (
        "blood_pressure",
        uuids.BLOOD_PRESSURE_MEASUREMENT,
        decode_blood_pressure_measurement,
        lambda m: 60 < float(m.diastolic) < float(m.systolic) < 250 and m.timestamp is not None,
    ),
    (
        "thermometer",
        uuids.TEMPERATURE_MEASUREMENT,
        decode_temperature_measurement,
        lambda m: 35 < float(m.temperature) < 42,
    ),
    ("pulse_oximeter", uuids.PLX_CONTINUOUS_MEASUREMENT, decode_plx_continuous, lambda m: 80 <= float(m.spo2) <= 100),
    ("pulse_oximeter", uuids.PLX_SPOT_CHECK_MEASUREMENT, decode_plx_spot_check, lambda m: m.timestamp is not None),
    (
        "weight_scale",
        uuids.WEIGHT_MEASUREMENT,
        decode_weight_measurement,
        lambda m: 30 < m.weight < 200 and m.bmi is not None and m.height is not None,
    ),
    ("cgm", uuids.CGM_MEASUREMENT, decode_cgm_measurement, lambda m: all(r.crc_ok for r in m.records)),
]


@pytest.mark.parametrize(("kind", "char", "decode", "plausible"), READINGS, ids=[r[0] + hex(r[1]) for r in READINGS])
async def test_notifications_decode_for_each_device(
    world: SimWorld, kind: str, char: int, decode: Decoder, plausible: Callable[[Any], bool]
) -> None:
    device = await _find(world, kind)
    queue: asyncio.Queue[bytearray] = asyncio.Queue()
    async with BleakClient(device, backend=SimBleakClient) as client:
        assert client.is_connected
        characteristic = client.services.get_characteristic(u(char))
        assert characteristic is not None
        assert {"notify", "indicate"} & set(characteristic.properties)
        assert characteristic.get_descriptor(u(uuids.CLIENT_CHARACTERISTIC_CONFIGURATION)) is not None
        await client.start_notify(u(char), lambda _c, data: queue.put_nowait(data))
        data = await asyncio.wait_for(queue.get(), timeout=5.0)
        assert plausible(decode(bytes(data)))
        await client.stop_notify(u(char))
    assert not client.is_connected


async def test_device_information_and_clock_drift(world: SimWorld) -> None:
    peripheral = world.patients[0].devices["blood_pressure"]
    async with BleakClient(await _find(world, "blood_pressure"), backend=SimBleakClient) as client:
        assert client.name == peripheral.name
        assert client.mtu_size == 247
        serial = await client.read_gatt_char(u(uuids.SERIAL_NUMBER_STRING))
        assert serial.decode() == peripheral.serial
        device_time = decode_date_time(bytes(await client.read_gatt_char(u(uuids.DATE_TIME)))).to_datetime()
        assert device_time is not None
        utc = world.clock.now().replace(tzinfo=None)
        drift = device_time - utc
        assert abs((drift - peripheral.clock_offset).total_seconds()) <= 1 + SPEED * 0.1
        with pytest.raises(BleakGATTProtocolError):
            await client.read_gatt_char(u(uuids.BLOOD_PRESSURE_MEASUREMENT))


class _RacpClient:
    def __init__(self, client: BleakClient) -> None:
        self.client = client
        self.records: list[int] = []
        self.responses: asyncio.Queue[RacpMessage] = asyncio.Queue()

    async def start(self) -> None:
        await self.client.start_notify(
            u(uuids.GLUCOSE_MEASUREMENT),
            lambda _c, d: self.records.append(decode_glucose_measurement(bytes(d)).sequence_number),
        )
        await self.client.start_notify(RACP, lambda _c, d: self.responses.put_nowait(decode_racp(bytes(d))))

    async def request(self, message: RacpMessage) -> RacpMessage:
        self.records = []
        await self.client.write_gatt_char(RACP, encode_racp(message), response=True)
        return await asyncio.wait_for(self.responses.get(), timeout=5.0)


async def test_service_filter_and_cccd(world: SimWorld) -> None:
    device = await _find(world, "heart_rate")
    hrs = u(uuids.HEART_RATE_SERVICE)
    async with BleakClient(device, services=[hrs], backend=SimBleakClient) as client:
        assert [s.uuid for s in client.services] == [hrs]
        char = client.services.get_characteristic(u(uuids.HEART_RATE_MEASUREMENT))
        assert char is not None
        cccd = char.get_descriptor(u(uuids.CLIENT_CHARACTERISTIC_CONFIGURATION))
        assert cccd is not None
        assert await client.read_gatt_descriptor(cccd.handle) == b"\x00\x00"
        await client.start_notify(char, lambda _c, _d: None)
        assert await client.read_gatt_descriptor(cccd.handle) == b"\x01\x00"
        await client.stop_notify(char)
        assert await client.read_gatt_descriptor(cccd.handle) == b"\x00\x00"
        with pytest.raises(BleakError):
            await client.start_notify(u(uuids.BODY_SENSOR_LOCATION), lambda _c, _d: None)


async def test_racp_download_all_then_from_n(world: SimWorld) -> None:
    async with BleakClient(await _find(world, "glucose_meter"), backend=SimBleakClient) as client:
        racp = _RacpClient(client)
        await racp.start()
        count = await racp.request(report_number_of_records())
        assert count.count == 25
        done = await racp.request(report_all_records())
        assert (done.request_op_code, done.response_code) == (OpCode.REPORT_STORED_RECORDS, ResponseCode.SUCCESS)
        assert racp.records == list(range(1, 26))
        done = await racp.request(report_records_from(20))
        assert done.response_code == ResponseCode.SUCCESS
        assert racp.records == [20, 21, 22, 23, 24, 25]
        none = await racp.request(report_records_from(26))
        assert none.response_code == ResponseCode.NO_RECORDS_FOUND
        assert racp.records == []


async def test_racp_without_indications_is_an_att_error(world: SimWorld) -> None:
    async with BleakClient(await _find(world, "glucose_meter"), backend=SimBleakClient) as client:
        with pytest.raises(BleakGATTProtocolError) as exc:
            await client.write_gatt_char(RACP, encode_racp(report_all_records()), response=True)
        assert exc.value.code == 0xFD


async def test_disconnect_mid_racp_transfer(world: SimWorld) -> None:
    meter = world.patients[0].devices["glucose_meter"]
    world.disconnect_during_racp(meter.address, after_records=10)
    lost = asyncio.Event()
    client = BleakClient(await _find(world, "glucose_meter"), lambda _c: lost.set(), backend=SimBleakClient)
    await client.connect()
    racp = _RacpClient(client)
    await racp.start()
    await client.write_gatt_char(RACP, encode_racp(report_all_records()), response=True)
    await asyncio.wait_for(lost.wait(), timeout=5.0)
    assert racp.records == list(range(1, 11))
    assert racp.responses.empty()
    assert not client.is_connected
    await client.disconnect()  # no-op, no error


async def test_disconnected_callback_unsolicited_and_requested(world: SimWorld) -> None:
    calls: list[str] = []
    device = await _find(world, "heart_rate")
    client = BleakClient(device, lambda c: calls.append(c.address), backend=SimBleakClient)
    await client.connect()
    world.disconnect(device.address)
    assert calls == [device.address]  # processed before the fault hook returns
    assert not client.is_connected
    with pytest.raises(BleakError):
        await client.read_gatt_char(u(uuids.BATTERY_LEVEL))
    await client.connect()  # at once: one driver only afterwards
    beats: list[bytearray] = []
    await client.start_notify(u(uuids.HEART_RATE_MEASUREMENT), lambda _c, d: beats.append(d))
    await asyncio.sleep(0.5)
    assert 0.5 * SPEED * 0.5 <= len(beats) <= 0.5 * SPEED * 1.3
    await client.disconnect()
    assert calls == [device.address, device.address]


async def test_connect_failures_then_retry_connector_succeeds(world: SimWorld) -> None:
    device = await _find(world, "pulse_oximeter")
    world.fail_next_connects(device.address, 2)
    with pytest.raises(BleakDBusError, match="le-connection-abort-by-local"):
        await BleakClient(device, backend=SimBleakClient).connect()
    client = await establish_connection(BleakClient, device, "oximeter", max_attempts=3, backend=SimBleakClient)
    try:
        assert client.is_connected
        assert world.get(device.address).faults.connect_failures == 0
    finally:
        await client.disconnect()


async def test_corrupt_notification_raises_decode_error(world: SimWorld) -> None:
    device = await _find(world, "heart_rate")
    world.corrupt_next_notifications(device.address, count=1, keep=1)
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    async with BleakClient(device, backend=SimBleakClient) as client:
        await client.start_notify(u(uuids.HEART_RATE_MEASUREMENT), lambda _c, d: queue.put_nowait(bytes(d)))
        first = await asyncio.wait_for(queue.get(), timeout=2.0)
        second = await asyncio.wait_for(queue.get(), timeout=2.0)
    with pytest.raises(DecodeError):
        decode_heart_rate_measurement(first)
    assert decode_heart_rate_measurement(second).heart_rate > 0


async def test_out_of_range(world: SimWorld) -> None:
    device = await _find(world, "thermometer")
    lost = asyncio.Event()
    client = BleakClient(device, lambda _c: lost.set(), backend=SimBleakClient)
    await client.connect()
    world.set_in_range(device.address, False)
    await asyncio.wait_for(lost.wait(), timeout=1.0)
    assert await BleakScanner.find_device_by_address(device.address, timeout=0.2, backend=SimBleakScanner) is None
    with pytest.raises(BleakDeviceNotFoundError):
        await BleakClient(device.address, backend=SimBleakClient).connect()
    world.connect_timeout_s = 0.05
    with pytest.raises(TimeoutError):
        await client.connect()
    world.set_in_range(device.address, True)
    await client.connect()
    assert client.is_connected
    await client.disconnect()


async def test_explicit_world_without_context() -> None:
    w = SimWorld.create(1, "stable", seed=2, kinds=["heart_rate"], speed=SPEED)
    found = await BleakScanner.discover(timeout=0.1, backend=SimBleakScanner.for_world(w))
    assert [d.address for d in found] == [w.patients[0].devices["heart_rate"].address]
    async with BleakScanner(backend=SimBleakScanner, sim_world=w) as scanner:
        await asyncio.sleep(0.1)
    assert len(scanner.discovered_devices) == 1
    by_address = BleakClient(found[0].address, backend=SimBleakClient.for_world(w))
    await by_address.connect()
    assert by_address.is_connected
    await by_address.disconnect()
    got: list[int] = []
    async with BleakClient(found[0], backend=SimBleakClient) as client:  # the BLEDevice carries its world

        def on_hr(_c: BleakGATTCharacteristic, data: bytearray) -> None:
            got.append(decode_heart_rate_measurement(bytes(data)).heart_rate)

        await client.start_notify(u(uuids.HEART_RATE_MEASUREMENT), on_hr)
        await asyncio.sleep(0.3)
    assert len(got) >= 3


@pytest.mark.parametrize("kind", list(SERVICE))
async def test_readable_characteristics_decode_with_the_registry(world: SimWorld, kind: str) -> None:
    """Everything a gateway may read (features, temperature type, date time) decodes and re-encodes identically."""
    checked = 0
    async with BleakClient(await _find(world, kind), backend=SimBleakClient) as client:
        for characteristic in client.services.characteristics.values():
            uuid16 = uuids.uuid_to_uuid16(characteristic.uuid)
            if "read" not in characteristic.properties or uuid16 not in CHARACTERISTICS:
                continue
            data = bytes(await client.read_gatt_char(characteristic))
            value = decode_characteristic(uuid16, data)
            assert CHARACTERISTICS[uuid16].encode(value) == data
            checked += 1
    assert checked >= 1


async def test_hypoxia_seen_through_the_oximeter_in_seconds() -> None:
    """A 20-minute COPD desaturation compressed 400x: the gateway sees SpO2 fall below 88 % over the air."""
    w = SimWorld.create(1, "hypoxia", seed=4, kinds=["pulse_oximeter"], speed=SPEED, onset_s=20, scenario_speed=400)
    spo2: list[float] = []
    device = await BleakScanner.find_device_by_address(
        w.patients[0].devices["pulse_oximeter"].address, timeout=1.0, backend=SimBleakScanner.for_world(w)
    )
    assert device is not None
    async with BleakClient(device, backend=SimBleakClient) as client:

        def on_plx(_c: BleakGATTCharacteristic, data: bytearray) -> None:
            spo2.append(float(decode_plx_continuous(bytes(data)).spo2))

        await client.start_notify(u(uuids.PLX_CONTINUOUS_MEASUREMENT), on_plx)
        for _ in range(50):
            await asyncio.sleep(0.1)
            if spo2 and spo2[-1] < 88:
                break
    assert spo2[0] > 90
    assert min(spo2) < 88


async def test_world_from_spec_and_bound_backends() -> None:
    w = world_from_spec("patients=2, scenario=hypoxia+sepsis, seed=9, speed=20, kinds=heart_rate+glucose_meter")
    assert [p.patient.scenario.name for p in w.patients] == ["hypoxia", "sepsis"]
    assert len(w.peripherals) == 4
    scanner_backend, client_backend = bleak_backends(w)
    found = await BleakScanner.discover(timeout=0.15, backend=scanner_backend)
    assert len(found) == 4
    async with BleakClient(found[0].address, backend=client_backend) as client:
        assert client.is_connected
    for bad in ("patients", "patients=x", "colour=blue", "scenario=zombie"):
        with pytest.raises(SimulationError):
            world_from_spec(bad)


SPOT_READINGS = [
    ("blood_pressure", uuids.BLOOD_PRESSURE_MEASUREMENT, "systolic_bp", lambda v: v.systolic),
    ("thermometer", uuids.TEMPERATURE_MEASUREMENT, "body_temperature", lambda v: v.body_temperature),
    ("weight_scale", uuids.WEIGHT_MEASUREMENT, "body_weight", lambda v: v.weight_kg),
    ("pulse_oximeter", uuids.PLX_SPOT_CHECK_MEASUREMENT, "spo2", lambda v: v.spo2),
]


@pytest.mark.parametrize(("kind", "char", "metric", "truth"), SPOT_READINGS, ids=[r[0] for r in SPOT_READINGS])
async def test_gateway_pipeline_corrects_device_clock(
    world: SimWorld, kind: str, char: int, metric: str, truth: Callable[[Any], float]
) -> None:
    """Read the device clock, subscribe, decode, normalize: measured_at lands on the true (simulated) instant."""
    peripheral = world.patients[1].devices[kind]
    queue: asyncio.Queue[tuple[bytes, datetime]] = asyncio.Queue()
    async with BleakClient(await _find(world, kind, patient=1), backend=SimBleakClient) as client:
        device_now = decode_date_time(bytes(await client.read_gatt_char(u(uuids.DATE_TIME)))).to_datetime()
        assert device_now is not None
        offset = world.clock.now().replace(tzinfo=None) - device_now  # UTC - device local time (gateway's view)
        await client.start_notify(u(char), lambda _c, d: queue.put_nowait((bytes(d), world.clock.now())))
        data, received_at = await asyncio.wait_for(queue.get(), timeout=5.0)
    readings = to_readings(decode_characteristic(char, data), received_at=received_at, clock_offset=offset)
    (reading,) = [r for r in readings if r.metric == metric]
    assert reading.measured_at is not None
    assert reading.measured_at <= received_at + timedelta(seconds=1)  # Date Time has 1 s resolution
    true_instant = min(
        (world.clock.start + SPOT["first_measurement"] + SPOT["interval"] * k for k in range(100)),
        key=lambda t: abs((t - reading.measured_at).total_seconds()),  # type: ignore[operator]
    )
    assert abs((reading.measured_at - true_instant).total_seconds()) <= 2.0
    vitals = peripheral.patient.vitals(true_instant)
    assert reading.value == pytest.approx(truth(vitals), abs=1.0)


async def test_gateway_pipeline_glucose_records(world: SimWorld) -> None:
    async with BleakClient(await _find(world, "glucose_meter"), backend=SimBleakClient) as client:
        data: list[bytes] = []
        done: asyncio.Queue[bytes] = asyncio.Queue()
        await client.start_notify(u(uuids.GLUCOSE_MEASUREMENT), lambda _c, d: data.append(bytes(d)))
        await client.start_notify(RACP, lambda _c, d: done.put_nowait(bytes(d)))
        await client.write_gatt_char(RACP, encode_racp(report_all_records()), response=True)
        await asyncio.wait_for(done.get(), timeout=5.0)
        received_at = world.clock.now()
    readings = [
        r
        for d in data
        for r in to_readings(decode_characteristic(uuids.GLUCOSE_MEASUREMENT, d), received_at=received_at)
    ]
    assert len(readings) == 25
    assert {r.metric for r in readings} == {"glucose"}
    assert {r.unit for r in readings} == {"mg/dL"}
    assert all(40 <= r.value <= 400 for r in readings)
