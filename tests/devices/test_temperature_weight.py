"""Temperature Measurement 0x2A1C/0x2A1E/0x2A1D (HTS v1.0 §3.1) and Weight Measurement 0x2A9D/0x2A9E (WSS v1.0 §3.1)."""

from __future__ import annotations

import pytest
from hypothesis import given

from devices.datetime_field import DateTime
from devices.errors import DecodeError, EncodeError
from devices.gatt.temperature import (
    TemperatureMeasurement,
    TemperatureType,
    TemperatureTypeValue,
    TemperatureUnit,
    decode_intermediate_temperature,
    decode_temperature_measurement,
    decode_temperature_type,
    encode_temperature_measurement,
    encode_temperature_type,
    temperature_type_name,
)
from devices.gatt.weight import (
    WeightMeasurement,
    WeightScaleFeature,
    decode_weight_measurement,
    decode_weight_scale_feature,
    encode_weight_measurement,
    encode_weight_scale_feature,
)
from devices.ieee11073 import Number, Special
from tests.devices.strategies import temperature_types, temperatures, weight_features, weights


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ("006C0100FF", TemperatureMeasurement(Number(364, -1))),  # 36.4 Cel (FLOAT 0xFF00016C)
        ("01DA0300FF", TemperatureMeasurement(Number(986, -1), TemperatureUnit.FAHRENHEIT)),  # 98.6 [degF]
        (
            "06710100FFEA070B1D081E0002",  # 36.9 Cel, 2026-11-29 08:30:00, type 2 body
            TemperatureMeasurement(Number(369, -1), timestamp=DateTime(2026, 11, 29, 8, 30, 0), temperature_type=2),
        ),
        ("04FFFF7F0006", TemperatureMeasurement(Number.of_special(Special.NAN), temperature_type=6)),
    ],
)
def test_temperature_examples(wire: str, expected: TemperatureMeasurement) -> None:
    m = decode_temperature_measurement(bytes.fromhex(wire))
    assert m == expected
    assert encode_temperature_measurement(m) == bytes.fromhex(wire)


def test_temperature_value_and_types() -> None:
    m = decode_temperature_measurement(bytes.fromhex("006C0100FF"))
    assert m.temperature.value == 36.4
    assert decode_intermediate_temperature(bytes.fromhex("006C0100FF")).intermediate
    assert decode_temperature_type(b"\x09") == TemperatureTypeValue(TemperatureType.TYMPANUM)
    assert encode_temperature_type(TemperatureTypeValue(3)) == b"\x03"
    assert temperature_type_name(7) == "rectum"
    assert temperature_type_name(0) == "reserved"
    assert temperature_type_name(None) is None


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        ("006C0100", "temperature: expected 4 bytes at offset 1, got 3"),
        ("026C0100FFEA07", "timestamp: expected 7 bytes at offset 5, got 2"),
        ("046C0100FF", "temperature_type: expected 1 bytes at offset 5, got 0"),
    ],
)
def test_temperature_malformed(wire: str, message: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_temperature_measurement(bytes.fromhex(wire))
    assert str(info.value) == message
    with pytest.raises(DecodeError):
        decode_temperature_type(b"")


@given(temperatures())
def test_temperature_round_trip(m: TemperatureMeasurement) -> None:
    assert decode_temperature_measurement(encode_temperature_measurement(m)) == m


@given(temperatures(intermediate=True))
def test_intermediate_round_trip(m: TemperatureMeasurement) -> None:
    assert decode_intermediate_temperature(encode_temperature_measurement(m)) == m


@given(temperature_types)
def test_temperature_type_round_trip(t: TemperatureTypeValue) -> None:
    assert decode_temperature_type(encode_temperature_type(t)) == t


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ("00B036", WeightMeasurement(70.0)),  # 14000 x 0.005 kg
        ("01483C", WeightMeasurement(154.32, imperial=True)),  # 15432 x 0.01 lb
        ("08B036E500D606", WeightMeasurement(70.0, bmi=22.9, height=1.75)),  # BMI 229 x 0.1, height 1750 x 0.001 m
        ("09483CE500BC02", WeightMeasurement(154.32, True, bmi=22.9, height=70.0)),  # height 700 x 0.1 in
        ("06FFFFEA070B1D081E0003", WeightMeasurement(None, timestamp=DateTime(2026, 11, 29, 8, 30, 0), user_id=3)),
    ],
)
def test_weight_examples(wire: str, expected: WeightMeasurement) -> None:
    m = decode_weight_measurement(bytes.fromhex(wire))
    assert m == expected
    assert encode_weight_measurement(m) == bytes.fromhex(wire)


def test_weight_units_and_errors() -> None:
    m = decode_weight_measurement(bytes.fromhex("09483CE500BC02"))
    assert (m.unit, m.height_unit) == ("[lb_av]", "[in_i]")
    with pytest.raises(DecodeError) as info:
        decode_weight_measurement(bytes.fromhex("08B036E500"))
    assert str(info.value) == "height: expected 2 bytes at offset 5, got 0"
    with pytest.raises(EncodeError):
        encode_weight_measurement(WeightMeasurement(70.0, bmi=22.0))
    with pytest.raises(EncodeError):
        encode_weight_measurement(WeightMeasurement(400.0))  # 80000 does not fit u16


def test_weight_scale_feature() -> None:
    # time stamp + multiple users + BMI, weight resolution 7 (0.005 kg), height resolution 3 (0.001 m)
    raw = 0b111 | 7 << 3 | 3 << 7
    f = decode_weight_scale_feature(raw.to_bytes(4, "little"))
    assert f == WeightScaleFeature(True, True, True, 7, 3)
    assert encode_weight_scale_feature(f) == raw.to_bytes(4, "little")


@given(weights())
def test_weight_round_trip(m: WeightMeasurement) -> None:
    assert decode_weight_measurement(encode_weight_measurement(m)) == m


@given(weight_features)
def test_weight_feature_round_trip(f: WeightScaleFeature) -> None:
    assert decode_weight_scale_feature(encode_weight_scale_feature(f)) == f
