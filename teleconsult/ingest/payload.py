"""Reading batch payload v1 (ARCHITECTURE.md, MQTT contract): validation at the trust boundary, no I/O.

Two paths give the same verdicts:
- :func:`decode_batch` is the hot path: orjson plus hand-written checks, a few us per reading, no pydantic object per
  reading.
- :class:`BatchV1` / :class:`ReadingV1` are the pydantic models of the same contract (documentation, JSON schema, and
  the slow path that explains *why* a message-level check failed).

Verdicts are values, not exceptions: :func:`decode_batch` returns a :class:`Decoded` (valid readings plus per-reading
rejects) or a :class:`Rejected` (the whole message is refused: not JSON, wrong version, gateway mismatch, too large).
Readings are kept as :class:`ValidReading` tuples ready to become COPY rows once the device binding is known
(:func:`copy_rows`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, NamedTuple, Protocol

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from teleconsult.ingest.receipts import BatchRef, parse_batch_ref

TOPIC_PREFIX: Final = "tbib/v1/gw/"
TOPIC_SUFFIX: Final = "/readings"
#: Readings measured further in the future than this (gateway clock vs server clock) are refused.
MAX_FUTURE: Final = timedelta(hours=24)
_UUID_RE: Final = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_SAFE_TEXT_RE: Final = re.compile(r"[^\t\n\r\\]{1,64}")


class Vocabulary(Protocol):
    """The metric vocabulary (``devices.codes``): known metric names and their allowed UCUM units."""

    @property
    def metrics(self) -> Collection[str]: ...

    def unit_ok(self, metric: str, unit: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class StaticVocabulary:
    """A :class:`Vocabulary` from a mapping metric -> allowed units (tests, or a server with a custom vocabulary)."""

    units: Mapping[str, Collection[str]]

    @property
    def metrics(self) -> Collection[str]:
        return self.units.keys()

    def unit_ok(self, metric: str, unit: str) -> bool:
        return unit in self.units.get(metric, ())


@dataclass(frozen=True, slots=True)
class FunctionVocabulary:
    """A :class:`Vocabulary` over a metric collection and a ``(metric, unit) -> bool`` predicate (memoized: only
    accepted pairs are remembered, so the memo is bounded by the vocabulary)."""

    metrics: Collection[str]
    predicate: Callable[[str, str], bool]
    accepted: set[tuple[str, str]] = field(default_factory=set)

    def unit_ok(self, metric: str, unit: str) -> bool:
        if (metric, unit) in self.accepted:
            return True
        if self.predicate(metric, unit):
            self.accepted.add((metric, unit))
            return True
        return False


def default_vocabulary() -> Vocabulary:
    """The project vocabulary from ``devices.codes`` (``METRICS`` and ``is_valid_unit``)."""
    from devices.codes import METRICS, is_valid_unit

    return FunctionVocabulary(frozenset(METRICS), is_valid_unit)


class ValidReading(NamedTuple):
    """One reading that passed every check except the device binding.

    ``row`` is its COPY text row from ``metric`` on (see :data:`STAGING_COLUMNS`); :func:`copy_rows` prepends the
    patient and device ids once the device's binding is known.
    """

    address: str
    reading_id: str
    row: str
    metric: str
    unit: str
    value: float
    measured: datetime


@dataclass(frozen=True, slots=True)
class Decoded:
    """A message whose envelope is valid. ``rejects`` are per-reading reasons (``readings[3]: unknown metric 'x'``)."""

    gateway_id: str
    sent_at: float | None
    readings: list[ValidReading]
    rejects: list[str]
    newest: dict[tuple[str, str], ValidReading]
    """The newest valid reading per (device address, metric) of this message (for ``latest_readings``)."""
    batch: BatchRef | None = None
    """The batch's name for commit receipts (``None``: a gateway older than receipts)."""
    reject_ids: list[str | None] = field(default_factory=list)
    """The reading id of each of ``rejects`` when it could be read (same order)."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message refused as a whole; ``gateway_id`` is the topic's when it could be read."""

    gateway_id: str | None
    reason: str
    batch: BatchRef | None = None
    """The batch's name when the JSON could be read: the gateway gets a receipt rejecting the whole batch."""


def gateway_of_topic(topic: str) -> str | None:
    """``tbib/v1/gw/{gateway_id}/readings`` -> gateway_id, else ``None``."""
    if not (topic.startswith(TOPIC_PREFIX) and topic.endswith(TOPIC_SUFFIX)):
        return None
    gw = topic[len(TOPIC_PREFIX) : -len(TOPIC_SUFFIX)]
    return gw if gw and "/" not in gw else None


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo is not None else None


