"""Heart Rate Measurement 0x2A37 (HRS v1.0 §3.1.1)."""

from __future__ import annotations

import pytest
from hypothesis import given

from devices.errors import DecodeError
from devices.gatt.heart_rate import (
    HeartRateMeasurement,
    decode_heart_rate_measurement,
    encode_heart_rate_measurement,
)
from tests.devices.strategies import heart_rates


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ("0048", HeartRateMeasurement(72)),  # UINT8, no contact feature
        ("0248", HeartRateMeasurement(72)),  # 0b01: still "not supported"
        ("0448", HeartRateMeasurement(72, sensor_contact=False)),  # 0b10 supported, no contact
        ("0648", HeartRateMeasurement(72, sensor_contact=True)),  # 0b11 contact
        ("014801", HeartRateMeasurement(0x148, uint16_format=True)),  # UINT16 = 328
        ("0E5A3412", HeartRateMeasurement(90, sensor_contact=True, energy_expended_kj=0x1234)),
        (
            "1650000400020003",
            HeartRateMeasurement(80, sensor_contact=True, rr_intervals=(1024, 512, 768)),
        ),
        (
            "1F3C00E8030004",  # every flag: UINT16 60, contact, energy 1000 kJ, RR 1024
            HeartRateMeasurement(60, True, 1000, (1024,), True),
        ),
        ("E048", HeartRateMeasurement(72)),  # reserved bits 5-7 ignored
    ],
)
def test_examples(wire: str, expected: HeartRateMeasurement) -> None:
    assert decode_heart_rate_measurement(bytes.fromhex(wire)) == expected


def test_octets_after_the_defined_fields_are_ignored() -> None:
    # Collectors ignore what later spec versions may append (as they ignore reserved flag bits).
    assert decode_heart_rate_measurement(bytes.fromhex("0048FFFF")) == HeartRateMeasurement(72)


def test_rr_seconds() -> None:
    m = decode_heart_rate_measurement(bytes.fromhex("1048000400020003"))
    assert m.rr_intervals_s == (1.0, 0.5, 0.75)


def test_encode_bytes() -> None:
    m = HeartRateMeasurement(80, sensor_contact=True, rr_intervals=(1024, 512, 768))
    assert encode_heart_rate_measurement(m) == bytes.fromhex("1650000400020003")


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        ("", "flags: expected 1 bytes at offset 0, got 0"),
        ("00", "heart_rate: expected 1 bytes at offset 1, got 0"),
        ("0148", "heart_rate: expected 2 bytes at offset 1, got 1"),
        ("0848", "energy_expended: expected 2 bytes at offset 2, got 0"),
        ("1048", "rr_interval: expected 2 bytes at offset 2, got 0"),
        ("10480004FF", "rr_interval: expected 4 bytes at offset 2, got 3"),
    ],
)
def test_malformed(wire: str, message: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_heart_rate_measurement(bytes.fromhex(wire))
    assert str(info.value) == message


def test_decode_error_fields() -> None:
    with pytest.raises(DecodeError) as info:
        decode_heart_rate_measurement(bytes.fromhex("0148"))
    err = info.value
    assert (err.field, err.expected, err.actual, err.offset) == ("heart_rate", 2, 1, 1)
    assert isinstance(err, ValueError)


@given(heart_rates())
def test_round_trip(m: HeartRateMeasurement) -> None:
    assert decode_heart_rate_measurement(encode_heart_rate_measurement(m)) == m
