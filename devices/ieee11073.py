"""IEEE 11073-20601 numbers: SFLOAT (16 bit) and FLOAT (32 bit), as used by the Bluetooth SIG health profiles.

Contract (IEEE 11073-20601 §F.6, Bluetooth GSS "medfloat16"/"medfloat32"):
- SFLOAT: 4-bit two's-complement exponent (high nibble), 12-bit two's-complement mantissa; value = mantissa x 10^exp.
- FLOAT: 8-bit two's-complement exponent (high byte), 24-bit two's-complement mantissa.
- Special values are exact raw words with exponent 0 only: SFLOAT 0x07FF NaN, 0x0800 NRes, 0x07FE +INF, 0x0802 -INF,
  0x0801 reserved; FLOAT 0x007FFFFF, 0x00800000, 0x007FFFFE, 0x00800002, 0x00800001. Any other word is an ordinary
  number (0xF7FF is 2047 x 10^-1 = 204.7). There is no exponent bias.

:class:`Number` keeps the mantissa and exponent, so ``decode(encode(n)) == n`` and the device's precision is not lost.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from enum import StrEnum
from typing import Final

from devices.errors import DecodeError, EncodeError


class Special(StrEnum):
    """IEEE 11073 special values (kept distinct: a NaN is not a NRes)."""

    NAN = "NaN"
    NRES = "NRes"
    POS_INF = "+INF"
    NEG_INF = "-INF"
    RFU = "RFU"


@dataclass(frozen=True, slots=True)
class Number:
    """An IEEE 11073 number: ``mantissa x 10^exponent``, or a special value (then mantissa and exponent are 0)."""

    mantissa: int
    exponent: int
    special: Special | None = None

    @property
    def value(self) -> float | None:
        """The value as a float (correctly rounded), ``±inf`` for ±INF, ``None`` for NaN, NRes and RFU."""
        if self.special is not None:
            if self.special is Special.POS_INF:
                return math.inf
            if self.special is Special.NEG_INF:
                return -math.inf
            return None
        if self.exponent >= 0:
            return float(self.mantissa * _POW10[self.exponent])
        return self.mantissa / _POW10[-self.exponent]  # int / int: one correctly rounded division (101/10 == 10.1)

    @property
    def is_finite(self) -> bool:
        """True for an ordinary number (not a special value)."""
        return self.special is None

    def __float__(self) -> float:
        value = self.value
        return math.nan if value is None else value

    @classmethod
    def of_special(cls, special: Special) -> Number:
        """The number for a special value."""
        return _SPECIAL_NUMBERS[special]

    @classmethod
    def from_value(cls, value: float, *, exponent: int | None = None, bits: int = 16) -> Number:
        """The number closest to ``value`` that fits SFLOAT (``bits=16``) or FLOAT (``bits=32``).

        With ``exponent`` the mantissa is ``round(value / 10^exponent)``; without, the shortest exact representation is
        chosen (72 -> 72e0, 10.1 -> 101e-1), rounding when the digits do not fit the mantissa.
        """
        fmt = _SFLOAT if bits == 16 else _FLOAT if bits == 32 else None
        if fmt is None:
            raise EncodeError(f"bits must be 16 or 32, not {bits}")
        return _number_from_value(float(value), exponent, fmt)


_POW10: Final[tuple[int, ...]] = tuple(10**i for i in range(0, 200))
_SPECIAL_NUMBERS: Final = {s: Number(0, 0, s) for s in Special}


@dataclass(frozen=True, slots=True)
class _Format:
    name: str
    mantissa_bits: int
    exponent_min: int
    exponent_max: int
    exponent_mask: int
    specials: dict[int, Special]  # raw word -> special

    def fits(self, mantissa: int, exponent: int) -> bool:
        """True when (mantissa, exponent) is an ordinary number of this format (not a special word)."""
        half = 1 << (self.mantissa_bits - 1)
        if exponent == 0:  # the special words all have exponent 0 and the extreme mantissas
            return -half + 3 <= mantissa <= half - 3
        return -half <= mantissa < half


_SFLOAT: Final = _Format(
    "sfloat",
    12,
    -8,
    7,
    0xF,
    {0x07FF: Special.NAN, 0x0800: Special.NRES, 0x07FE: Special.POS_INF, 0x0802: Special.NEG_INF, 0x0801: Special.RFU},
)
_FLOAT: Final = _Format(
    "float",
    24,
    -128,
    127,
    0xFF,
    {
        0x007FFFFF: Special.NAN,
        0x00800000: Special.NRES,
        0x007FFFFE: Special.POS_INF,
        0x00800002: Special.NEG_INF,
        0x00800001: Special.RFU,
    },
)
_SFLOAT_SPECIAL_RAW: Final = {s: raw for raw, s in _SFLOAT.specials.items()}
_FLOAT_SPECIAL_RAW: Final = {s: raw for raw, s in _FLOAT.specials.items()}


def decode_sfloat(raw: int) -> Number:
    """Decode a 16-bit SFLOAT word (already assembled from its little-endian bytes)."""
    if not 0 <= raw <= 0xFFFF:
        raise DecodeError("sfloat", reason=f"raw word {raw:#x} does not fit 16 bits")
    special = _SFLOAT.specials.get(raw)
    if special is not None:
        return _SPECIAL_NUMBERS[special]
    mantissa = raw & 0x0FFF
    if mantissa >= 0x0800:
        mantissa -= 0x1000
    exponent = raw >> 12
    if exponent >= 8:
        exponent -= 16
    return Number(mantissa, exponent)


def decode_float(raw: int) -> Number:
    """Decode a 32-bit FLOAT word (already assembled from its little-endian bytes)."""
    if not 0 <= raw <= 0xFFFFFFFF:
        raise DecodeError("float", reason=f"raw word {raw:#x} does not fit 32 bits")
    special = _FLOAT.specials.get(raw)
    if special is not None:
        return _SPECIAL_NUMBERS[special]
    mantissa = raw & 0x00FFFFFF
    if mantissa >= 0x00800000:
        mantissa -= 0x01000000
    exponent = raw >> 24
    if exponent >= 128:
        exponent -= 256
    return Number(mantissa, exponent)


def encode_sfloat(value: Number | Special | float, exponent: int | None = None) -> int:
    """The 16-bit SFLOAT word for a number, a special value, or a float (NaN and ±inf map to the specials)."""
    return _encode(value, exponent, _SFLOAT, _SFLOAT_SPECIAL_RAW)


def encode_float(value: Number | Special | float, exponent: int | None = None) -> int:
    """The 32-bit FLOAT word for a number, a special value, or a float (NaN and ±inf map to the specials)."""
    return _encode(value, exponent, _FLOAT, _FLOAT_SPECIAL_RAW)


def _encode(
    value: Number | Special | float, exponent: int | None, fmt: _Format, special_raw: dict[Special, int]
) -> int:
    if isinstance(value, Special):
        return special_raw[value]
    if isinstance(value, Number):
        if value.special is not None:
            return special_raw[value.special]
        number = value
    else:
        number = _number_from_value(float(value), exponent, fmt)
        if number.special is not None:
            return special_raw[number.special]
    m, e = number.mantissa, number.exponent
    half = 1 << (fmt.mantissa_bits - 1)
    if not -half <= m < half:
        raise EncodeError(f"{fmt.name}: mantissa {m} does not fit {fmt.mantissa_bits} bits")
    if not fmt.exponent_min <= e <= fmt.exponent_max:
        raise EncodeError(f"{fmt.name}: exponent {e} outside [{fmt.exponent_min}, {fmt.exponent_max}]")
    raw = ((e & fmt.exponent_mask) << fmt.mantissa_bits) | (m & ((1 << fmt.mantissa_bits) - 1))
    if raw in fmt.specials:
        special = fmt.specials[raw].value
        raise EncodeError(f"{fmt.name}: mantissa {m} with exponent 0 is the reserved word for {special}")
    return raw


def _number_from_value(value: float, exponent: int | None, fmt: _Format) -> Number:
    if math.isnan(value):
        return _SPECIAL_NUMBERS[Special.NAN]
    if math.isinf(value):
        return _SPECIAL_NUMBERS[Special.POS_INF if value > 0 else Special.NEG_INF]
    if exponent is not None:
        if not fmt.exponent_min <= exponent <= fmt.exponent_max:
            raise EncodeError(f"{fmt.name}: exponent {exponent} outside [{fmt.exponent_min}, {fmt.exponent_max}]")
        mantissa = _scaled(Decimal(repr(value)), exponent)
        if not fmt.fits(mantissa, exponent):
            raise EncodeError(f"{fmt.name}: {value!r} needs mantissa {mantissa} at exponent {exponent}: out of range")
        return Number(mantissa, exponent)
    if value == 0:
        return Number(0, 0)
    dec = Decimal(repr(value)).normalize()
    exp = dec.as_tuple().exponent
    assert isinstance(exp, int)  # finite
    e = max(exp, fmt.exponent_min)
    mantissa = _scaled(dec, e)
    while not fmt.fits(mantissa, e) and e < fmt.exponent_max:  # too many digits: drop precision
        e += 1
        mantissa = _scaled(dec, e)
    while e > fmt.exponent_max:  # too large an exponent: move it into the mantissa
        e -= 1
        mantissa *= 10
    if not fmt.fits(mantissa, e):
        raise EncodeError(f"{fmt.name}: {value!r} is out of range")
    if mantissa == 0:
        return Number(0, 0)
    return Number(mantissa, e)


def _scaled(dec: Decimal, exponent: int) -> int:
    try:
        return int(dec.scaleb(-exponent).to_integral_value(rounding=ROUND_HALF_EVEN))
    except (InvalidOperation, OverflowError) as exc:
        raise EncodeError(f"cannot scale {dec} to exponent {exponent}") from exc


# --- byte level (little-endian, as on the wire) ---------------------------------------------------------------------

_U16: Final = struct.Struct("<H")
_U32: Final = struct.Struct("<I")


def sfloat_from_bytes(data: bytes, offset: int = 0, *, field: str = "sfloat") -> Number:
    """Decode the SFLOAT at ``data[offset:offset + 2]``."""
    if len(data) - offset < 2:
        raise DecodeError(field, expected=2, actual=max(len(data) - offset, 0), offset=offset)
    return decode_sfloat(_U16.unpack_from(data, offset)[0])


def float_from_bytes(data: bytes, offset: int = 0, *, field: str = "float") -> Number:
    """Decode the FLOAT at ``data[offset:offset + 4]``."""
    if len(data) - offset < 4:
        raise DecodeError(field, expected=4, actual=max(len(data) - offset, 0), offset=offset)
    return decode_float(_U32.unpack_from(data, offset)[0])


def sfloat_to_bytes(value: Number | Special | float, exponent: int | None = None) -> bytes:
    """The two wire bytes of an SFLOAT."""
    return _U16.pack(encode_sfloat(value, exponent))


def float_to_bytes(value: Number | Special | float, exponent: int | None = None) -> bytes:
    """The four wire bytes of a FLOAT."""
    return _U32.pack(encode_float(value, exponent))


#: Aliases: one value type serves both widths (the encoder chosen decides the wire size).
SFloat = Number
Float11073 = Number
