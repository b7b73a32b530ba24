"""Glucose 0x2A18/0x2A34/0x2A51 (GLS v1.0.1), CGM Measurement 0x2AA7 (CGMS v1.0.1) and RACP 0x2A52."""

from __future__ import annotations

import pytest
from hypothesis import given

from devices.datetime_field import DateTime
from devices.errors import DecodeError
from devices.gatt.cgm import (
    CgmMeasurement,
    CgmRecord,
    crc16_mcrf4xx,
    decode_cgm_measurement,
    encode_cgm_measurement,
)
from devices.gatt.glucose import (
    GlucoseContext,
    GlucoseFeature,
    GlucoseFeatureBits,
    GlucoseMeasurement,
    GlucoseSensorStatus,
    SampleLocation,
    SampleType,
    decode_glucose_context,
    decode_glucose_feature,
    decode_glucose_measurement,
    encode_glucose_context,
    encode_glucose_feature,
    encode_glucose_measurement,
)
from devices.gatt.racp import (
    FilterType,
    OpCode,
    Operator,
    RacpMessage,
    ResponseCode,
    abort_operation,
    decode_racp,
    encode_racp,
    number_of_records_response,
    report_all_records,
    report_number_of_records,
    report_records_from,
    response,
)
from devices.ieee11073 import Number
from tests.devices.strategies import (
    cgm_measurements,
    glucose_contexts,
    glucose_features,
    glucose_measurements,
    racp_messages,
)

BASE = DateTime(2026, 11, 29, 8, 30, 0)
BASE_HEX = "EA070B1D081E00"


def test_glucose_kg_per_l() -> None:
    # flags 0x03: time offset + concentration (kg/L); seq 1; offset 0; 95e-5 kg/L (= 95 mg/dL); capillary whole blood,
    # finger (0x11)
    wire = bytes.fromhex("03" + "0100" + BASE_HEX + "0000" + "5FB0" + "11")
    m = decode_glucose_measurement(wire)
    assert m == GlucoseMeasurement(1, BASE, 0, Number(95, -5), False, 1, 1)
    assert m.concentration_unit == "kg/L"
    assert m.sample_type == SampleType.CAPILLARY_WHOLE_BLOOD
    assert m.sample_location == SampleLocation.FINGER
    assert encode_glucose_measurement(m) == wire


def test_glucose_mol_per_l_status_context() -> None:
    # flags 0x1F: offset -5 min, 53e-4 mol/L (5.3 mmol/L), undetermined plasma at AST (0x28), status bits 5 and 0,
    # context follows
    wire = bytes.fromhex("1F" + "2A00" + BASE_HEX + "FBFF" + "35C0" + "28" + "2100")
    m = decode_glucose_measurement(wire)
    assert m == GlucoseMeasurement(
        42,
        BASE,
        -5,
        Number(53, -4),
        True,
        8,
        2,
        GlucoseSensorStatus.DEVICE_BATTERY_LOW | GlucoseSensorStatus.RESULT_HIGHER_THAN_DEVICE_CAN_PROCESS,
        True,
    )
    assert m.concentration_unit == "mol/L"
    assert encode_glucose_measurement(m) == wire


@pytest.mark.parametrize(
    ("bit", "name"),
    [
        (5, "RESULT_HIGHER_THAN_DEVICE_CAN_PROCESS"),  # GLS: bit 5 higher (Nordic's Android library swaps 5/6)
        (6, "RESULT_LOWER_THAN_DEVICE_CAN_PROCESS"),
        (11, "TIME_FAULT"),
    ],
)
def test_glucose_status_bits(bit: int, name: str) -> None:
    wire = bytes.fromhex("08" + "0100" + BASE_HEX) + (1 << bit).to_bytes(2, "little")
    assert decode_glucose_measurement(wire).sensor_status == GlucoseSensorStatus[name]


