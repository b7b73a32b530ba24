"""MQTT topics and the reading batch payload v1 (contract: ``ARCHITECTURE.md``, section MQTT).

Batch (JSON, UTF-8)::

    {"v": 1, "gateway_id": "gw-1", "sent_at": "2026-11-29T10:00:01.120Z",
     "readings": [{"id": "<uuid4>", "device": {"address": "AA:..", "model": "..", "serial": ".."},
                   "metric": "systolic_bp", "value": 138.0, "unit": "mm[Hg]",
                   "measured_at": "...Z", "device_time": "2026-11-29T09:59:58" | null, "received_at": "...Z",
                   "group": "<uuid>" | null, "flags": {"cuff_too_loose": true}}]}

- Times are RFC 3339 in UTC with a ``Z`` suffix and millisecond precision. ``measured_at`` is the device's time
  corrected by the gateway's measured clock offset (or the gateway's reception time when the device gives no time);
  ``device_time`` is the device's own local time as reported (no zone, ISO 8601) or ``null``.
- ``id`` is assigned once at capture (:class:`gateway_agent.outbox.Outbox`); a resend carries the same id.
- ``value`` is always a JSON number (float); ``flags`` always an object (possibly empty).
- ``batch`` (receipts extension, ``docs/mqtt.md``): ``{"epoch": "<16 hex>", "seq": [first, last]}`` names the batch
  (outbox epoch and capture sequence range); the server echoes it on ``tbib/v1/gw/{id}/receipts`` once committed. A
  batch without it comes from an old gateway (PUBACK mode: no receipt).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from devices.readings import Reading

PAYLOAD_VERSION: Final = 1
TOPIC_ROOT: Final = "tbib/v1/gw"


def readings_topic(gateway_id: str) -> str:
    """``tbib/v1/gw/{gateway_id}/readings`` (QoS 1, one batch per publish)."""
    return f"{TOPIC_ROOT}/{gateway_id}/readings"


def status_topic(gateway_id: str) -> str:
    """``tbib/v1/gw/{gateway_id}/status`` (retained ``online`` / Last Will ``offline``)."""
    return f"{TOPIC_ROOT}/{gateway_id}/status"


def events_topic(gateway_id: str) -> str:
    """``tbib/v1/gw/{gateway_id}/events``."""
    return f"{TOPIC_ROOT}/{gateway_id}/events"


def commands_topic(gateway_id: str) -> str:
    """``tbib/v1/gw/{gateway_id}/commands`` (server to gateway)."""
    return f"{TOPIC_ROOT}/{gateway_id}/commands"


def receipts_topic(gateway_id: str) -> str:
    """``tbib/v1/gw/{gateway_id}/receipts`` (server to gateway, QoS 1: commit receipts)."""
    return f"{TOPIC_ROOT}/{gateway_id}/receipts"


def rfc3339(moment: datetime) -> str:
    """``2026-11-29T10:00:01.120Z``: UTC, millisecond precision; naive datetimes are refused."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: gateway times must be timezone-aware")
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def device_time_text(moment: datetime | None) -> str | None:
    """The device's own time as reported: naive local time in ISO 8601 (seconds), or RFC 3339 when it has a zone."""
    if moment is None:
        return None
    if moment.tzinfo is not None:
        return rfc3339(moment)
    return moment.isoformat(timespec="seconds")


def flags_object(flags: Any) -> dict[str, Any]:
    """Flags as a JSON object: a mapping is copied; a collection of names becomes ``{name: true}``; enums use names."""
    if flags is None:
        return {}
    if isinstance(flags, Mapping):
        return {str(k): _jsonable(v) for k, v in flags.items()}
    if isinstance(flags, str):
        return {flags: True}
    if isinstance(flags, Iterable):
        return {_name(f): True for f in flags}
    return {_name(flags): True}


def _name(flag: Any) -> str:
    name = getattr(flag, "name", None)
    return str(name).lower() if name else str(flag)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, datetime):
        return rfc3339(value) if value.tzinfo else value.isoformat()
    return str(value)


def reading_object(reading: Reading, *, address: str, model: str, serial: str, received_at: datetime) -> dict[str, Any]:
    """The payload object of one reading (without ``id``: the outbox assigns it at capture)."""
    return {
        "device": {"address": address, "model": model, "serial": serial},
        "metric": reading.metric,
        "value": float(reading.value),
        "unit": reading.unit,
        "measured_at": rfc3339(reading.measured_at or received_at),
        "device_time": device_time_text(reading.device_time),
        "received_at": rfc3339(received_at),
        "group": None if reading.group is None else str(reading.group),
        "flags": flags_object(reading.flags),
    }


def encode_batch(
    gateway_id: str, sent_at: datetime, bodies: Sequence[str], *, batch: Mapping[str, Any] | None = None
) -> bytes:
    """A v1 batch from stored reading texts (each a JSON object with its ``id``), without re-encoding them.

    ``batch``: the batch's name for commit receipts (:func:`gateway_agent.receipts.batch_field`).
    """
    obj: dict[str, Any] = {"v": PAYLOAD_VERSION, "gateway_id": gateway_id, "sent_at": rfc3339(sent_at)}
    if batch is not None:
        obj["batch"] = dict(batch)
    head = json.dumps(obj, separators=(",", ":"))
    return (head[:-1] + ',"readings":[' + ",".join(bodies) + "]}").encode("utf-8")


def encode_event(gateway_id: str, at: datetime, kind: str, **fields: Any) -> bytes:
    """An event on ``.../events``: ``{"v":1,"gateway_id","at","event":kind, ...fields}``."""
    obj = {"v": PAYLOAD_VERSION, "gateway_id": gateway_id, "at": rfc3339(at), "event": kind}
    obj.update({k: _jsonable(v) for k, v in fields.items()})
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")
