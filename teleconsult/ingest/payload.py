"""Reading batch payload v1 (ARCHITECTURE.md, MQTT contract): validation at the trust boundary, no I/O.

Two paths give the same verdicts:
- :func:`decode_batch` is the hot path: a message whose readings are all valid is decoded by msgspec into typed structs
  (:mod:`.fastdecode`, about 1 us per reading); any other one again by orjson plus hand-written checks, which word
  the per-reading reasons. No pydantic object per reading.
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
from typing import Any, Final, NamedTuple, Protocol

import orjson

from teleconsult.ingest.models import UUID_PATTERN, BatchV1, DeviceV1, ReadingV1, explain
from teleconsult.ingest.receipts import BatchRef, parse_batch_ref

TOPIC_PREFIX: Final = "tbib/v1/gw/"
TOPIC_SUFFIX: Final = "/readings"
#: Readings measured further in the future than this (gateway clock vs server clock) are refused.
MAX_FUTURE: Final = timedelta(hours=24)
_UUID_RE: Final = re.compile(UUID_PATTERN)
_SAFE_TEXT_RE: Final = re.compile(r"[^\t\n\r\\]{1,64}")


__all__ = ["UUID_PATTERN", "BatchV1", "DeviceV1", "ReadingV1", "explain"]  # and the names defined here


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


#: One reading that passed every check except the device binding: a plain tuple ``(address, reading_id, row,
#: metric, unit, value, measured, t)``, read with the ``R_*`` indexes below (one is made per reading; a NamedTuple
#: instance costs ~0.5 us more to make). ``row`` is its COPY text row from ``metric`` on (see
#: :data:`STAGING_COLUMNS`): :func:`copy_rows` prepends the patient and device ids once the device's binding is
#: known. ``measured`` is the aware datetime, ``t`` the same in seconds since the epoch.
ValidReading = tuple[str, str, str, str, str, float, datetime, float]
R_ADDRESS: Final = 0
R_ID: Final = 1
R_ROW: Final = 2
R_METRIC: Final = 3
R_UNIT: Final = 4
R_VALUE: Final = 5
R_MEASURED: Final = 6
R_T: Final = 7


@dataclass(slots=True)  # not frozen: one is made per message, and a frozen dataclass is slower to make
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


def parse_time(value: object) -> datetime | None:
    """An ISO 8601 time with a UTC offset (at most 40 characters), else ``None``."""
    if value.__class__ is not str or len(value) > 40:
        return None
    try:
        t = _fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo is not None else None


_fromisoformat: Final = datetime.fromisoformat
_uuid_match: Final = _UUID_RE.fullmatch
_isfinite: Final = math.isfinite


def _check_reading(
    r: object, vocab: Vocabulary, latest: datetime, accepted: Collection[tuple[str, str]] = ()
) -> ValidReading | str:
    """A :class:`ValidReading` or the reason it is refused (pure; the hot path: keep it lean). ``accepted``: (metric,
    unit) pairs known good (the vocabulary's memo), checked before asking ``vocab``."""
    if not isinstance(r, dict):
        return "not an object"
    get = r.get
    rid = get("id")
    if rid.__class__ is not str or len(rid) != 36 or not _uuid_match(rid):
        return "id must be a UUID string"
    device = get("device")
    address = device.get("address") if isinstance(device, dict) else None
    if address.__class__ is not str or not 0 < len(address) <= 64:
        return "device.address must be a non-empty string (max 64)"
    metric = get("metric")
    unit = get("unit")
    # accepted (metric, unit) pairs come from the vocabulary: plain UCUM codes, safe in COPY text
    if (
        metric.__class__ is not str
        or unit.__class__ is not str
        or ((metric, unit) not in accepted and not vocab.unit_ok(metric, unit))
    ):
        if not isinstance(metric, str) or metric not in vocab.metrics:
            return f"unknown metric {str(metric)[:40]!r}"
        return f"wrong unit {str(unit)[:40]!r} for {metric}"
    value: Any = get("value")
    kind = value.__class__  # bool is not int here, on purpose
    if kind is float:
        if not _isfinite(value):
            return "value must be a finite number"
    elif kind is int:
        if not -1e308 < value < 1e308:
            return "value must be a finite number"
        value = float(value)
    else:
        return "value must be a finite number"
    m_raw = get("measured_at")
    if m_raw.__class__ is not str or len(m_raw) > 40:
        return "measured_at must be an ISO 8601 time with a UTC offset"
    try:
        measured = _fromisoformat(m_raw)
    except ValueError:
        return "measured_at must be an ISO 8601 time with a UTC offset"
    if measured.tzinfo is None:
        return "measured_at must be an ISO 8601 time with a UTC offset"
    if measured > latest:
        return "measured_at is more than 24 h in the future"
    rec_raw = get("received_at")
    if rec_raw is None:
        received = "\\N"
    elif rec_raw == m_raw or parse_time(rec_raw) is not None:
        received = rec_raw
    else:
        return "received_at must be an ISO 8601 time with a UTC offset or null"
    group = get("group")
    if group is None:
        group_id = "\\N"
    elif group.__class__ is str and _uuid_match(group):
        group_id = group
    else:
        return "group must be a UUID string or null"
    flags = get("flags")
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
    row = f"{metric}\t{value!r}\t{unit}\t{m_raw}\t{received}\t{rid}\t{group_id}\t{flags_text}\n"
    return (address, rid, row, metric, unit, value, measured, measured.timestamp())


def decode_batch(
    topic: str, payload: bytes, *, vocab: Vocabulary, now: datetime, max_bytes: int = 1 << 20
) -> Decoded | Rejected:
    """Validate one MQTT message of payload v1 published on ``topic`` (pure: ``now`` is the server clock)."""
    gw = gateway_of_topic(topic)
    if gw is None:
        return Rejected(None, f"topic {topic[:200]!r} is not tbib/v1/gw/{{gateway_id}}/readings")
    if len(payload) > max_bytes:
        return Rejected(gw, f"payload too large: {len(payload)} bytes > {max_bytes}")
    fast = fastdecode.decode_valid(gw, payload, vocab, now)  # every reading valid: the common case
    if fast is not None:
        return fast
    return decode_general(gw, payload, vocab=vocab, now=now)


def decode_general(gw: str, payload: bytes, *, vocab: Vocabulary, now: datetime) -> Decoded | Rejected:
    """The general path of :func:`decode_batch` for a message on gateway ``gw``'s topic (any message: it words every
    reason); the fast path (:mod:`.fastdecode`) answers the same for the messages it takes."""
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
    sent = parse_time(doc.get("sent_at"))
    if sent is None:
        return Rejected(gw, "sent_at must be an ISO 8601 time with a UTC offset", ref)
    latest = now + MAX_FUTURE
    accepted = getattr(vocab, "accepted", ())
    valid: list[ValidReading] = []
    rejects: list[str] = []
    reject_ids: list[str | None] = []
    newest: dict[tuple[str, str], ValidReading] = {}
    for i, r in enumerate(readings):
        checked = _check_reading(r, vocab, latest, accepted)
        if isinstance(checked, str):
            rejects.append(f"readings[{i}]: {checked}")
            rid = r.get("id") if isinstance(r, dict) else None
            reject_ids.append(rid if isinstance(rid, str) and _UUID_RE.fullmatch(rid) else None)
            continue
        valid.append(checked)
        key = (checked[R_ADDRESS], checked[R_METRIC])
        best = newest.get(key)
        if best is None or checked[R_T] > best[R_T]:
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
    rejects: list[str] = []
    gw = decoded.gateway_id
    readings = decoded.readings
    # the bindings of the message's devices (every address is a key of ``newest``): usually one device
    prefixes: dict[str, str | None] = {}
    pids: dict[str, str] = {}
    for address, _metric in decoded.newest:
        if address in prefixes:
            continue
        b = bindings.get((gw, address))
        if b is None:
            prefixes[address] = None
        elif not b.monitoring_consent:
            prefixes[address] = CONSENT_WITHDRAWN
        else:
            prefixes[address] = f"{b.patient_id}\t{b.device_id}\t"
            pids[address] = str(b.patient_id)  # a str caches its hash (a UUID hashes in Python code)
    if len(pids) == len(prefixes) == 1:  # one enrolled device: every reading is kept
        ((address, prefix),) = prefixes.items()
        assert prefix is not None
        lines = [prefix + r[R_ROW] for r in readings]
        kept = readings
    else:
        lines = []
        kept = []
        for r in readings:
            prefix = prefixes[r[R_ADDRESS]]
            if prefix is None:
                rejects.append(f"reading {r[R_ID]}: device {r[R_ADDRESS]!r} is not enrolled to gateway {gw!r}")
            elif prefix is CONSENT_WITHDRAWN:
                rejects.append(f"reading {r[R_ID]}: {CONSENT_WITHDRAWN}")
            else:
                lines.append(prefix + r[R_ROW])
                kept.append(r)
    if minutes is not None:
        for r in kept:
            t = r[R_T]
            v = r[R_VALUE]
            minute = (pids[r[R_ADDRESS]], r[R_METRIC], int(t // 60))
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
            key = (pids[address], metric)
            cur = latest.get(key)
            if cur is None or r[R_MEASURED] > cur.measured_at:
                latest[key] = LatestRow(
                    b.patient_id, metric, r[R_VALUE], r[R_UNIT], r[R_MEASURED], b.device_id, r[R_ID]
                )
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


def utc_now() -> datetime:
    """The server clock (UTC)."""
    return datetime.now(UTC)


from teleconsult.ingest import fastdecode  # noqa: E402 - it reads this module's names