def _check_reading(r: object, vocab: Vocabulary, latest: datetime) -> ValidReading | str:
    """A :class:`ValidReading` or the reason it is refused (pure; the hot path: keep it lean)."""
    if not isinstance(r, dict):
        return "not an object"
    rid = r.get("id")
    if not isinstance(rid, str) or not _UUID_RE.fullmatch(rid):
        return "id must be a UUID string"
    device = r.get("device")
    address = device.get("address") if isinstance(device, dict) else None
    if not isinstance(address, str) or not 0 < len(address) <= 64:
        return "device.address must be a non-empty string (max 64)"
    metric = r.get("metric")
    unit = r.get("unit")
    # accepted (metric, unit) pairs come from the vocabulary: plain UCUM codes, safe in COPY text
    if not isinstance(metric, str) or not isinstance(unit, str) or not vocab.unit_ok(metric, unit):
        if not isinstance(metric, str) or metric not in vocab.metrics:
            return f"unknown metric {str(metric)[:40]!r}"
        return f"wrong unit {str(unit)[:40]!r} for {metric}"
    value: Any = r.get("value")
    kind = value.__class__  # bool is not int here, on purpose
    if kind is int:
        if not -1e308 < value < 1e308:
            return "value must be a finite number"
    elif kind is not float or not math.isfinite(value):
        return "value must be a finite number"
    m_raw = r.get("measured_at")
    measured = _parse_time(m_raw)
    if measured is None:
        return "measured_at must be an ISO 8601 time with a UTC offset"
    if measured > latest:
        return "measured_at is more than 24 h in the future"
    rec_raw = r.get("received_at")
    if rec_raw is None:
        received = "\\N"
    elif rec_raw == m_raw or _parse_time(rec_raw) is not None:
        received = rec_raw
    else:
        return "received_at must be an ISO 8601 time with a UTC offset or null"
    group = r.get("group")
    if group is None:
        group_id = "\\N"
    elif isinstance(group, str) and _UUID_RE.fullmatch(group):
        group_id = group
    else:
        return "group must be a UUID string or null"
    flags = r.get("flags")
    if flags is None:
        flags_text = "\\N"
    elif flags == {}:
        flags_text = "{}"
    elif isinstance(flags, dict):
        dumped = orjson.dumps(flags).decode()
        if "\\u0000" in dumped:
            return "flags must not contain NUL characters"
        flags_text = dumped.replace("\\", "\\\\")
    else:
        return "flags must be an object or null"
    value = float(value)
    return ValidReading(
        address,
        rid,
        f"{metric}\t{value!r}\t{unit}\t{m_raw}\t{received}\t{rid}\t{group_id}\t{flags_text}\n",
        metric,
        unit,
        value,
        measured,
    )


def decode_batch(
    topic: str, payload: bytes, *, vocab: Vocabulary, now: datetime, max_bytes: int = 1 << 20
) -> Decoded | Rejected:
    """Validate one MQTT message of payload v1 published on ``topic`` (pure: ``now`` is the server clock)."""
    gw = gateway_of_topic(topic)
    if gw is None:
        return Rejected(None, f"topic {topic[:200]!r} is not tbib/v1/gw/{{gateway_id}}/readings")
    if len(payload) > max_bytes:
        return Rejected(gw, f"payload too large: {len(payload)} bytes > {max_bytes}")
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return Rejected(gw, f"invalid JSON: {exc}"[:300])
    if not isinstance(doc, dict):
        return Rejected(gw, "payload must be a JSON object")
    ref = parse_batch_ref(doc.get("batch")) if "batch" in doc else None
    if doc.get("v") != 1 or isinstance(doc.get("v"), bool):
        return Rejected(gw, f"unsupported payload version {str(doc.get('v'))[:20]!r} (expected 1)", ref)
    if doc.get("gateway_id") != gw:
        return Rejected(gw, f"gateway_id {str(doc.get('gateway_id'))[:80]!r} does not match the topic's {gw!r}", ref)
    readings = doc.get("readings")
    if not isinstance(readings, list):
        return Rejected(gw, "readings must be a list", ref)
    sent = _parse_time(doc.get("sent_at"))
    if sent is None:
        return Rejected(gw, "sent_at must be an ISO 8601 time with a UTC offset", ref)
    latest = now + MAX_FUTURE
    valid: list[ValidReading] = []
    rejects: list[str] = []
    reject_ids: list[str | None] = []
    newest: dict[tuple[str, str], ValidReading] = {}
    for i, r in enumerate(readings):
        checked = _check_reading(r, vocab, latest)
        if isinstance(checked, str):
            rejects.append(f"readings[{i}]: {checked}")
            rid = r.get("id") if isinstance(r, dict) else None
            reject_ids.append(rid if isinstance(rid, str) and _UUID_RE.fullmatch(rid) else None)
            continue
        valid.append(checked)
        key = (checked.address, checked.metric)
        best = newest.get(key)
        if best is None or checked.measured > best.measured:
            newest[key] = checked
    return Decoded(gw, sent.timestamp(), valid, rejects, newest, ref, reject_ids)


class Binding(Protocol):
    """What a device resolves to (:class:`teleconsult.store.enrolment.DeviceBinding`)."""

    @property
    def device_id(self) -> Any: ...

    @property
    def patient_id(self) -> Any: ...

    @property
    def monitoring_consent(self) -> bool: ...


