"""PLX Spot-check 0x2A5E, Continuous 0x2A5F and Features 0x2A60 (PLXS v1.0.1 §3.1-§3.3)."""

from __future__ import annotations

import pytest
from hypothesis import given

from devices.datetime_field import DateTime
from devices.errors import DecodeError
from devices.gatt.plx import (
    PlxContinuousMeasurement,
    PlxDeviceSensorStatus,
    PlxFeatures,
    PlxMeasurementStatus,
    PlxSpotCheckMeasurement,
    decode_plx_continuous,
    decode_plx_features,
    decode_plx_spot_check,
    encode_plx_continuous,
    encode_plx_features,
    encode_plx_spot_check,
    flag_names,
)
from devices.ieee11073 import Number
from tests.devices.strategies import plx_continuous, plx_features, plx_spot_checks

MS = PlxMeasurementStatus
DSS = PlxDeviceSensorStatus


def test_spot_check_full() -> None:
    # flags 0x1F: timestamp, measurement status, device/sensor status, PAI, device clock not set
    wire = bytes.fromhex("1F" + "6100" + "4800" + "EA070B1D081E00" + "2001" + "200000" + "20F0")
    m = decode_plx_spot_check(wire)
    assert m == PlxSpotCheckMeasurement(
        spo2=Number(97, 0),
        pulse_rate=Number(72, 0),
        timestamp=DateTime(2026, 11, 29, 8, 30, 0),
        measurement_status=MS.MEASUREMENT_ONGOING | MS.FULLY_QUALIFIED_DATA,
        device_sensor_status=DSS.LOW_PERFUSION_DETECTED,
        pulse_amplitude_index=Number(32, -1),
        device_clock_not_set=True,
    )
    assert flag_names(m.measurement_status) == ["measurement_ongoing", "fully_qualified_data"]
    assert flag_names(m.device_sensor_status) == ["low_perfusion_detected"]
    assert encode_plx_spot_check(m) == wire


def test_spot_check_minimal_and_100_percent() -> None:
    m = decode_plx_spot_check(bytes.fromhex("00E8F34200"))  # SpO2 1000e-1 = 100 %, PR 66
    assert m == PlxSpotCheckMeasurement(Number(1000, -1), Number(66, 0))
    assert m.spo2.value == 100.0


def test_all_status_names() -> None:
    assert flag_names(MS(0xFFE0)) == [
        "measurement_ongoing",
        "early_estimated_data",
        "validated_data",
        "fully_qualified_data",
        "data_from_measurement_storage",
        "data_for_demonstration",
        "data_for_testing",
        "calibration_ongoing",
        "measurement_unavailable",
        "questionable_measurement_detected",
        "invalid_measurement_detected",
    ]
    assert flag_names(DSS(0xFFFF)) == [
        "extended_display_update_ongoing",
        "equipment_malfunction_detected",
        "signal_processing_irregularity_detected",
        "inadequate_signal_detected",
        "poor_signal_detected",
        "low_perfusion_detected",
        "erratic_signal_detected",
        "nonpulsatile_signal_detected",
        "questionable_pulse_detected",
        "signal_analysis_ongoing",
        "sensor_interference_detected",
        "sensor_unconnected_to_user",
        "unknown_sensor_connected",
        "sensor_displaced",
        "sensor_malfunctioning",
        "sensor_disconnected",
    ]
    # reserved bits (measurement status 0-4, device status 16-23) are ignored
    m = decode_plx_spot_check(bytes.fromhex("06" + "6100" + "4800" + "1F00" + "0000FF"))
    assert m.measurement_status == MS(0)
    assert m.device_sensor_status == DSS(0)
    assert flag_names(m.measurement_status) == []


def test_continuous() -> None:
    wire = bytes.fromhex("1F" + "6000" + "4B00" + "6100" + "4C00" + "5F00" + "4A00" + "8000" + "000800" + "1500")
    m = decode_plx_continuous(wire)
    assert m == PlxContinuousMeasurement(
        Number(96, 0),
        Number(75, 0),
        Number(97, 0),
        Number(76, 0),
        Number(95, 0),
        Number(74, 0),
        MS.VALIDATED_DATA,
        DSS.SENSOR_UNCONNECTED_TO_USER,
        Number(21, 0),
    )
    assert encode_plx_continuous(m) == wire
    assert decode_plx_continuous(bytes.fromhex("0060004B00")) == PlxContinuousMeasurement(Number(96, 0), Number(75, 0))


def test_features() -> None:
    wire = bytes.fromhex("FF00" + "E0FF" + "FFFF00")
    f = decode_plx_features(wire)
    assert f == PlxFeatures(True, True, True, True, True, True, MS(0xFFE0), DSS(0xFFFF))
    assert encode_plx_features(f) == wire
    assert decode_plx_features(bytes.fromhex("0800")) == PlxFeatures(timestamp_spot_check=True)


@pytest.mark.parametrize(
    ("decoder", "wire", "message"),
    [
        (decode_plx_spot_check, "006100", "pulse_rate: expected 2 bytes at offset 3, got 0"),
        (decode_plx_spot_check, "0461004800FFFF", "device_sensor_status: expected 3 bytes at offset 5, got 2"),
        (decode_plx_continuous, "01610048006100", "pulse_rate_fast: expected 2 bytes at offset 7, got 0"),
        (decode_plx_features, "0100", "measurement_status_support: expected 2 bytes at offset 2, got 0"),
    ],
)
def test_malformed(decoder, wire: str, message: str) -> None:
    with pytest.raises(DecodeError) as info:
        decoder(bytes.fromhex(wire))
    assert str(info.value) == message


@given(plx_spot_checks)
def test_spot_round_trip(m: PlxSpotCheckMeasurement) -> None:
    assert decode_plx_spot_check(encode_plx_spot_check(m)) == m


@given(plx_continuous())
def test_continuous_round_trip(m: PlxContinuousMeasurement) -> None:
    assert decode_plx_continuous(encode_plx_continuous(m)) == m


@given(plx_features)
def test_features_round_trip(f: PlxFeatures) -> None:
    assert decode_plx_features(encode_plx_features(f)) == f
