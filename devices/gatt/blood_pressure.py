"""Blood Pressure Measurement 0x2A35 (indicated) and Intermediate Cuff Pressure 0x2A36 (notified).

BLS v1.0 §3.1 / §3.2 and GSS "Blood Pressure Measurement". Layout: flags u8; systolic, diastolic, mean arterial
pressure (SFLOAT each, unit from flags bit 0: 0 mmHg, 1 kPa); [timestamp: Date Time, bit 1]; [pulse rate SFLOAT, bit 2];
[user id u8, bit 3, 0xFF = unknown user]; [measurement status u16, bit 4]; bits 5-7 reserved.
In 0x2A36 the first SFLOAT is the current cuff pressure and the diastolic and MAP fields are unused (NaN) (BLS §3.2).
Measurement status (BLS §3.1.1.6 / GSS): bit 0 body movement detected, bit 1 cuff fit too loose, bit 2 irregular pulse
detected, bits 3-4 pulse rate range (0 within range, 1 exceeds upper limit, 2 below lower limit, 3 reserved),
bit 5 improper measurement position; bits 6-15 reserved.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum

from devices.datetime_field import DateTime
from devices.gatt._wire import Reader, Writer, as_bytes
from devices.ieee11073 import Number, Special

_KPA = 0x01
_TIMESTAMP = 0x02
_PULSE = 0x04
_USER = 0x08
_STATUS = 0x10

USER_ID_UNKNOWN = 0xFF
NAN = Number.of_special(Special.NAN)


class PressureUnit(StrEnum):
    """Unit of the pressure fields, as a UCUM code."""

    MMHG = "mm[Hg]"
    KPA = "kPa"


class PulseRateRange(IntEnum):
    """Measurement status bits 3-4."""

    IN_RANGE = 0
    ABOVE_UPPER_LIMIT = 1
    BELOW_LOWER_LIMIT = 2
    RESERVED = 3

    @property
    def label(self) -> str:
        """``"in_range"``, ``"above_upper_limit"``, ``"below_lower_limit"`` or ``"reserved"``."""
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class BloodPressureStatus:
    """The measurement status field (BLS §3.1.1.6)."""

    body_movement: bool = False
    cuff_too_loose: bool = False
    irregular_pulse: bool = False
    pulse_rate_range: PulseRateRange = PulseRateRange.IN_RANGE
    improper_position: bool = False

    @classmethod
    def from_raw(cls, raw: int) -> BloodPressureStatus:
        """Decode the u16 (reserved bits ignored)."""
        return cls(
            bool(raw & 0x01), bool(raw & 0x02), bool(raw & 0x04), PulseRateRange((raw >> 3) & 0x03), bool(raw & 0x20)
        )

    def to_raw(self) -> int:
        """The u16."""
        return (
            int(self.body_movement)
            | int(self.cuff_too_loose) << 1
            | int(self.irregular_pulse) << 2
            | int(self.pulse_rate_range) << 3
            | int(self.improper_position) << 5
        )

    def to_json(self) -> dict[str, bool | str]:
        """The object of ``tbib decode``."""
        return {
            "body_movement": self.body_movement,
            "cuff_too_loose": self.cuff_too_loose,
            "irregular_pulse": self.irregular_pulse,
            "pulse_rate_range": self.pulse_rate_range.label,
            "improper_position": self.improper_position,
        }


@dataclass(frozen=True, slots=True)
class BloodPressureMeasurement:
    """One Blood Pressure Measurement indication (0x2A35)."""

    systolic: Number
    diastolic: Number
    mean_arterial_pressure: Number
    unit: PressureUnit = PressureUnit.MMHG
    timestamp: DateTime | None = None
    pulse_rate: Number | None = None
    user_id: int | None = None
    """0xFF = unknown user."""
    measurement_status: BloodPressureStatus | None = None


@dataclass(frozen=True, slots=True)
class IntermediateCuffPressure:
    """One Intermediate Cuff Pressure notification (0x2A36): the cuff pressure while inflating or deflating."""

    cuff_pressure: Number
    unit: PressureUnit = PressureUnit.MMHG
    timestamp: DateTime | None = None
    pulse_rate: Number | None = None
    user_id: int | None = None
    measurement_status: BloodPressureStatus | None = None
    diastolic: Number = NAN
    """Unused in 0x2A36 (BLS §3.2: set to NaN); kept as sent."""
    mean_arterial_pressure: Number = NAN
    """Unused in 0x2A36 (BLS §3.2: set to NaN); kept as sent."""


_Fields = tuple[
    Number, Number, Number, PressureUnit, DateTime | None, Number | None, int | None, BloodPressureStatus | None
]


def _decode(data: bytes, what: str, first: str) -> _Fields:
    r = Reader(as_bytes(data))
    flags = r.u8("flags")
    unit = PressureUnit.KPA if flags & _KPA else PressureUnit.MMHG
    p1 = r.sfloat(first)
    p2 = r.sfloat("diastolic")
    p3 = r.sfloat("mean_arterial_pressure")
    timestamp = r.date_time("timestamp") if flags & _TIMESTAMP else None
    pulse = r.sfloat("pulse_rate") if flags & _PULSE else None
    user = r.u8("user_id") if flags & _USER else None
    status = BloodPressureStatus.from_raw(r.u16("measurement_status")) if flags & _STATUS else None
    return p1, p2, p3, unit, timestamp, pulse, user, status


def _encode(
    p1: Number,
    p2: Number,
    p3: Number,
    unit: PressureUnit,
    timestamp: DateTime | None,
    pulse: Number | None,
    user: int | None,
    status: BloodPressureStatus | None,
) -> bytes:
    flags = _KPA if unit is PressureUnit.KPA else 0
    flags |= (_TIMESTAMP if timestamp is not None else 0) | (_PULSE if pulse is not None else 0)
    flags |= (_USER if user is not None else 0) | (_STATUS if status is not None else 0)
    w = Writer()
    w.u8(flags, "flags")
    w.sfloat(p1)
    w.sfloat(p2)
    w.sfloat(p3)
    if timestamp is not None:
        w.date_time(timestamp, "timestamp")
    if pulse is not None:
        w.sfloat(pulse)
    if user is not None:
        w.u8(user, "user_id")
    if status is not None:
        w.u16(status.to_raw(), "measurement_status")
    return w.bytes()


def decode_blood_pressure_measurement(data: bytes) -> BloodPressureMeasurement:
    """Decode a 0x2A35 value."""
    return BloodPressureMeasurement(*_decode(data, "blood_pressure_measurement", "systolic"))


def encode_blood_pressure_measurement(m: BloodPressureMeasurement) -> bytes:
    """Encode a 0x2A35 value."""
    return _encode(
        m.systolic,
        m.diastolic,
        m.mean_arterial_pressure,
        m.unit,
        m.timestamp,
        m.pulse_rate,
        m.user_id,
        m.measurement_status,
    )


def decode_intermediate_cuff_pressure(data: bytes) -> IntermediateCuffPressure:
    """Decode a 0x2A36 value."""
    cuff, dia, mean, unit, timestamp, pulse, user, status = _decode(data, "intermediate_cuff_pressure", "cuff_pressure")
    return IntermediateCuffPressure(cuff, unit, timestamp, pulse, user, status, dia, mean)


def encode_intermediate_cuff_pressure(m: IntermediateCuffPressure) -> bytes:
    """Encode a 0x2A36 value."""
    return _encode(
        m.cuff_pressure,
        m.diastolic,
        m.mean_arterial_pressure,
        m.unit,
        m.timestamp,
        m.pulse_rate,
        m.user_id,
        m.measurement_status,
    )
