"""Heart Rate Measurement 0x2A37 (HRS v1.0 §3.1.1; GSS "Heart Rate Measurement"), notified.

Layout: flags u8, heart rate (u8, or u16 when flags bit 0), [energy expended u16 kJ], [RR intervals u16 x n, 1/1024 s].
Flags (HRS v1.0 §3.1.1.1): bit 0 heart-rate value format (0 UINT8, 1 UINT16); bits 1-2 sensor contact status (0b00 and
0b01 "feature not supported", 0b10 supported but no contact, 0b11 supported and contact); bit 3 energy expended present;
bit 4 RR-interval(s) present ("one or more", oldest first, §3.1.1.5); bits 5-7 reserved (ignored on decode).
"""

from __future__ import annotations

from dataclasses import dataclass

from devices.errors import DecodeError
from devices.gatt._wire import Reader, Writer, as_bytes

_HR_UINT16 = 0x01
_CONTACT_DETECTED = 0x02  # bit 1 (meaningful only with bit 2)
_CONTACT_SUPPORTED = 0x04  # bit 2
_ENERGY = 0x08
_RR = 0x10

RR_RESOLUTION_HZ = 1024  # RR intervals are in 1/1024 s (HRS v1.0 §3.1.1.5)


@dataclass(frozen=True, slots=True)
class HeartRateMeasurement:
    """One Heart Rate Measurement notification."""

    heart_rate: int
    """Beats per minute."""
    sensor_contact: bool | None = None
    """True contact, False no contact, None when the sensor does not support contact detection."""
    energy_expended_kj: int | None = None
    """Accumulated energy expended in kJ since the last reset (0xFFFF = the maximum was reached)."""
    rr_intervals: tuple[int, ...] = ()
    """RR intervals in 1/1024 s, oldest first; empty when absent."""
    uint16_format: bool = False
    """The heart rate was (or is to be) sent as UINT16 (flags bit 0)."""

    @property
    def rr_intervals_s(self) -> tuple[float, ...]:
        """RR intervals in seconds."""
        return tuple(rr / RR_RESOLUTION_HZ for rr in self.rr_intervals)


def decode_heart_rate_measurement(data: bytes) -> HeartRateMeasurement:
    """Decode a 0x2A37 value."""
    r = Reader(as_bytes(data))
    flags = r.u8("flags")
    heart_rate = r.u16("heart_rate") if flags & _HR_UINT16 else r.u8("heart_rate")
    contact: bool | None = bool(flags & _CONTACT_DETECTED) if flags & _CONTACT_SUPPORTED else None
    energy = r.u16("energy_expended") if flags & _ENERGY else None
    rr: tuple[int, ...] = ()
    if flags & _RR:
        count, odd = divmod(r.remaining, 2)
        if count == 0 or odd:
            # HRS §3.1.1.5: one or more UINT16 values fill the rest of the notification.
            raise DecodeError("rr_interval", expected=2 * (count + 1), actual=r.remaining, offset=r.offset)
        rr = tuple(r.u16("rr_interval") for _ in range(count))
    return HeartRateMeasurement(heart_rate, contact, energy, rr, bool(flags & _HR_UINT16))


def encode_heart_rate_measurement(m: HeartRateMeasurement) -> bytes:
    """Encode a 0x2A37 value (UINT16 when asked or when the rate exceeds 255)."""
    wide = m.uint16_format or m.heart_rate > 0xFF
    flags = _HR_UINT16 if wide else 0
    if m.sensor_contact is not None:
        flags |= _CONTACT_SUPPORTED | (_CONTACT_DETECTED if m.sensor_contact else 0)
    if m.energy_expended_kj is not None:
        flags |= _ENERGY
    if m.rr_intervals:
        flags |= _RR
    w = Writer()
    w.u8(flags, "flags")
    if wide:
        w.u16(m.heart_rate, "heart_rate")
    else:
        w.u8(m.heart_rate, "heart_rate")
    if m.energy_expended_kj is not None:
        w.u16(m.energy_expended_kj, "energy_expended")
    for rr in m.rr_intervals:
        w.u16(rr, "rr_interval")
    return w.bytes()


decode = decode_heart_rate_measurement
encode = encode_heart_rate_measurement
