"""Bluetooth SIG health characteristics: one module per characteristic family, a registry keyed by 16-bit UUID.

Every module offers ``decode_<thing>(data: bytes) -> FrozenDataclass`` and ``encode_<thing>(value) -> bytes``; malformed
bytes raise :class:`devices.errors.DecodeError` and nothing else. :data:`CHARACTERISTICS` maps each 16-bit UUID to its
:class:`CharacteristicCodec`; :func:`decode_characteristic` decodes by UUID.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from devices import datetime_field
from devices.errors import UnknownCharacteristicError
from devices.gatt import blood_pressure, heart_rate, uuids


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
    table = [
        CharacteristicCodec(
            uuids.DATE_TIME, "date_time", datetime_field.decode_date_time, datetime_field.encode_date_time, False
        ),
        CharacteristicCodec(
            uuids.HEART_RATE_MEASUREMENT,
            "heart_rate_measurement",
            heart_rate.decode_heart_rate_measurement,
            heart_rate.encode_heart_rate_measurement,
            True,
        ),
        CharacteristicCodec(
            uuids.BLOOD_PRESSURE_MEASUREMENT,
            "blood_pressure_measurement",
            blood_pressure.decode_blood_pressure_measurement,
            blood_pressure.encode_blood_pressure_measurement,
            True,
        ),
        CharacteristicCodec(
            uuids.INTERMEDIATE_CUFF_PRESSURE,
            "intermediate_cuff_pressure",
            blood_pressure.decode_intermediate_cuff_pressure,
            blood_pressure.encode_intermediate_cuff_pressure,
            True,
        ),
    ]
    return {c.uuid16: c for c in table}


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
