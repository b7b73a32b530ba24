"""Weight Scale: Weight Measurement 0x2A9D (indicated) and Weight Scale Feature 0x2A9E (read).

WSS v1.0 §3.1 / GSS "Weight Measurement": flags u8 (bit 0 measurement units: 0 SI, 1 imperial; bit 1 time stamp present;
bit 2 user ID present; bit 3 BMI and height present; bits 4-7 reserved); weight u16 (SI: kg, resolution 0.005; imperial:
lb, resolution 0.01; 0xFFFF = "measurement unsuccessful"); [time stamp: Date Time]; [user ID u8, 0xFF unknown user];
[BMI u16, resolution 0.1 kg/m2; height u16, SI: m, resolution 0.001; imperial: in, resolution 0.1].
Weight Scale Feature (GSS §3.245): u32, bit 0 time stamp supported, bit 1 multiple users supported, bit 2 BMI supported,
bits 3-6 weight resolution, bits 7-9 height resolution, bits 10-31 reserved. The feature's resolution describes the
scale's precision, never the unit of the Weight Measurement field (always 0.005 kg / 0.01 lb).
"""

from __future__ import annotations

from dataclasses import dataclass

from devices.datetime_field import DateTime
from devices.errors import EncodeError
from devices.gatt._wire import Reader, Writer, as_bytes

_IMPERIAL = 0x01
_TIMESTAMP = 0x02
_USER = 0x04
_BMI_HEIGHT = 0x08

WEIGHT_UNSUCCESSFUL = 0xFFFF
# Field scale factors (divide the u16 by these): weight kg 1/200, lb 1/100; BMI 1/10; height m 1/1000, in 1/10.
_KG_DIV = 200
_LB_DIV = 100
_BMI_DIV = 10
_M_DIV = 1000
_IN_DIV = 10

# Weight Scale Feature resolution tables (GSS Weight Scale Feature): index -> (kg, lb) and (m, in); 0 = not specified.
WEIGHT_RESOLUTIONS: dict[int, tuple[float, float]] = {
    1: (0.5, 1.0),
    2: (0.2, 0.5),
    3: (0.1, 0.2),
    4: (0.05, 0.1),
    5: (0.02, 0.05),
    6: (0.01, 0.02),
    7: (0.005, 0.01),
}
HEIGHT_RESOLUTIONS: dict[int, tuple[float, float]] = {1: (0.01, 1.0), 2: (0.005, 0.5), 3: (0.001, 0.1)}


@dataclass(frozen=True, slots=True)
class WeightMeasurement:
    """One Weight Measurement indication. Values are in ``kg``/``m`` (SI) or ``[lb_av]``/``[in_i]`` (imperial)."""

    weight: float | None
    """None when the scale reported 0xFFFF, "measurement unsuccessful"."""
    imperial: bool = False
    timestamp: DateTime | None = None
    user_id: int | None = None
    bmi: float | None = None
    height: float | None = None
    """Present together with ``bmi`` (flags bit 3)."""

    @property
    def unit(self) -> str:
        """UCUM unit of ``weight``."""
        return "[lb_av]" if self.imperial else "kg"

    @property
    def height_unit(self) -> str:
        """UCUM unit of ``height``."""
        return "[in_i]" if self.imperial else "m"


@dataclass(frozen=True, slots=True)
class WeightScaleFeature:
    """Weight Scale Feature 0x2A9E."""

    timestamp_supported: bool = False
    multiple_users_supported: bool = False
    bmi_supported: bool = False
    weight_resolution: int = 0
    """0 = not specified, 1..7 index :data:`WEIGHT_RESOLUTIONS`, 8..15 reserved."""
    height_resolution: int = 0
    """0 = not specified, 1..3 index :data:`HEIGHT_RESOLUTIONS`, 4..7 reserved."""


def decode_weight_measurement(data: bytes) -> WeightMeasurement:
    """Decode a 0x2A9D value."""
    r = Reader(as_bytes(data))
    flags = r.u8("flags")
    imperial = bool(flags & _IMPERIAL)
    raw = r.u16("weight")
    weight = None if raw == WEIGHT_UNSUCCESSFUL else raw / (_LB_DIV if imperial else _KG_DIV)
    timestamp = r.date_time("timestamp") if flags & _TIMESTAMP else None
    user = r.u8("user_id") if flags & _USER else None
    bmi = height = None
    if flags & _BMI_HEIGHT:
        bmi = r.u16("bmi") / _BMI_DIV
        height = r.u16("height") / (_IN_DIV if imperial else _M_DIV)
    return WeightMeasurement(weight, imperial, timestamp, user, bmi, height)


def _scaled(value: float, div: int, field: str) -> int:
    raw = round(value * div)
    if not 0 <= raw <= 0xFFFF:
        raise EncodeError(f"{field}: {value!r} out of range")
    return raw


def encode_weight_measurement(m: WeightMeasurement) -> bytes:
    """Encode a 0x2A9D value (rounds to the field resolution)."""
    if (m.bmi is None) != (m.height is None):
        raise EncodeError("bmi and height are sent together (flags bit 3)")
    flags = _IMPERIAL if m.imperial else 0
    flags |= (_TIMESTAMP if m.timestamp is not None else 0) | (_USER if m.user_id is not None else 0)
    flags |= _BMI_HEIGHT if m.bmi is not None else 0
    w = Writer()
    w.u8(flags, "flags")
    if m.weight is None:
        w.u16(WEIGHT_UNSUCCESSFUL, "weight")
    else:
        raw = _scaled(m.weight, _LB_DIV if m.imperial else _KG_DIV, "weight")
        if raw == WEIGHT_UNSUCCESSFUL:
            raise EncodeError("weight: 0xFFFF means 'measurement unsuccessful'")
        w.u16(raw, "weight")
    if m.timestamp is not None:
        w.date_time(m.timestamp, "timestamp")
    if m.user_id is not None:
        w.u8(m.user_id, "user_id")
    if m.bmi is not None and m.height is not None:
        w.u16(_scaled(m.bmi, _BMI_DIV, "bmi"), "bmi")
        w.u16(_scaled(m.height, _IN_DIV if m.imperial else _M_DIV, "height"), "height")
    return w.bytes()


def decode_weight_scale_feature(data: bytes) -> WeightScaleFeature:
    """Decode a 0x2A9E value (u32)."""
    r = Reader(as_bytes(data))
    raw = r.u32("weight_scale_feature")
    return WeightScaleFeature(bool(raw & 1), bool(raw & 2), bool(raw & 4), (raw >> 3) & 0x0F, (raw >> 7) & 0x07)


def encode_weight_scale_feature(f: WeightScaleFeature) -> bytes:
    """Encode a 0x2A9E value."""
    if not (0 <= f.weight_resolution <= 0x0F and 0 <= f.height_resolution <= 0x07):
        raise EncodeError("weight_scale_feature: resolution index out of range")
    raw = int(f.timestamp_supported) | int(f.multiple_users_supported) << 1 | int(f.bmi_supported) << 2
    raw |= f.weight_resolution << 3 | f.height_resolution << 7
    w = Writer()
    w.u32(raw, "weight_scale_feature")
    return w.bytes()
