"""`tbib decode CHAR HEX`: decode one Bluetooth SIG characteristic value and print it as one JSON object.

CHAR is a 16-bit UUID (``2A37``, ``0x2a37``, the full 128-bit form) or a codec name (``heart_rate_measurement``),
or ``sfloat`` / ``float`` for a bare IEEE 11073 number. HEX is the value exactly as the bytes arrive on the wire (fields
are little-endian: ``tbib decode sfloat 65F0`` is 10.1); spaces, colons, dashes and a ``0x`` prefix are accepted.
Exit codes: 0 decoded; 1 malformed HEX or bytes (one line on stderr naming the field); 2 unknown CHAR or bad usage.
Measurements also carry ``readings``, the normalized list of :func:`devices.readings.to_readings`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from devices.errors import DecodeError, DevicesError, UnknownCharacteristicError
from devices.gatt import CHARACTERISTICS, get_codec
from devices.ieee11073 import decode_float, decode_sfloat
from devices.readings import to_readings
from devices.render import number_json, to_json

_SEPARATORS: Final = re.compile(r"[\s:,\-_]")
_NUMBER_SIZES: Final = {"sfloat": 2, "float": 4}


def add_parser(sub: Any) -> None:
    """Register `tbib decode`."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "decode",
        help="decode a Bluetooth SIG characteristic value given as hex (one JSON object on stdout)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("char", metavar="CHAR", help="16-bit UUID (2A37, 2A35, ...), codec name, 'sfloat' or 'float'")
    parser.add_argument("hex", metavar="HEX", nargs="+", help="the value's bytes in wire order, e.g. 06 48 or 06:48")
    parser.add_argument(
        "--received-at",
        metavar="ISO",
        help="reception time for the readings (aware ISO 8601; default: now)",
    )
    parser.add_argument(
        "--clock-offset",
        metavar="SECONDS",
        type=float,
        default=0.0,
        help="gateway UTC clock minus device clock (read as UTC), for the readings' measured_at",
    )
    parser.add_argument("--pretty", action="store_true", help="indent the JSON")
    parser.set_defaults(func=run)


def parse_hex(text: str) -> bytes:
    """Bytes of ``"06 48"``, ``"06:48"``, ``"0x0648"`` (case-insensitive); ``ValueError`` otherwise."""
    tokens = _SEPARATORS.split(text)
    cleaned = "".join(t[2:] if t[:2].lower() == "0x" else t for t in tokens)
    if len(cleaned) % 2:
        raise ValueError(f"odd number of hex digits in {text!r}")
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise ValueError(f"not hexadecimal: {text!r}") from None


def _known() -> list[str]:
    return [f"{u:04X}" for u in CHARACTERISTICS] + list(_NUMBER_SIZES)


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"tbib decode: error: {message}\n")
    return code


def decode_to_json(char: str, data: bytes, *, received_at: datetime, clock_offset: timedelta) -> dict[str, Any]:
    """The JSON object printed by ``tbib decode`` (raises DevicesError for unknown CHAR or malformed bytes)."""
    kind = char.strip().lower()
    if kind in _NUMBER_SIZES:
        size = _NUMBER_SIZES[kind]
        if len(data) != size:
            raise DecodeError("value", reason=f"expected {size} bytes, got {len(data)}")
        raw = int.from_bytes(data, "little")
        number = decode_sfloat(raw) if size == 2 else decode_float(raw)
        return {"type": kind, "raw": f"0x{raw:0{2 * size}X}"} | number_json(number)
    codec = get_codec(char)
    value = codec.decode(data)
    out: dict[str, Any] = to_json(value)
    out = {"characteristic": codec.name, "uuid": f"{codec.uuid16:04X}"} | out
    if codec.is_measurement:
        readings = to_readings(value, received_at=received_at, clock_offset=clock_offset)
        out["readings"] = [r.to_json() for r in readings]
    return out


def run(args: argparse.Namespace) -> int:
    """Entry point of `tbib decode`; returns the exit code."""
    if args.char.strip().lower() not in _NUMBER_SIZES:
        try:
            get_codec(args.char)
        except UnknownCharacteristicError as exc:
            return _fail(f"{exc} (known: {', '.join(sorted(_known()))})", 2)
    try:
        data = parse_hex(" ".join(args.hex))
    except ValueError as exc:
        return _fail(str(exc), 1)
    if args.received_at:
        try:
            received_at = datetime.fromisoformat(args.received_at.replace("Z", "+00:00"))
        except ValueError:
            return _fail(f"--received-at: not an ISO 8601 time: {args.received_at!r}", 2)
        if received_at.tzinfo is None:
            return _fail("--received-at needs a timezone (e.g. Z)", 2)
    else:
        received_at = datetime.now(UTC)
    try:
        out = decode_to_json(
            args.char, data, received_at=received_at, clock_offset=timedelta(seconds=args.clock_offset)
        )
    except DevicesError as exc:
        return _fail(f"{args.char}: {exc}", 1)
    text = json.dumps(out, ensure_ascii=False, indent=2 if args.pretty else None, allow_nan=False)
    sys.stdout.write(text + "\n")
    return 0
