"""The fast path of :func:`teleconsult.ingest.payload.decode_batch`: msgspec decodes a batch straight into typed
structs (in C: no dict per reading, unknown members skipped, JSON types checked), then the checks that remain are
done in one pass. It answers only for a message whose every reading is valid; anything else (a type that does not
fit, one refused reading, invalid JSON) returns ``None`` and the message is judged again by the general path in
:mod:`.payload`, which alone words the reasons. So both paths agree by construction: the fast one accepts a
subset of what the general one accepts, reading the same values (``tests/teleconsult/ingest/test_fastdecode.py``
compares them on the gateway's payloads and on fuzzed ones).
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any, Final

import msgspec
import orjson

from teleconsult.ingest import payload as _p
from teleconsult.ingest.receipts import parse_batch_ref

#: Every id of a message at once: ``id,id,...,`` (a comma cannot be part of a UUID, so each one matches whole).
_IDS_RE: Final = re.compile(rf"(?:{_p.UUID_PATTERN},)*")
_uuid_match: Final = re.compile(_p.UUID_PATTERN).fullmatch
_fromisoformat: Final = datetime.fromisoformat
_isfinite: Final = math.isfinite


class _Device(msgspec.Struct):
    address: str


class _Reading(msgspec.Struct):
    id: str
    device: _Device
    metric: str
    value: float  # a JSON integer too (as float); not a boolean
    unit: str
    measured_at: str
    received_at: str | None = None
    group: str | None = None
    flags: dict[str, Any] | None = None


class _Batch(msgspec.Struct):
    v: int  # not a boolean, nor 1.0 (the general path takes those)
    gateway_id: str
    sent_at: str
    readings: list[_Reading]
    batch: Any = None


_decode: Final = msgspec.json.Decoder(_Batch).decode


def decode_valid(gw: str, payload: bytes, vocab: _p.Vocabulary, now: datetime) -> _p.Decoded | None:
    """The :class:`~.payload.Decoded` of a message whose envelope and readings are all valid, else ``None``."""
    try:
        doc = _decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if doc.v != 1 or doc.gateway_id != gw:
        return None
    sent = _p.parse_time(doc.sent_at)
    if sent is None:
        return None
    readings = doc.readings
    ids = ",".join([r.id for r in readings]) + ("," if readings else "")
    if len(ids) != 37 * len(readings) or not _IDS_RE.fullmatch(ids):  # n ids of 36 characters, no comma inside
        return None
    latest = now + _p.MAX_FUTURE
    accepted = getattr(vocab, "accepted", ())
    unit_ok = vocab.unit_ok
    valid: list[_p.ValidReading] = []
    newest: dict[tuple[str, str], _p.ValidReading] = {}
    for r in readings:
        metric = r.metric
        unit = r.unit
        if (metric, unit) not in accepted and not unit_ok(metric, unit):
            return None
        value = r.value
        address = r.device.address
        m_raw = r.measured_at
        if not _isfinite(value) or not 0 < len(address) <= 64 or len(m_raw) > 40:
            return None
        try:
            measured = _fromisoformat(m_raw)
        except ValueError:
            return None
        if measured.tzinfo is None or measured > latest:
            return None
        received = r.received_at
        if received is None:
            received = "\\N"
        elif received != m_raw and _p.parse_time(received) is None:
            return None
        group = r.group
        if group is None:
            group = "\\N"
        elif not _uuid_match(group):
            return None
        flags = r.flags
        if flags is None:
            flags_text = "\\N"
        elif not flags:
            flags_text = "{}"
        else:
            dumped = orjson.dumps(flags).decode()
            if "\\u0000" in dumped:
                return None
            flags_text = dumped.replace("\\", "\\\\")
        rid = r.id
        t = measured.timestamp()
        row = f"{metric}\t{value!r}\t{unit}\t{m_raw}\t{received}\t{rid}\t{group}\t{flags_text}\n"
        v = (address, rid, row, metric, unit, value, measured, t)
        valid.append(v)
        key = (address, metric)
        best = newest.get(key)
        if best is None or t > best[7]:  # R_T
            newest[key] = v
    return _p.Decoded(gw, sent.timestamp(), valid, [], newest, parse_batch_ref(doc.batch), [])
