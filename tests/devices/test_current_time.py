"""Current Time 0x2A2B (CTS v1.1 §3.1) and Battery Level 0x2A19."""

from __future__ import annotations

import pytest
from hypothesis import given

from devices.datetime_field import DateTime
from devices.errors import DecodeError
from devices.gatt.current_time import (
    BatteryLevel,
    CurrentTime,
    decode_battery_level,
    decode_current_time,
    encode_battery_level,
    encode_current_time,
)
from tests.devices.strategies import battery_levels, current_times


def test_current_time() -> None:
    # 2026-11-29 08:30:00, Sunday (7), 128/256 s, adjust reason: external reference time update
    wire = bytes.fromhex("EA070B1D081E00" + "07" + "80" + "02")
    c = decode_current_time(wire)
    assert c == CurrentTime(DateTime(2026, 11, 29, 8, 30, 0), 7, 128, 2)
    assert c.microseconds == 500_000
    assert encode_current_time(c) == wire
    with pytest.raises(DecodeError) as info:
        decode_current_time(wire[:8])
    assert str(info.value) == "fractions256: expected 1 bytes at offset 8, got 0"


def test_battery_level() -> None:
    assert decode_battery_level(b"\x64") == BatteryLevel(100)
    assert encode_battery_level(BatteryLevel(7)) == b"\x07"
    with pytest.raises(DecodeError):
        decode_battery_level(b"")
    assert decode_battery_level(b"\x01\x02") == BatteryLevel(1)  # trailing octets ignored


@given(current_times)
def test_current_time_round_trip(c: CurrentTime) -> None:
    assert decode_current_time(encode_current_time(c)) == c


@given(battery_levels)
def test_battery_round_trip(b: BatteryLevel) -> None:
    assert decode_battery_level(encode_battery_level(b)) == b
