"""CGM Measurement 0x2AA7 (notified): one or more records per notification (CGMS v1.0.1 §3.2 / GSS).

Each record: size u8 (the record's length, counting the size byte and the E2E-CRC), flags u8, glucose concentration
SFLOAT (mg/dL), time offset u16 (minutes since the session start), [sensor status annunciation: warning octet
(flags bit 5), cal/temp octet (bit 6), status octet (bit 7), in that order], [trend SFLOAT mg/dL/min (bit 0)],
[quality SFLOAT % (bit 1)], [E2E-CRC u16 when the CGM Feature says E2E-CRC is supported]. Bits 2-4 are reserved.

The decoder does not need the CGM Feature: a record whose size leaves exactly two bytes after its fields carries a CRC.
E2E-CRC is CRC-16/MCRF4XX (CGMS §2.5 / Annex: polynomial 0x1021 reflected (0x8408), initial 0xFFFF, no final XOR)
computed over the record's bytes before the CRC, sent little-endian. A bad CRC is reported (``crc_ok=False``), not
raised: the record is then untrusted, which :func:`devices.readings.to_readings` respects.
The order of the annunciation octets is disputed between implementations; they are kept raw.
"""

from __future__ import annotations

from dataclasses import dataclass

from devices.errors import DecodeError, EncodeError
from devices.gatt._wire import Reader, Writer, as_bytes
from devices.ieee11073 import Number

_TREND = 0x01
_QUALITY = 0x02
_WARNING = 0x20
_CAL_TEMP = 0x40
_STATUS = 0x80
_MIN_RECORD = 6


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16_mcrf4xx(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/MCRF4XX (check value of ``b"123456789"`` is 0x6F91)."""
    table = _CRC_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


@dataclass(frozen=True, slots=True)
class CgmRecord:
    """One CGM measurement record."""

    glucose: Number
    """mg/dL."""
    time_offset_min: int
    """Minutes since the session start (CGM Session Start Time 0x2AAA)."""
    warning_octet: int | None = None
    cal_temp_octet: int | None = None
    status_octet: int | None = None
    trend: Number | None = None
    """mg/dL/min."""
    quality: Number | None = None
    """Percent."""
    e2e_crc: bool = False
    """The record carries an E2E-CRC."""
    crc_ok: bool | None = None
    """None without CRC; False when the CRC did not match (the record must not be trusted)."""


@dataclass(frozen=True, slots=True)
class CgmMeasurement:
    """One CGM Measurement notification."""

    records: tuple[CgmRecord, ...]


def _decode_record(record: bytes, index: int) -> CgmRecord:
    r = Reader(record)
    r.u8("size")
    flags = r.u8("flags")
    glucose = r.sfloat("glucose")
    offset = r.u16("time_offset")
    warning = r.u8("warning_octet") if flags & _WARNING else None
    cal_temp = r.u8("cal_temp_octet") if flags & _CAL_TEMP else None
    status = r.u8("status_octet") if flags & _STATUS else None
    trend = r.sfloat("trend") if flags & _TREND else None
    quality = r.sfloat("quality") if flags & _QUALITY else None
    crc_ok: bool | None = None
    if r.remaining == 2:
        end = r.offset
        crc_ok = r.u16("e2e_crc") == crc16_mcrf4xx(record[:end])
    elif r.remaining != 0:
        raise DecodeError(
            "cgm_record",
            reason=f"record {index} size {len(record)} leaves {r.remaining} byte(s) after its fields (0 or 2 expected)",
        )
    return CgmRecord(glucose, offset, warning, cal_temp, status, trend, quality, crc_ok is not None, crc_ok)


def decode_cgm_measurement(data: bytes) -> CgmMeasurement:
    """Decode a 0x2AA7 value (all its records)."""
    data = as_bytes(data)
    records: list[CgmRecord] = []
    offset = 0
    if not data:
        raise DecodeError("size", expected=1, actual=0, offset=0)
    while offset < len(data):
        size = data[offset]
        if size < _MIN_RECORD:
            raise DecodeError("size", reason=f"record size {size} at offset {offset} is below {_MIN_RECORD}")
        if offset + size > len(data):
            raise DecodeError("cgm_record", expected=size, actual=len(data) - offset, offset=offset)
        records.append(_decode_record(data[offset : offset + size], len(records)))
        offset += size
    return CgmMeasurement(tuple(records))


def encode_cgm_record(rec: CgmRecord) -> bytes:
    """Encode one record (with a valid E2E-CRC when ``e2e_crc``)."""
    flags = (_TREND if rec.trend is not None else 0) | (_QUALITY if rec.quality is not None else 0)
    flags |= (_WARNING if rec.warning_octet is not None else 0) | (_CAL_TEMP if rec.cal_temp_octet is not None else 0)
    flags |= _STATUS if rec.status_octet is not None else 0
    w = Writer()
    w.u8(0, "size")  # patched below
    w.u8(flags, "flags")
    w.sfloat(rec.glucose)
    w.u16(rec.time_offset_min, "time_offset")
    for value, name in ((rec.warning_octet, "warning_octet"), (rec.cal_temp_octet, "cal_temp_octet")):
        if value is not None:
            w.u8(value, name)
    if rec.status_octet is not None:
        w.u8(rec.status_octet, "status_octet")
    if rec.trend is not None:
        w.sfloat(rec.trend)
    if rec.quality is not None:
        w.sfloat(rec.quality)
    size = len(w.buf) + (2 if rec.e2e_crc else 0)
    w.buf[0] = size
    if rec.e2e_crc:
        w.u16(crc16_mcrf4xx(bytes(w.buf)), "e2e_crc")
    return w.bytes()


def encode_cgm_measurement(m: CgmMeasurement) -> bytes:
    """Encode a 0x2AA7 value (records concatenated)."""
    if not m.records:
        raise EncodeError("cgm_measurement: at least one record")
    return b"".join(encode_cgm_record(rec) for rec in m.records)
