"""Current Time 0x2A2B (CTS v1.1 §3.1) and Battery Level 0x2A19 (BAS v1.0 §3.1): what a gateway reads to measure a
device's clock offset and battery.

Current Time: Exact Time 256 = Day Date Time (Date Time 7 bytes + day of week u8: 0 unknown, 1 Monday .. 7 Sunday)
+ fractions256 u8 (1/256 s); then adjust reason u8 (bit 0 manual time update, bit 1 external reference time update,
bit 2 change of time zone, bit 3 change of DST; bits 4-7 reserved, kept). 10 bytes.
Battery Level: u8, percent (0-100; other values kept as sent).
"""

from __future__ import annotations

from dataclasses import dataclass

from devices.datetime_field import DateTime
from devices.gatt._wire import Reader, Writer, as_bytes

CURRENT_TIME_SIZE = 10


@dataclass(frozen=True, slots=True)
class CurrentTime:
    """A Current Time value (device local wall-clock time)."""

    date_time: DateTime
    day_of_week: int = 0
    fractions256: int = 0
    adjust_reason: int = 0

    @property
    def microseconds(self) -> int:
        """``fractions256`` as microseconds."""
        return self.fractions256 * 1_000_000 // 256


@dataclass(frozen=True, slots=True)
class BatteryLevel:
    """Battery Level (percent)."""

    percent: int


def decode_current_time(data: bytes) -> CurrentTime:
    """Decode a 0x2A2B value (10 bytes)."""
    r = Reader(as_bytes(data))
    dt = r.date_time("date_time")
    value = CurrentTime(dt, r.u8("day_of_week"), r.u8("fractions256"), r.u8("adjust_reason"))
    return value


def encode_current_time(value: CurrentTime) -> bytes:
    """Encode a 0x2A2B value."""
    w = Writer()
    w.date_time(value.date_time, "date_time")
    w.u8(value.day_of_week, "day_of_week")
    w.u8(value.fractions256, "fractions256")
    w.u8(value.adjust_reason, "adjust_reason")
    return w.bytes()


def decode_battery_level(data: bytes) -> BatteryLevel:
    """Decode a 0x2A19 value (1 byte)."""
    r = Reader(as_bytes(data))
    value = BatteryLevel(r.u8("battery_level"))
    return value


def encode_battery_level(value: BatteryLevel) -> bytes:
    """Encode a 0x2A19 value."""
    w = Writer()
    w.u8(value.percent, "battery_level")
    return w.bytes()
