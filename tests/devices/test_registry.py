"""The characteristic registry and the UUID helpers."""

from __future__ import annotations

import pytest

from devices.errors import UnknownCharacteristicError
from devices.gatt import CHARACTERISTICS, decode_characteristic, encode_characteristic, get_codec, uuids
from devices.gatt.heart_rate import HeartRateMeasurement

EXPECTED = {
    0x2A08, 0x2A37, 0x2A35, 0x2A36, 0x2A1C, 0x2A1D, 0x2A1E, 0x2A5E, 0x2A5F, 0x2A60,
    0x2A9D, 0x2A9E, 0x2A18, 0x2A34, 0x2A51, 0x2AA7, 0x2A52, 0x2A2B, 0x2A19,
}  # fmt: skip


def test_registry_covers_the_issue() -> None:
    assert set(CHARACTERISTICS) == EXPECTED
    for uuid16, codec in CHARACTERISTICS.items():
        assert codec.uuid16 == uuid16
    measurements = {u for u, c in CHARACTERISTICS.items() if c.is_measurement}
    assert measurements == {0x2A37, 0x2A35, 0x2A36, 0x2A1C, 0x2A1E, 0x2A5E, 0x2A5F, 0x2A9D, 0x2A18, 0x2AA7}


def test_decode_by_uuid_and_name() -> None:
    assert decode_characteristic(0x2A37, bytes.fromhex("0648")) == HeartRateMeasurement(72, True)
    assert encode_characteristic(0x2A37, HeartRateMeasurement(72, True)) == bytes.fromhex("0648")
    assert get_codec("2a37") is get_codec("heart_rate_measurement") is get_codec(0x2A37)
    assert get_codec("00002a37-0000-1000-8000-00805f9b34fb").uuid16 == 0x2A37
    with pytest.raises(UnknownCharacteristicError):
        decode_characteristic(0x2A00, b"")
    with pytest.raises(UnknownCharacteristicError):
        get_codec("nope")
    with pytest.raises(UnknownCharacteristicError):
        encode_characteristic(0x1234, object())


def test_uuids() -> None:
    assert uuids.uuid16_to_str(0x2A37) == "00002a37-0000-1000-8000-00805f9b34fb"
    assert uuids.uuid16_to_str(uuids.HEART_RATE_SERVICE) == "0000180d-0000-1000-8000-00805f9b34fb"
    assert uuids.uuid_to_uuid16("0x180D") == 0x180D
    assert uuids.uuid_to_uuid16("0000181F-0000-1000-8000-00805F9B34FB") == uuids.CONTINUOUS_GLUCOSE_MONITORING_SERVICE
    services = (
        uuids.BLOOD_PRESSURE_SERVICE,
        uuids.HEALTH_THERMOMETER_SERVICE,
        uuids.PULSE_OXIMETER_SERVICE,
        uuids.WEIGHT_SCALE_SERVICE,
        uuids.GLUCOSE_SERVICE,
        uuids.DEVICE_INFORMATION_SERVICE,
        uuids.CURRENT_TIME_SERVICE,
        uuids.BATTERY_SERVICE,
    )
    assert services == (0x1810, 0x1809, 0x1822, 0x181D, 0x1808, 0x180A, 0x1805, 0x180F)
    with pytest.raises(ValueError):
        uuids.uuid16_to_str(0x10000)
    with pytest.raises(ValueError):
        uuids.uuid_to_uuid16("12345678-0000-1000-8000-00805f9b34fb")