def test_glucose_control_solution() -> None:
    wire = bytes.fromhex("02" + "0100" + BASE_HEX + "5FB0" + "4A")
    assert decode_glucose_measurement(wire).is_control_solution


def test_glucose_context() -> None:
    # flags 0xFF minus medication-in-liters: carbohydrate (id 1 breakfast, 50e-3 kg), meal 1 (preprandial),
    # tester 1 self / health 2 (0x21), exercise 1800 s at 60 %, medication id 1 (rapid acting) 5e-6 kg (5 mg),
    # HbA1c 6.5 %, extended flags 0
    wire = bytes.fromhex("DF" + "0700" + "00" + "01" + "32D0" + "01" + "21" + "0807" + "3C" + "01" + "05A0" + "41F0")
    c = decode_glucose_context(wire)
    assert c == GlucoseContext(
        sequence_number=7,
        extended_flags=0,
        carbohydrate_id=1,
        carbohydrate_kg=Number(50, -3),
        meal=1,
        tester=1,
        health=2,
        exercise_duration_s=1800,
        exercise_intensity_pct=60,
        medication_id=1,
        medication=Number(5, -6),
        medication_in_liters=False,
        hba1c_pct=Number(65, -1),
    )
    assert encode_glucose_context(c) == wire
    assert decode_glucose_context(bytes.fromhex("000700")) == GlucoseContext(7)


