"""Blood Pressure Measurement 0x2A35 and Intermediate Cuff Pressure 0x2A36 (BLS v1.0 §3.1, §3.2)."""

from __future__ import annotations

import pytest
from hypothesis import given

from devices.datetime_field import DateTime
from devices.errors import DecodeError
from devices.gatt.blood_pressure import (
    BloodPressureMeasurement,
    BloodPressureStatus,
    IntermediateCuffPressure,
    PressureUnit,
    PulseRateRange,
    decode_blood_pressure_measurement,
    decode_intermediate_cuff_pressure,
    encode_blood_pressure_measurement,
    encode_intermediate_cuff_pressure,
)
from devices.ieee11073 import Number, Special
from tests.devices.strategies import blood_pressures, cuff_pressures

NAN = Number.of_special(Special.NAN)


def test_full_measurement() -> None:
    # flags 0x1E: timestamp, pulse, user id, status; mmHg. 121/80 MAP 95, 2020-11-29 10:00:00, pulse 72, user 1,
    # status 0x0006: cuff too loose + irregular pulse.
    wire = bytes.fromhex("1E790050005F00E4070B1D0A0000480001" + "0600")
    expected = BloodPressureMeasurement(
        systolic=Number(121, 0),
        diastolic=Number(80, 0),
        mean_arterial_pressure=Number(95, 0),
        unit=PressureUnit.MMHG,
        timestamp=DateTime(2020, 11, 29, 10, 0, 0),
        pulse_rate=Number(72, 0),
        user_id=1,
        measurement_status=BloodPressureStatus(cuff_too_loose=True, irregular_pulse=True),
    )
    assert decode_blood_pressure_measurement(wire) == expected
    assert encode_blood_pressure_measurement(expected) == wire


def test_trailing_octets_ignored() -> None:
    m = decode_blood_pressure_measurement(bytes.fromhex("E0" + "7800" + "5000" + "6000" + "AABB"))  # reserved flag bits
    assert m == BloodPressureMeasurement(Number(120, 0), Number(80, 0), Number(96, 0))


def test_kpa_minimal() -> None:
    # 16.0 / 10.7 / 12.5 kPa as 160e-1, 107e-1, 125e-1
    m = decode_blood_pressure_measurement(bytes.fromhex("01A0F06BF07DF0"))
    assert m == BloodPressureMeasurement(Number(160, -1), Number(107, -1), Number(125, -1), PressureUnit.KPA)
    assert m.systolic.value == 16.0


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (0x0001, BloodPressureStatus(body_movement=True)),
        (0x0008, BloodPressureStatus(pulse_rate_range=PulseRateRange.ABOVE_UPPER_LIMIT)),
        (0x0010, BloodPressureStatus(pulse_rate_range=PulseRateRange.BELOW_LOWER_LIMIT)),
        (0x0018, BloodPressureStatus(pulse_rate_range=PulseRateRange.RESERVED)),
        (0x0020, BloodPressureStatus(improper_position=True)),
        (0xFFC0, BloodPressureStatus()),  # reserved bits ignored
    ],
)
def test_status_bits(raw: int, status: BloodPressureStatus) -> None:
    wire = bytes.fromhex("107800500060 00".replace(" ", "")) + raw.to_bytes(2, "little")
    assert decode_blood_pressure_measurement(wire).measurement_status == status


def test_intermediate_cuff_pressure() -> None:
    wire = bytes.fromhex("00" + "9600" + "FF07" + "FF07")  # 150 mmHg, diastolic and MAP unused (NaN)
    m = decode_intermediate_cuff_pressure(wire)
    assert m == IntermediateCuffPressure(Number(150, 0))
    assert m.diastolic == NAN
    assert encode_intermediate_cuff_pressure(m) == wire


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        ("0078005000", "mean_arterial_pressure: expected 2 bytes at offset 5, got 0"),
        ("02780050005F00E407", "timestamp: expected 7 bytes at offset 7, got 2"),
        ("04780050005F0048", "pulse_rate: expected 2 bytes at offset 7, got 1"),
        ("08780050005F00", "user_id: expected 1 bytes at offset 7, got 0"),
        ("10780050005F0001", "measurement_status: expected 2 bytes at offset 7, got 1"),
    ],
)
def test_malformed(wire: str, message: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_blood_pressure_measurement(bytes.fromhex(wire))
    assert str(info.value) == message


@given(blood_pressures)
def test_round_trip(m: BloodPressureMeasurement) -> None:
    assert decode_blood_pressure_measurement(encode_blood_pressure_measurement(m)) == m


@given(cuff_pressures)
def test_round_trip_cuff(m: IntermediateCuffPressure) -> None:
    assert decode_intermediate_cuff_pressure(encode_intermediate_cuff_pressure(m)) == m
