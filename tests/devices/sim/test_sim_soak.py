"""Soak (slow): three patients, every device, world at 300x for a few seconds; a gateway-like loop subscribes to every
notifying characteristic and every value must decode with the registry (no link lost, no decoder error)."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import pytest
from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic

from devices.gatt import CHARACTERISTICS, decode_characteristic, uuids
from devices.sim import SimWorld
from devices.sim.backend import bleak_backends

pytestmark = pytest.mark.slow


async def test_every_device_of_three_patients_at_300x() -> None:
    world = SimWorld.create(
        3,
        ["hypoxia", "sepsis", "device_misuse"],
        seed=21,
        speed=300,
        onset_s=60,
        device_options={
            "blood_pressure": {"interval": timedelta(minutes=5)},
            "cgm": {"interval": timedelta(minutes=5)},
        },
    )
    scanner_backend, client_backend = bleak_backends(world)
    devices = await BleakScanner.discover(timeout=0.3, backend=scanner_backend)
    assert len(devices) == len(world.peripherals)
    counts: Counter[int] = Counter()
    lost: list[str] = []
    clients: list[BleakClient] = []
    for device in devices:
        client = BleakClient(device, lambda c: lost.append(c.address), backend=client_backend)
        await client.connect()
        clients.append(client)
        for characteristic in client.services.characteristics.values():
            uuid16 = uuids.uuid_to_uuid16(characteristic.uuid)
            if not {"notify", "indicate"} & set(characteristic.properties) or uuid16 not in CHARACTERISTICS:
                continue
            if uuid16 == uuids.RECORD_ACCESS_CONTROL_POINT:
                continue

            def on_value(_c: BleakGATTCharacteristic, data: bytearray, uuid16: int = uuid16) -> None:
                decode_characteristic(uuid16, bytes(data))
                counts[uuid16] += 1

            await client.start_notify(characteristic, on_value)
    await asyncio.sleep(4.0)  # 20 simulated minutes
    for client in clients:
        await client.disconnect()
    assert len(lost) == len(clients)  # the callbacks of the requested disconnections only
    assert counts[uuids.HEART_RATE_MEASUREMENT] > 3 * 1000
    assert counts[uuids.PLX_CONTINUOUS_MEASUREMENT] > 3 * 1000
    for uuid16 in (
        uuids.BLOOD_PRESSURE_MEASUREMENT,
        uuids.INTERMEDIATE_CUFF_PRESSURE,
        uuids.CGM_MEASUREMENT,
    ):
        assert counts[uuid16] >= 3, hex(uuid16)
