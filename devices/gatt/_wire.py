"""Bounds-checked little-endian reader and writer shared by the characteristic codecs (private).

Every read names its field, so a short value raises ``DecodeError("<field>: expected N bytes at offset O, got M")``.
Octets after the last field the flags define are ignored by the characteristic decoders: later versions of the specs
append fields under today's reserved flag bits, and collectors ignore what they do not know (the same reason reserved
flag bits are ignored). Only RACP operands (a control point must reject a wrong operand length) and CGM records (whose
size byte is explicit) call :meth:`Reader.end`.
"""

from __future__ import annotations

import struct
from typing import Final

from devices.datetime_field import DATE_TIME_SIZE, DateTime
from devices.errors import DecodeError, EncodeError
from devices.ieee11073 import Number, Special, decode_float, decode_sfloat, encode_float, encode_sfloat

_U16: Final = struct.Struct("<H")
_S16: Final = struct.Struct("<h")
_U32: Final = struct.Struct("<I")
_DT: Final = struct.Struct("<HBBBBB")


class Reader:
    """Reads fields from ``data`` front to back."""

    __slots__ = ("data", "offset")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def _need(self, n: int, field: str) -> int:
        offset = self.offset
        available = len(self.data) - offset
        if available < n:
            raise DecodeError(field, expected=n, actual=available, offset=offset)
        self.offset = offset + n
        return offset

    @property
    def remaining(self) -> int:
        """Bytes not read yet."""
        return len(self.data) - self.offset

    def u8(self, field: str) -> int:
        """An unsigned byte."""
        return self.data[self._need(1, field)]

    def u16(self, field: str) -> int:
        """A little-endian uint16."""
        return int(_U16.unpack_from(self.data, self._need(2, field))[0])

    def s16(self, field: str) -> int:
        """A little-endian sint16."""
        return int(_S16.unpack_from(self.data, self._need(2, field))[0])

    def u24(self, field: str) -> int:
        """A little-endian uint24."""
        offset = self._need(3, field)
        return int.from_bytes(self.data[offset : offset + 3], "little")

    def u32(self, field: str) -> int:
        """A little-endian uint32."""
        return int(_U32.unpack_from(self.data, self._need(4, field))[0])

    def sfloat(self, field: str) -> Number:
        """An IEEE 11073 SFLOAT."""
        return decode_sfloat(_U16.unpack_from(self.data, self._need(2, field))[0])

    def float32(self, field: str) -> Number:
        """An IEEE 11073 FLOAT."""
        return decode_float(_U32.unpack_from(self.data, self._need(4, field))[0])

    def date_time(self, field: str) -> DateTime:
        """A 7-byte Date Time."""
        return DateTime(*_DT.unpack_from(self.data, self._need(DATE_TIME_SIZE, field)))

    def raw(self, n: int, field: str) -> bytes:
        """``n`` raw bytes."""
        offset = self._need(n, field)
        return bytes(self.data[offset : offset + n])

    def rest(self) -> bytes:
        """Everything not read yet."""
        out = bytes(self.data[self.offset :])
        self.offset = len(self.data)
        return out

    def end(self, what: str) -> None:
        """Refuse trailing bytes (RACP operands)."""
        if self.offset != len(self.data):
            extra = len(self.data) - self.offset
            raise DecodeError(what, reason=f"{extra} unexpected trailing byte(s) at offset {self.offset}")


def as_bytes(data: bytes | bytearray | memoryview) -> bytes:
    """Accept any bytes-like value (bleak hands out bytearray)."""
    return data if type(data) is bytes else bytes(data)


class Writer:
    """Appends fields; out-of-range values raise ``EncodeError`` naming the field."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def _int(self, value: int, size: int, field: str, *, signed: bool = False) -> None:
        try:
            self.buf += int(value).to_bytes(size, "little", signed=signed)
        except OverflowError as exc:
            raise EncodeError(f"{field}: {value!r} does not fit {size * 8} bits") from exc

    def u8(self, value: int, field: str) -> None:
        """An unsigned byte."""
        self._int(value, 1, field)

    def u16(self, value: int, field: str) -> None:
        """A little-endian uint16."""
        self._int(value, 2, field)

    def s16(self, value: int, field: str) -> None:
        """A little-endian sint16."""
        self._int(value, 2, field, signed=True)

    def u24(self, value: int, field: str) -> None:
        """A little-endian uint24."""
        self._int(value, 3, field)

    def u32(self, value: int, field: str) -> None:
        """A little-endian uint32."""
        self._int(value, 4, field)

    def sfloat(self, value: Number | Special | float) -> None:
        """An IEEE 11073 SFLOAT."""
        self.buf += _U16.pack(encode_sfloat(value))

    def float32(self, value: Number | Special | float) -> None:
        """An IEEE 11073 FLOAT."""
        self.buf += _U32.pack(encode_float(value))

    def date_time(self, value: DateTime, field: str) -> None:
        """A 7-byte Date Time."""
        try:
            self.buf += _DT.pack(value.year, value.month, value.day, value.hours, value.minutes, value.seconds)
        except struct.error as exc:
            raise EncodeError(f"{field}: field out of range in {value}") from exc

    def raw(self, value: bytes) -> None:
        """Raw bytes."""
        self.buf += value

    def bytes(self) -> bytes:
        """The encoded value."""
        return bytes(self.buf)
