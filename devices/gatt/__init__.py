"""Bluetooth SIG health characteristics: one module per characteristic family, a registry keyed by 16-bit UUID.

Every module offers ``decode_<thing>(data: bytes) -> FrozenDataclass`` and ``encode_<thing>(value) -> bytes``; malformed
bytes raise :class:`devices.errors.DecodeError` and nothing else. Reserved flag bits and octets after the last
defined field are ignored (forward compatibility); a field that its flag announces but that is cut short is an error.
:data:`CHARACTERISTICS` maps each 16-bit UUID to its :class:`CharacteristicCodec`; :func:`decode_characteristic`
decodes by UUID.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from devices import datetime_field
from devices.errors import UnknownCharacteristicError
from devices.gatt import (
    blood_pressure,
    cgm,
    current_time,
    glucose,
    heart_rate,
    plx,
    racp,
    temperature,
    uuids,
    weight,
)


@dataclass(frozen=True, slots=True)
class CharacteristicCodec:
    """How to decode and encode one characteristic."""

    uuid16: int
    name: str
    decode: Callable[[bytes], Any]
    encode: Callable[[Any], bytes]
    is_measurement: bool
    """True when the value carries clinical measurements (see :func:`devices.readings.to_readings`)."""


def _codecs() -> dict[int, CharacteristicCodec]:
    u = uuids
    table: list[tuple[int, str, Callable[[bytes], Any], Callable[[Any], bytes], bool]] = [
        (u.DATE_TIME, "date_time", datetime_field.decode_date_time, datetime_field.encode_date_time, False),
        (
            u.HEART_RATE_MEASUREMENT,
            "heart_rate_measurement",
            heart_rate.decode_heart_rate_measurement,
            heart_rate.encode_heart_rate_measurement,
            True,
        ),
        (
            u.BLOOD_PRESSURE_MEASUREMENT,
            "blood_pressure_measurement",
            blood_pressure.decode_blood_pressure_measurement,
            blood_pressure.encode_blood_pressure_measurement,
            True,
        ),
        (
            u.INTERMEDIATE_CUFF_PRESSURE,
            "intermediate_cuff_pressure",
            blood_pressure.decode_intermediate_cuff_pressure,
            blood_pressure.encode_intermediate_cuff_pressure,
            True,
        ),
        (
            u.TEMPERATURE_MEASUREMENT,
            "temperature_measurement",
            temperature.decode_temperature_measurement,
            temperature.encode_temperature_measurement,
            True,
        ),
        (
            u.TEMPERATURE_TYPE,
            "temperature_type",
            temperature.decode_temperature_type,
            temperature.encode_temperature_type,
            False,
        ),
        (
            u.INTERMEDIATE_TEMPERATURE,
            "intermediate_temperature",
            temperature.decode_intermediate_temperature,
            temperature.encode_intermediate_temperature,
            True,
        ),
        (
            u.PLX_SPOT_CHECK_MEASUREMENT,
            "plx_spot_check_measurement",
            plx.decode_plx_spot_check,
            plx.encode_plx_spot_check,
            True,
        ),
        (
            u.PLX_CONTINUOUS_MEASUREMENT,
            "plx_continuous_measurement",
            plx.decode_plx_continuous,
            plx.encode_plx_continuous,
            True,
        ),
        (u.PLX_FEATURES, "plx_features", plx.decode_plx_features, plx.encode_plx_features, False),
        (
            u.WEIGHT_MEASUREMENT,
            "weight_measurement",
            weight.decode_weight_measurement,
            weight.encode_weight_measurement,
            True,
        ),
        (
            u.WEIGHT_SCALE_FEATURE,
            "weight_scale_feature",
            weight.decode_weight_scale_feature,
            weight.encode_weight_scale_feature,
            False,
        ),
        (
            u.GLUCOSE_MEASUREMENT,
            "glucose_measurement",
            glucose.decode_glucose_measurement,
            glucose.encode_glucose_measurement,
            True,
        ),
        (
            u.GLUCOSE_MEASUREMENT_CONTEXT,
            "glucose_measurement_context",
            glucose.decode_glucose_context,
            glucose.encode_glucose_context,
            False,
        ),
        (u.GLUCOSE_FEATURE, "glucose_feature", glucose.decode_glucose_feature, glucose.encode_glucose_feature, False),
        (u.CGM_MEASUREMENT, "cgm_measurement", cgm.decode_cgm_measurement, cgm.encode_cgm_measurement, True),
        (u.RECORD_ACCESS_CONTROL_POINT, "record_access_control_point", racp.decode_racp, racp.encode_racp, False),
        (
            u.CURRENT_TIME,
            "current_time",
            current_time.decode_current_time,
            current_time.encode_current_time,
            False,
        ),
        (
            u.BATTERY_LEVEL,
            "battery_level",
            current_time.decode_battery_level,
            current_time.encode_battery_level,
            False,
        ),
    ]
    return {uuid16: CharacteristicCodec(uuid16, name, dec, enc, meas) for uuid16, name, dec, enc, meas in table}


CHARACTERISTICS: Mapping[int, CharacteristicCodec] = MappingProxyType(_codecs())


def get_codec(characteristic: int | str) -> CharacteristicCodec:
    """The codec for a 16-bit UUID (int, ``"2A37"``, full UUID string) or a codec name."""
    if isinstance(characteristic, str):
        for codec in CHARACTERISTICS.values():
            if codec.name == characteristic.strip().lower():
                return codec
    try:
        return CHARACTERISTICS[uuids.uuid_to_uuid16(characteristic)]
    except (KeyError, ValueError):
        raise UnknownCharacteristicError(str(characteristic)) from None


def decode_characteristic(uuid16: int, data: bytes) -> object:
    """Decode ``data`` as the characteristic ``uuid16``; ``UnknownCharacteristicError`` when none is registered."""
    codec = CHARACTERISTICS.get(uuid16)
    if codec is None:
        raise UnknownCharacteristicError(f"0x{uuid16:04X}" if isinstance(uuid16, int) else str(uuid16))
    return codec.decode(data)


def encode_characteristic(uuid16: int, value: object) -> bytes:
    """Encode ``value`` as the characteristic ``uuid16``."""
    codec = CHARACTERISTICS.get(uuid16)
    if codec is None:
        raise UnknownCharacteristicError(f"0x{uuid16:04X}")
    return codec.encode(value)
