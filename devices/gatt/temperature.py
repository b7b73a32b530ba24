"""Health Thermometer: Temperature Measurement 0x2A1C (indicated), Intermediate Temperature 0x2A1E (notified, same
format), Temperature Type 0x2A1D (read).

HTS v1.0 §3.1 / GSS "Temperature Measurement": flags u8 (bit 0 unit: 0 Celsius, 1 Fahrenheit; bit 1 time stamp present;
bit 2 temperature type present; bits 3-7 reserved); temperature FLOAT (IEEE 11073 32-bit); [time stamp: Date Time];
[temperature type u8]. Temperature Type values (GSS §3.222): 1 armpit, 2 body (general), 3 ear (usually earlobe),
4 finger, 5 gastro-intestinal tract, 6 mouth, 7 rectum, 8 toe, 9 tympanum (ear drum); 0 and 10-255 reserved.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum

from devices.datetime_field import DateTime
from devices.gatt._wire import Reader, Writer, as_bytes
from devices.ieee11073 import Number

_FAHRENHEIT = 0x01
_TIMESTAMP = 0x02
_TYPE = 0x04


class TemperatureUnit(StrEnum):
    """Unit of the temperature, as a UCUM code."""

    CELSIUS = "Cel"
    FAHRENHEIT = "[degF]"


class TemperatureType(IntEnum):
    """Where the temperature was taken (GSS Temperature Type)."""

    ARMPIT = 1
    BODY = 2
    EAR = 3
    FINGER = 4
    GASTROINTESTINAL_TRACT = 5
    MOUTH = 6
    RECTUM = 7
    TOE = 8
    TYMPANUM = 9


def temperature_type_name(value: int | None) -> str | None:
    """Snake-case name of a Temperature Type value, ``"reserved"`` for unknown values, ``None`` for ``None``."""
    if value is None:
        return None
    try:
        return TemperatureType(value).name.lower()
    except ValueError:
        return "reserved"


@dataclass(frozen=True, slots=True)
class TemperatureMeasurement:
    """One Temperature Measurement (0x2A1C) or Intermediate Temperature (0x2A1E)."""

    temperature: Number
    unit: TemperatureUnit = TemperatureUnit.CELSIUS
    timestamp: DateTime | None = None
    temperature_type: int | None = None
    """A :class:`TemperatureType` value (kept as an int: reserved values are passed through)."""
    intermediate: bool = False
    """True for 0x2A1E Intermediate Temperature (not on the wire: set by the decoder used)."""


@dataclass(frozen=True, slots=True)
class TemperatureTypeValue:
    """The Temperature Type characteristic 0x2A1D (a static body location)."""

    temperature_type: int


def _decode(data: bytes, intermediate: bool) -> TemperatureMeasurement:
    r = Reader(as_bytes(data))
    flags = r.u8("flags")
    value = r.float32("temperature")
    timestamp = r.date_time("timestamp") if flags & _TIMESTAMP else None
    kind = r.u8("temperature_type") if flags & _TYPE else None
    unit = TemperatureUnit.FAHRENHEIT if flags & _FAHRENHEIT else TemperatureUnit.CELSIUS
    return TemperatureMeasurement(value, unit, timestamp, kind, intermediate)


def decode_temperature_measurement(data: bytes) -> TemperatureMeasurement:
    """Decode a 0x2A1C value."""
    return _decode(data, False)


def decode_intermediate_temperature(data: bytes) -> TemperatureMeasurement:
    """Decode a 0x2A1E value (``intermediate=True``)."""
    return _decode(data, True)


def encode_temperature_measurement(m: TemperatureMeasurement) -> bytes:
    """Encode a 0x2A1C or 0x2A1E value (the format is the same)."""
    flags = _FAHRENHEIT if m.unit is TemperatureUnit.FAHRENHEIT else 0
    flags |= (_TIMESTAMP if m.timestamp is not None else 0) | (_TYPE if m.temperature_type is not None else 0)
    w = Writer()
    w.u8(flags, "flags")
    w.float32(m.temperature)
    if m.timestamp is not None:
        w.date_time(m.timestamp, "timestamp")
    if m.temperature_type is not None:
        w.u8(m.temperature_type, "temperature_type")
    return w.bytes()


encode_intermediate_temperature = encode_temperature_measurement


def decode_temperature_type(data: bytes) -> TemperatureTypeValue:
    """Decode a 0x2A1D value (one byte)."""
    return TemperatureTypeValue(Reader(as_bytes(data)).u8("temperature_type"))


def encode_temperature_type(value: TemperatureTypeValue) -> bytes:
    """Encode a 0x2A1D value."""
    w = Writer()
    w.u8(value.temperature_type, "temperature_type")
    return w.bytes()