class LatestRow(NamedTuple):
    """A candidate row of ``latest_readings``."""

    patient_id: Any
    metric: str
    value: float
    unit: str
    measured_at: datetime
    device_id: Any
    reading_id: str


#: Reason given for readings of a patient without a remote-monitoring consent in force: none recorded, or the newest
#: decision is a withdrawal (no decision on file is no consent).
CONSENT_WITHDRAWN: Final = "no remote_monitoring consent in force (none given, or withdrawn): reading not stored"


#: Per-minute aggregate of a batch: (patient id as str, metric, minute since the epoch) -> [min, min_t, max, max_t, sum,
#: count, first_t, last_t] (epoch seconds). Ties: the earliest minimum, the latest maximum (as ``readings_1m``).
MinuteDelta = dict[tuple[Any, str, int], list[float]]


def copy_rows(
    decoded: Decoded,
    bindings: Mapping[tuple[str, str], Binding],
    latest: dict[tuple[str, str], LatestRow] | None = None,
    minutes: MinuteDelta | None = None,
) -> tuple[list[str], list[str]]:
    """COPY text lines (see ``STAGING_COLUMNS``) and the readings refused (device not enrolled, no consent in force).

    With ``latest``, also keeps there the newest row per (patient id, metric) seen so far (merged across messages);
    with ``minutes``, the per-minute rollup of the accepted readings (merged across messages; the writer sends it
    with the batch instead of having PostgreSQL aggregate the rows a second time).
    """
    lines: list[str] = []
    rejects: list[str] = []
    gw = decoded.gateway_id
    cache: dict[str, str | None] = {}
    pids: dict[str, Any] = {}
    for r in decoded.readings:
        prefix = cache.get(r.address, "")
        if prefix == "":
            b = bindings.get((gw, r.address))
            if b is None:
                prefix = None
            elif not b.monitoring_consent:
                prefix = CONSENT_WITHDRAWN
            else:
                prefix = f"{b.patient_id}\t{b.device_id}\t"
                pids[r.address] = str(b.patient_id)  # a str caches its hash (a UUID hashes in Python code)
            cache[r.address] = prefix
        if prefix is None:
            rejects.append(f"reading {r.reading_id}: device {r.address!r} is not enrolled to gateway {gw!r}")
            continue
        if prefix is CONSENT_WITHDRAWN:
            rejects.append(f"reading {r.reading_id}: {CONSENT_WITHDRAWN}")
            continue
        lines.append(prefix + r.row)
        if minutes is not None:
            t = r.measured.timestamp()
            v = r.value
            minute = (pids[r.address], r.metric, int(t // 60))
            a = minutes.get(minute)
            if a is None:
                minutes[minute] = [v, t, v, t, v, 1, t, t]
                continue
            if v < a[0] or (v == a[0] and t < a[1]):
                a[0], a[1] = v, t
            if v > a[2] or (v == a[2] and t > a[3]):
                a[2], a[3] = v, t
            a[4] += v
            a[5] += 1
            if t < a[6]:
                a[6] = t
            elif t > a[7]:
                a[7] = t
    if latest is not None:
        for (address, metric), r in decoded.newest.items():
            b = bindings.get((gw, address))
            if b is None or not b.monitoring_consent:
                continue
            key = (str(b.patient_id), metric)
            cur = latest.get(key)
            if cur is None or r.measured > cur.measured_at:
                latest[key] = LatestRow(b.patient_id, metric, r.value, r.unit, r.measured, b.device_id, r.reading_id)
    return lines, rejects


#: Column order of :func:`copy_rows` lines.
STAGING_COLUMNS: Final = (
    "patient_id",
    "device_id",
    "metric",
    "value",
    "unit",
    "measured_at",
    "received_at",
    "reading_id",
    "group_id",
    "flags",
)


# ---------------------------------------------------------------- pydantic models of the same contract


class DeviceV1(BaseModel):
    """``readings[].device``."""

    model_config = ConfigDict(extra="allow")
    address: str = Field(min_length=1, max_length=64)
    model: str | None = None
    serial: str | None = None


class ReadingV1(BaseModel):
    """One element of ``readings``."""

    model_config = ConfigDict(extra="allow")
    id: str = Field(pattern=_UUID_RE.pattern)
    device: DeviceV1
    metric: str
    value: float = Field(allow_inf_nan=False)
    unit: str
    measured_at: datetime
    device_time: str | None = None
    received_at: datetime | None = None
    group: str | None = Field(default=None, pattern=_UUID_RE.pattern)
    flags: dict[str, Any] | None = None


class BatchV1(BaseModel):
    """Reading batch payload v1."""

    model_config = ConfigDict(extra="allow")
    v: Literal[1]
    gateway_id: str
    sent_at: datetime
    readings: list[ReadingV1]


def explain(payload: bytes) -> str:
    """The pydantic account of why ``payload`` is not a valid batch (slow path, for humans), or ``"valid"``."""
    try:
        BatchV1.model_validate_json(payload)
    except ValidationError as exc:
        return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
    return "valid"


def utc_now() -> datetime:
    """The server clock (UTC)."""
    return datetime.now(UTC)
