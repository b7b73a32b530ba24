"""Pulse Oximeter: PLX Spot-check Measurement 0x2A5E (indicated), PLX Continuous Measurement 0x2A5F (notified),
PLX Features 0x2A60 (read).

PLXS v1.0.1 §3.1-§3.3 / GSS:
- Spot-check: flags u8 (bit 0 timestamp, bit 1 measurement status, bit 2 device and sensor status, bit 3 pulse amplitude
  index, bit 4 device clock is not set; bits 5-7 reserved); SpO2 SFLOAT (%), PR SFLOAT (/min); [timestamp: Date Time];
  [measurement status u16]; [device and sensor status u24]; [pulse amplitude index SFLOAT (%)].
- Continuous: flags u8 (bit 0 SpO2PR-Fast, bit 1 SpO2PR-Slow, bit 2 measurement status, bit 3 device and sensor status,
  bit 4 pulse amplitude index; bits 5-7 reserved); SpO2PR-Normal (2 SFLOAT); [SpO2PR-Fast]; [SpO2PR-Slow];
  [measurement status u16]; [device and sensor status u24]; [pulse amplitude index SFLOAT].
- Measurement status bits 5..15 and device and sensor status bits 0..15 as in :class:`PlxMeasurementStatus` and
  :class:`PlxDeviceSensorStatus` (other bits reserved, ignored).
- Features: supported features u16 (bit 0 measurement status support, bit 1 device and sensor status support, bit 2
  measurement storage for spot-check, bit 3 timestamp for spot-check, bit 4 SpO2PR-Fast, bit 5 SpO2PR-Slow, bit 6 pulse
  amplitude index, bit 7 multiple bonds); [measurement status support u16, bit 0]; [device and sensor status
  support u24, bit 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag

from devices.datetime_field import DateTime
from devices.gatt._wire import Reader, Writer, as_bytes
from devices.ieee11073 import Number


class PlxMeasurementStatus(IntFlag):
    """Measurement status (PLXS §3.1.1.3); bits 0-4 reserved."""

    MEASUREMENT_ONGOING = 1 << 5
    EARLY_ESTIMATED_DATA = 1 << 6
    VALIDATED_DATA = 1 << 7
    FULLY_QUALIFIED_DATA = 1 << 8
    DATA_FROM_MEASUREMENT_STORAGE = 1 << 9
    DATA_FOR_DEMONSTRATION = 1 << 10
    DATA_FOR_TESTING = 1 << 11
    CALIBRATION_ONGOING = 1 << 12
    MEASUREMENT_UNAVAILABLE = 1 << 13
    QUESTIONABLE_MEASUREMENT_DETECTED = 1 << 14
    INVALID_MEASUREMENT_DETECTED = 1 << 15


class PlxDeviceSensorStatus(IntFlag):
    """Device and sensor status (PLXS §3.1.1.4); bits 16-23 reserved."""

    EXTENDED_DISPLAY_UPDATE_ONGOING = 1 << 0
    EQUIPMENT_MALFUNCTION_DETECTED = 1 << 1
    SIGNAL_PROCESSING_IRREGULARITY_DETECTED = 1 << 2
    INADEQUATE_SIGNAL_DETECTED = 1 << 3
    POOR_SIGNAL_DETECTED = 1 << 4
    LOW_PERFUSION_DETECTED = 1 << 5
    ERRATIC_SIGNAL_DETECTED = 1 << 6
    NONPULSATILE_SIGNAL_DETECTED = 1 << 7
    QUESTIONABLE_PULSE_DETECTED = 1 << 8
    SIGNAL_ANALYSIS_ONGOING = 1 << 9
    SENSOR_INTERFERENCE_DETECTED = 1 << 10
    SENSOR_UNCONNECTED_TO_USER = 1 << 11
    UNKNOWN_SENSOR_CONNECTED = 1 << 12
    SENSOR_DISPLACED = 1 << 13
    SENSOR_MALFUNCTIONING = 1 << 14
    SENSOR_DISCONNECTED = 1 << 15


_MS_MASK = 0xFFE0
_DSS_MASK = 0xFFFF


def flag_names(flags: IntFlag | None) -> list[str] | None:
    """Snake-case names of the set bits, in bit order (``None`` stays ``None``)."""
    if flags is None:
        return None
    return [m.name.lower() for m in type(flags) if m in flags and m.name is not None]


@dataclass(frozen=True, slots=True)
class PlxSpotCheckMeasurement:
    """One PLX Spot-check Measurement (0x2A5E)."""

    spo2: Number
    pulse_rate: Number
    timestamp: DateTime | None = None
    measurement_status: PlxMeasurementStatus | None = None
    device_sensor_status: PlxDeviceSensorStatus | None = None
    pulse_amplitude_index: Number | None = None
    device_clock_not_set: bool = False
    """Flags bit 4: the timestamp is not reliable."""


@dataclass(frozen=True, slots=True)
class PlxContinuousMeasurement:
    """One PLX Continuous Measurement (0x2A5F)."""

    spo2: Number
    pulse_rate: Number
    spo2_fast: Number | None = None
    pulse_rate_fast: Number | None = None
    spo2_slow: Number | None = None
    pulse_rate_slow: Number | None = None
    measurement_status: PlxMeasurementStatus | None = None
    device_sensor_status: PlxDeviceSensorStatus | None = None
    pulse_amplitude_index: Number | None = None


@dataclass(frozen=True, slots=True)
class PlxFeatures:
    """PLX Features (0x2A60)."""

    measurement_storage_spot_check: bool = False
    timestamp_spot_check: bool = False
    spo2pr_fast: bool = False
    spo2pr_slow: bool = False
    pulse_amplitude_index: bool = False
    multiple_bonds: bool = False
    measurement_status_support: PlxMeasurementStatus | None = None
    """Present when the device supports measurement status (features bit 0)."""
    device_sensor_status_support: PlxDeviceSensorStatus | None = None
    """Present when the device supports device and sensor status (features bit 1)."""


def decode_plx_spot_check(data: bytes) -> PlxSpotCheckMeasurement:
    """Decode a 0x2A5E value."""
    r = Reader(as_bytes(data))
    flags = r.u8("flags")
    spo2 = r.sfloat("spo2")
    pr = r.sfloat("pulse_rate")
    timestamp = r.date_time("timestamp") if flags & 0x01 else None
    ms = PlxMeasurementStatus(r.u16("measurement_status") & _MS_MASK) if flags & 0x02 else None
    dss = PlxDeviceSensorStatus(r.u24("device_sensor_status") & _DSS_MASK) if flags & 0x04 else None
    pai = r.sfloat("pulse_amplitude_index") if flags & 0x08 else None
    return PlxSpotCheckMeasurement(spo2, pr, timestamp, ms, dss, pai, bool(flags & 0x10))


def encode_plx_spot_check(m: PlxSpotCheckMeasurement) -> bytes:
    """Encode a 0x2A5E value."""
    flags = (0x01 if m.timestamp is not None else 0) | (0x02 if m.measurement_status is not None else 0)
    flags |= (0x04 if m.device_sensor_status is not None else 0) | (0x08 if m.pulse_amplitude_index is not None else 0)
    flags |= 0x10 if m.device_clock_not_set else 0
    w = Writer()
    w.u8(flags, "flags")
    w.sfloat(m.spo2)
    w.sfloat(m.pulse_rate)
    if m.timestamp is not None:
        w.date_time(m.timestamp, "timestamp")
    _write_status_tail(w, m)
    return w.bytes()


def decode_plx_continuous(data: bytes) -> PlxContinuousMeasurement:
    """Decode a 0x2A5F value."""
    r = Reader(as_bytes(data))
    flags = r.u8("flags")
    spo2 = r.sfloat("spo2")
    pr = r.sfloat("pulse_rate")
    spo2_fast = pr_fast = spo2_slow = pr_slow = None
    if flags & 0x01:
        spo2_fast = r.sfloat("spo2_fast")
        pr_fast = r.sfloat("pulse_rate_fast")
    if flags & 0x02:
        spo2_slow = r.sfloat("spo2_slow")
        pr_slow = r.sfloat("pulse_rate_slow")
    ms = PlxMeasurementStatus(r.u16("measurement_status") & _MS_MASK) if flags & 0x04 else None
    dss = PlxDeviceSensorStatus(r.u24("device_sensor_status") & _DSS_MASK) if flags & 0x08 else None
    pai = r.sfloat("pulse_amplitude_index") if flags & 0x10 else None
    return PlxContinuousMeasurement(spo2, pr, spo2_fast, pr_fast, spo2_slow, pr_slow, ms, dss, pai)


def encode_plx_continuous(m: PlxContinuousMeasurement) -> bytes:
    """Encode a 0x2A5F value (fast and slow pairs go together: a missing half is sent as NaN)."""
    fast = m.spo2_fast is not None or m.pulse_rate_fast is not None
    slow = m.spo2_slow is not None or m.pulse_rate_slow is not None
    flags = (0x01 if fast else 0) | (0x02 if slow else 0) | (0x04 if m.measurement_status is not None else 0)
    flags |= (0x08 if m.device_sensor_status is not None else 0) | (0x10 if m.pulse_amplitude_index is not None else 0)
    w = Writer()
    w.u8(flags, "flags")
    w.sfloat(m.spo2)
    w.sfloat(m.pulse_rate)
    nan = float("nan")
    if fast:
        w.sfloat(nan if m.spo2_fast is None else m.spo2_fast)
        w.sfloat(nan if m.pulse_rate_fast is None else m.pulse_rate_fast)
    if slow:
        w.sfloat(nan if m.spo2_slow is None else m.spo2_slow)
        w.sfloat(nan if m.pulse_rate_slow is None else m.pulse_rate_slow)
    _write_status_tail(w, m)
    return w.bytes()


def _write_status_tail(w: Writer, m: PlxSpotCheckMeasurement | PlxContinuousMeasurement) -> None:
    """The optional fields both PLX measurements end with (PLXS §3.1.1 / §3.2.1): status, device/sensor status, PAI."""
    if m.measurement_status is not None:
        w.u16(int(m.measurement_status), "measurement_status")
    if m.device_sensor_status is not None:
        w.u24(int(m.device_sensor_status), "device_sensor_status")
    if m.pulse_amplitude_index is not None:
        w.sfloat(m.pulse_amplitude_index)


def decode_plx_features(data: bytes) -> PlxFeatures:
    """Decode a 0x2A60 value."""
    r = Reader(as_bytes(data))
    raw = r.u16("supported_features")
    ms = PlxMeasurementStatus(r.u16("measurement_status_support") & _MS_MASK) if raw & 0x01 else None
    dss = PlxDeviceSensorStatus(r.u24("device_sensor_status_support") & _DSS_MASK) if raw & 0x02 else None
    return PlxFeatures(
        measurement_storage_spot_check=bool(raw & 0x04),
        timestamp_spot_check=bool(raw & 0x08),
        spo2pr_fast=bool(raw & 0x10),
        spo2pr_slow=bool(raw & 0x20),
        pulse_amplitude_index=bool(raw & 0x40),
        multiple_bonds=bool(raw & 0x80),
        measurement_status_support=ms,
        device_sensor_status_support=dss,
    )


def encode_plx_features(f: PlxFeatures) -> bytes:
    """Encode a 0x2A60 value."""
    raw = (0x01 if f.measurement_status_support is not None else 0) | (
        0x02 if f.device_sensor_status_support is not None else 0
    )
    for bit, on in enumerate(
        (
            f.measurement_storage_spot_check,
            f.timestamp_spot_check,
            f.spo2pr_fast,
            f.spo2pr_slow,
            f.pulse_amplitude_index,
            f.multiple_bonds,
        ),
        start=2,
    ):
        raw |= int(on) << bit
    w = Writer()
    w.u16(raw, "supported_features")
    if f.measurement_status_support is not None:
        w.u16(int(f.measurement_status_support), "measurement_status_support")
    if f.device_sensor_status_support is not None:
        w.u24(int(f.device_sensor_status_support), "device_sensor_status_support")
    return w.bytes()