def test_glucose_feature() -> None:
    f = decode_glucose_feature(bytes.fromhex("FF07"))
    assert f == GlucoseFeature(GlucoseFeatureBits(0x07FF))
    assert GlucoseFeatureBits.MULTIPLE_BOND in f.features
    assert encode_glucose_feature(f) == bytes.fromhex("FF07")


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        ("00" + "0100" + "EA070B1D08", "base_time: expected 7 bytes at offset 3, got 5"),
        ("01" + "0100" + BASE_HEX + "FB", "time_offset: expected 2 bytes at offset 10, got 1"),
        ("02" + "0100" + BASE_HEX + "5FB0", "type_sample_location: expected 1 bytes at offset 12, got 0"),
    ],
)
def test_glucose_malformed(wire: str, message: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_glucose_measurement(bytes.fromhex(wire))
    assert str(info.value) == message


@given(glucose_measurements())
def test_glucose_round_trip(m: GlucoseMeasurement) -> None:
    assert decode_glucose_measurement(encode_glucose_measurement(m)) == m


@given(glucose_contexts())
def test_glucose_context_round_trip(c: GlucoseContext) -> None:
    assert decode_glucose_context(encode_glucose_context(c)) == c


@given(glucose_features)
def test_glucose_feature_round_trip(f: GlucoseFeature) -> None:
    assert decode_glucose_feature(encode_glucose_feature(f)) == f


# --- CGM ------------------------------------------------------------------------------------------------------------


def test_crc_check_value() -> None:
    assert crc16_mcrf4xx(b"123456789") == 0x6F91  # CRC-16/MCRF4XX catalogue check value


def test_cgm_two_records_with_crc() -> None:
    rec1 = bytes.fromhex("08" + "00" + "7800" + "0500")
    rec1 += crc16_mcrf4xx(rec1).to_bytes(2, "little")
    rec2 = bytes.fromhex("0D" + "E3" + "7900" + "0A00" + "01" + "02" + "04" + "FBFF" + "5F00")
    rec2 += crc16_mcrf4xx(rec2).to_bytes(2, "little")
    rec2 = bytes([len(rec2)]) + rec2[1:]  # size counts the CRC
    rec2 = rec2[:-2] + crc16_mcrf4xx(rec2[:-2]).to_bytes(2, "little")
    m = decode_cgm_measurement(rec1 + rec2)
    assert m == CgmMeasurement(
        (
            CgmRecord(Number(120, 0), 5, e2e_crc=True, crc_ok=True),
            CgmRecord(Number(121, 0), 10, 1, 2, 4, Number(-5, -1), Number(95, 0), True, True),
        )
    )
    assert encode_cgm_measurement(m) == rec1 + rec2


def test_cgm_without_crc_and_bad_crc() -> None:
    assert decode_cgm_measurement(bytes.fromhex("0600" + "7800" + "0500")) == CgmMeasurement(
        (CgmRecord(Number(120, 0), 5),)
    )
    bad = decode_cgm_measurement(bytes.fromhex("0800" + "7800" + "0500" + "0000"))
    assert bad.records[0].crc_ok is False


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        ("", "size: expected 1 bytes at offset 0, got 0"),
        ("05007800", "size: record size 5 at offset 0 is below 6"),
        ("0800780005", "cgm_record: expected 8 bytes at offset 0, got 5"),
        ("07007800050000", "cgm_record: record 0 size 7 leaves 1 byte(s) after its fields (0 or 2 expected)"),
        ("0601780005000700", "trend: expected 2 bytes at offset 6, got 0"),
    ],
)
def test_cgm_malformed(wire: str, message: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_cgm_measurement(bytes.fromhex(wire))
    assert str(info.value) == message


@given(cgm_measurements)
def test_cgm_round_trip(m: CgmMeasurement) -> None:
    assert decode_cgm_measurement(encode_cgm_measurement(m)) == m


# --- RACP -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ("0101", report_all_records()),
        ("0103010500", report_records_from(5)),
        ("0401", report_number_of_records()),
        ("0300", abort_operation()),
        ("0105", RacpMessage(OpCode.REPORT_STORED_RECORDS, Operator.FIRST_RECORD)),
        ("0106", RacpMessage(OpCode.REPORT_STORED_RECORDS, Operator.LAST_RECORD)),
        ("0102016400", RacpMessage(1, 2, FilterType.SEQUENCE_NUMBER, maximum=100)),
        ("010401010064 00".replace(" ", ""), RacpMessage(1, 4, 1, 1, 100)),
        ("010302" + BASE_HEX, RacpMessage(1, 3, FilterType.USER_FACING_TIME, BASE)),
        ("0201", RacpMessage(OpCode.DELETE_STORED_RECORDS, Operator.ALL_RECORDS)),
        ("06000101", response(OpCode.REPORT_STORED_RECORDS, ResponseCode.SUCCESS)),
        ("06000106", response(1, ResponseCode.NO_RECORDS_FOUND)),
        ("06000302", response(OpCode.ABORT_OPERATION, ResponseCode.OP_CODE_NOT_SUPPORTED)),
        ("05000A00", number_of_records_response(10)),
        ("050000000100", number_of_records_response(0x10000)),
        ("0103090102", RacpMessage(1, 3, 9, operand=b"\x01\x02")),  # unknown filter type: operand kept raw
        ("2000AABB", RacpMessage(0x20, 0, operand=b"\xaa\xbb")),  # unknown op code
    ],
)
def test_racp_examples(wire: str, expected: RacpMessage) -> None:
    assert decode_racp(bytes.fromhex(wire)) == expected
    assert encode_racp(expected) == bytes.fromhex(wire)


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        ("01", "operator: expected 1 bytes at offset 1, got 0"),
        ("010301", "minimum: expected 2 bytes at offset 3, got 0"),
        ("01040101000A", "maximum: expected 2 bytes at offset 5, got 1"),
        ("060001", "response_code: expected 1 bytes at offset 3, got 0"),
        ("0500", "count: expected 2 bytes at offset 2, got 0"),
        ("0500030201", "racp: 1 unexpected trailing byte(s) at offset 4"),
        ("010100", "racp: 1 unexpected trailing byte(s) at offset 2"),
    ],
)
def test_racp_malformed(wire: str, message: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_racp(bytes.fromhex(wire))
    assert str(info.value) == message


@given(racp_messages())
def test_racp_round_trip(m: RacpMessage) -> None:
    assert decode_racp(encode_racp(m)) == m
