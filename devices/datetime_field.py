"""Date Time 0x2A08 (GSS §3.70 "Date Time"): 7 bytes, the device's local wall-clock time with no zone.

Layout: year u16 (1582-9999, 0 = not known), month u8 (1-12, 0 = not known), day u8 (1-31, 0 = not known), hours u8
(0-23), minutes u8 (0-59), seconds u8 (0-59). Decoding keeps the fields exactly as sent (no range check: a device clock
in a bad state is information); :meth:`DateTime.to_datetime` tells whether they form a real moment.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from devices.errors import DecodeError, EncodeError

DATE_TIME_SIZE: Final = 7
_STRUCT: Final = struct.Struct("<HBBBBB")


@dataclass(frozen=True, slots=True)
class DateTime:
    """A Date Time field exactly as the device sent it (device local time)."""

    year: int
    month: int
    day: int
    hours: int
    minutes: int
    seconds: int

    @property
    def is_known(self) -> bool:
        """False when the year, month or day is 0 ("not known")."""
        return self.year != 0 and self.month != 0 and self.day != 0

    def to_datetime(self) -> datetime | None:
        """The naive local datetime, or ``None`` when a field is unknown (0) or out of range."""
        if not self.is_known:
            return None
        try:
            # Device local time has no zone by definition (GSS Date Time); callers attach the measured offset.
            return datetime(self.year, self.month, self.day, self.hours, self.minutes, self.seconds)  # noqa: DTZ001
        except ValueError:
            return None

    @classmethod
    def from_datetime(cls, value: datetime) -> DateTime:
        """The field for a wall-clock time (its tzinfo, if any, is ignored: the device shows local time)."""
        return cls(value.year, value.month, value.day, value.hour, value.minute, value.second)

    def to_json(self) -> dict[str, int]:
        """``{"year", "month", "day", "hours", "minutes", "seconds"}`` exactly as sent."""
        return {
            "year": self.year,
            "month": self.month,
            "day": self.day,
            "hours": self.hours,
            "minutes": self.minutes,
            "seconds": self.seconds,
        }


def date_time_from_bytes(data: bytes, offset: int = 0, *, field: str = "date_time") -> DateTime:
    """Decode the 7-byte Date Time at ``data[offset:]``."""
    available = len(data) - offset
    if available < DATE_TIME_SIZE:
        raise DecodeError(field, expected=DATE_TIME_SIZE, actual=max(available, 0), offset=offset)
    return DateTime(*_STRUCT.unpack_from(data, offset))


def decode_date_time(data: bytes) -> DateTime:
    """Decode a Date Time characteristic value (7 bytes; octets after them are ignored, like every decoder here)."""
    return date_time_from_bytes(data, 0)


def encode_date_time(value: DateTime) -> bytes:
    """The 7 wire bytes of a Date Time."""
    try:
        return _STRUCT.pack(value.year, value.month, value.day, value.hours, value.minutes, value.seconds)
    except struct.error as exc:
        raise EncodeError(f"date_time: field out of range in {value}") from exc
