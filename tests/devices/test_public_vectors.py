"""Byte vectors published in other projects' test suites, checked against our decoders.

Sources (numbers only, re-typed as hex; the interpretation below follows the SIG specifications, not those projects):
Nordic Semiconductor's Android-BLE-Common-Library unit tests (HRM, BPM, HTM, glucose, CGM, RACP), the CRC-16/MCRF4XX
catalogue check value. Where that library is known to deviate from the SIG (glucose annunciation bits 5/6), the
assertions follow the SIG order.
"""

from __future__ import annotations

import pytest

from devices.datetime_field import DateTime
from devices.errors import DecodeError
from devices.gatt.blood_pressure import (
    BloodPressureMeasurement,
    BloodPressureStatus,
    PressureUnit,
    PulseRateRange,
    decode_blood_pressure_measurement,
)
from devices.gatt.cgm import CgmMeasurement, CgmRecord, decode_cgm_measurement
from devices.gatt.glucose import GlucoseMeasurement, GlucoseSensorStatus, decode_glucose_measurement
from devices.gatt.heart_rate import HeartRateMeasurement, decode_heart_rate_measurement
from devices.gatt.racp import decode_racp, response
from devices.gatt.temperature import TemperatureMeasurement, decode_temperature_measurement
from devices.ieee11073 import Number


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ("0055", HeartRateMeasurement(85)),
        ("04FF", HeartRateMeasurement(255, sensor_contact=False)),
        ("1E5532002100", HeartRateMeasurement(85, True, 50, (33,))),
        ("1F01013201010002 01FFFF", HeartRateMeasurement(257, True, 306, (1, 258, 65535), True)),
    ],
)
def test_heart_rate(wire: str, expected: HeartRateMeasurement) -> None:
    assert decode_heart_rate_measurement(bytes.fromhex(wire.replace(" ", ""))) == expected


def test_heart_rate_rr_flag_without_rr_is_invalid() -> None:
    with pytest.raises(DecodeError):
        decode_heart_rate_measurement(bytes.fromhex("170101"))


def test_blood_pressure_full() -> None:
    wire = bytes.fromhex("1E8A005800780000000411142 93B3C00012700".replace(" ", ""))
    m = decode_blood_pressure_measurement(wire)
    assert m == BloodPressureMeasurement(
        Number(138, 0),
        Number(88, 0),
        Number(120, 0),
        PressureUnit.MMHG,
        DateTime(0, 4, 17, 20, 41, 59),  # year 0 = not known
        Number(60, 0),
        1,
        BloodPressureStatus(True, True, True, PulseRateRange.IN_RANGE, True),
    )


def test_blood_pressure_kpa_some() -> None:
    m = decode_blood_pressure_measurement(bytes.fromhex("15BDF00B009FF03C001200"))
    assert m == BloodPressureMeasurement(
        Number(189, -1),
        Number(11, 0),
        Number(159, -1),
        PressureUnit.KPA,
        None,
        Number(60, 0),
        None,
        BloodPressureStatus(cuff_too_loose=True, pulse_rate_range=PulseRateRange.BELOW_LOWER_LIMIT),
    )


@pytest.mark.parametrize("wire", ["010203040506", "03020304050607"])
def test_blood_pressure_too_short(wire: str) -> None:
    with pytest.raises(DecodeError):
        decode_blood_pressure_measurement(bytes.fromhex(wire))


def test_temperature() -> None:
    wire = bytes.fromhex("06B00E00FEDC070C050B321B04")
    assert decode_temperature_measurement(wire) == TemperatureMeasurement(
        Number(3760, -2), timestamp=DateTime(2012, 12, 5, 11, 50, 27), temperature_type=4
    )
    with pytest.raises(DecodeError):
        decode_temperature_measurement(wire[:-1])


def test_glucose() -> None:
    wire = bytes.fromhex("1B0100E307021B0B0A1EFBFF1E00120501")
    m = decode_glucose_measurement(wire)
    s = GlucoseSensorStatus
    assert m == GlucoseMeasurement(
        1,
        DateTime(2019, 2, 27, 11, 10, 30),
        -5,
        Number(30, 0),
        False,
        2,  # capillary plasma
        1,  # finger
        s.DEVICE_BATTERY_LOW | s.SAMPLE_SIZE_INSUFFICIENT | s.SENSOR_TEMPERATURE_TOO_LOW,  # 0x0105
        True,
    )
    with pytest.raises(DecodeError):  # time offset missing: the status is cut short
        decode_glucose_measurement(bytes.fromhex("1B0000E207041A0B091E1E00120501"))


def test_cgm_full_with_crc() -> None:
    wire = bytes.fromhex("0FE3D2E405000214FF02F0E5F38E3F")
    assert decode_cgm_measurement(wire) == CgmMeasurement(
        (CgmRecord(Number(1234, -2), 5, 0x02, 0x14, 0xFF, Number(2, -1), Number(997, -1), True, True),)
    )


def test_cgm_double_and_crc_error() -> None:
    m = decode_cgm_measurement(bytes.fromhex("06000C100500" + "06000C100600"))
    assert [(r.glucose.value, r.time_offset_min) for r in m.records] == [(120.0, 5), (120.0, 6)]
    bad = decode_cgm_measurement(bytes.fromhex("08000C100600586F"))  # CRC is 0x6F59, not 0x6F58
    assert bad.records[0].crc_ok is False
    with pytest.raises(DecodeError):
        decode_cgm_measurement(bytes.fromhex("06E30C1006"))
    with pytest.raises(DecodeError):
        decode_cgm_measurement(bytes.fromhex("07E30C10060000"))


@pytest.mark.parametrize(
    ("wire", "count"),
    [("050001", 1), ("05000201", 258), ("050004030201", 16909060)],
)
def test_racp_counts(wire: str, count: int) -> None:
    assert decode_racp(bytes.fromhex(wire)).count == count


def test_racp_responses() -> None:
    assert decode_racp(bytes.fromhex("06000101")) == response(1, 1)
    assert decode_racp(bytes.fromhex("06000C02")) == response(12, 2)
    assert decode_racp(bytes.fromhex("0600010A")) == response(1, 10)
    for wire in ("0500030201", "060101"):
        with pytest.raises(DecodeError):
            decode_racp(bytes.fromhex(wire))
