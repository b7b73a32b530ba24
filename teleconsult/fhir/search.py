"""Search parameters and paging cursors (pure).

:func:`observation_query` turns the query string of ``Observation?...`` (or ``Patient/{id}/$everything``) into an
:class:`ObservationQuery`; anything not in :data:`~teleconsult.fhir.capability.SEARCH_PARAMS` or
:data:`~teleconsult.fhir.capability.RESULT_PARAMS` raises :class:`~teleconsult.fhir.errors.InvalidSearchError`.

Paging is a keyset on ``(measured_at, reading_id)`` in the requested order, frozen at a *snapshot*: the first page
records the server time, later pages only see readings ingested (``readings.ingested_at``) up to it. Readings that
arrive while a client pages — newer ones, and late ones that a gateway kept in its outbox — therefore neither shift
nor duplicate entries, and ``total`` stays the same on every page. The cursor is an opaque ``_page`` token.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from devices.codes import METRICS
from teleconsult.fhir import terminology as t
from teleconsult.fhir.capability import DEFAULT_COUNT, MAX_COUNT, RESULT_PARAMS, SEARCH_PARAMS
from teleconsult.fhir.errors import InvalidSearchError

PAGE_PARAM: Final = "_page"
FORMAT_PARAM: Final = "_format"
_FORMATS: Final = frozenset({"json", "application/json", "application/fhir+json"})
_DATE_RE: Final = re.compile(r"(eq|ne|gt|lt|ge|le|sa|eb|ap)?(\d{4}(-\d{2}(-\d{2}(T.*)?)?)?)")
_EVERYTHING_PARAMS: Final = frozenset({"start", "end", "_count", PAGE_PARAM, FORMAT_PARAM, "_since"})


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page starts: after (``forward``) or before (not ``forward``) the key ``(at, reading_id)``."""

    at: datetime
    reading_id: uuid.UUID
    forward: bool
    snapshot: datetime
    total: int | None


@dataclass(frozen=True, slots=True)
class ObservationQuery:
    """A validated Observation search."""

    patient_id: uuid.UUID
    metrics: frozenset[str]
    """Metrics to look at (every metric of the vocabulary when no code/category was given)."""
    start: datetime | None
    """Inclusive lower bound of ``measured_at``."""
    end: datetime | None
    """Exclusive upper bound of ``measured_at``."""
    count: int
    descending: bool
    cursor: Cursor | None
    snapshot: datetime
    want_total: bool
    """``_total=none`` (and ``$everything``) turns the count off: ``total`` only when the result fits in one page."""
    params: tuple[tuple[str, str], ...]
    """The search parameters as given, without ``_page`` (to build the paging links)."""


def encode_cursor(c: Cursor) -> str:
    """The opaque ``_page`` token."""
    doc = [c.at.isoformat(), str(c.reading_id), int(c.forward), c.snapshot.isoformat(), c.total]
    return base64.urlsafe_b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(token: str) -> Cursor:
    """Inverse of :func:`encode_cursor`; :class:`InvalidSearchError` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        at, rid, forward, snapshot, total = json.loads(raw)
        cursor = Cursor(
            datetime.fromisoformat(at),
            uuid.UUID(rid),
            bool(forward),
            datetime.fromisoformat(snapshot),
            None if total is None else int(total),
        )
    except (ValueError, TypeError) as exc:
        raise InvalidSearchError("invalid paging token", param=PAGE_PARAM) from exc
    if cursor.at.tzinfo is None or cursor.snapshot.tzinfo is None:
        raise InvalidSearchError("invalid paging token", param=PAGE_PARAM)
    return cursor


def date_bounds(value: str, param: str = "date") -> tuple[datetime, datetime]:
    """A FHIR date/dateTime -> the ``[start, end)`` interval its precision covers (no zone: UTC)."""
    try:
        if len(value) == 4:
            start = datetime(int(value), 1, 1, tzinfo=UTC)
            return start, start.replace(year=start.year + 1)
        if len(value) == 7:
            y, m = int(value[:4]), int(value[5:7])
            start = datetime(y, m, 1, tzinfo=UTC)
            return start, (start + timedelta(days=32)).replace(day=1)
        if len(value) == 10:
            start = datetime.fromisoformat(value).replace(tzinfo=UTC)
            return start, start + timedelta(days=1)
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidSearchError(f"{value[:40]!r} is not a FHIR date or dateTime", param=param) from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    step = timedelta(microseconds=1) if at.microsecond else timedelta(seconds=1)
    return at, at + step


def apply_date(value: str, lo: datetime | None, hi: datetime | None) -> tuple[datetime | None, datetime | None]:
    """Narrow ``[lo, hi)`` by one ``date`` parameter value (prefixes eq, gt, ge, lt, le)."""
    m = _DATE_RE.fullmatch(value)
    if m is None:
        raise InvalidSearchError(f"{value[:40]!r} is not a date search value", param="date")
    prefix = m.group(1) or "eq"
    if prefix not in {"eq", "gt", "ge", "lt", "le"}:
        raise InvalidSearchError(f"date prefix {prefix!r} is not supported", param="date")
    start, end = date_bounds(m.group(2))
    new_lo = {"eq": start, "ge": start, "gt": end}.get(prefix)
    new_hi = {"eq": end, "le": end, "lt": start}.get(prefix)
    if new_lo is not None:
        lo = new_lo if lo is None else max(lo, new_lo)
    if new_hi is not None:
        hi = new_hi if hi is None else min(hi, new_hi)
    return lo, hi


def _patient_ref(value: str, param: str) -> uuid.UUID:
    raw = value.removeprefix("Patient/")
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise InvalidSearchError(f"{value[:60]!r} is not a Patient reference", param=param) from None


def _token(value: str) -> tuple[str | None, str]:
    system, sep, code = value.rpartition("|")
    return (system or None) if sep else None, code


def _count(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise InvalidSearchError("_count must be an integer", param="_count") from None
    if not 0 < n <= MAX_COUNT:
        raise InvalidSearchError(f"_count must be between 1 and {MAX_COUNT}", param="_count")
    return n


def _check_format(value: str) -> None:
    if value not in _FORMATS:
        raise InvalidSearchError("only JSON is supported", param=FORMAT_PARAM)


def observation_query(
    params: Sequence[tuple[str, str]], *, now: datetime, patient_id: uuid.UUID | None = None
) -> ObservationQuery:
    """Validate an Observation search (``patient_id`` given: ``$everything``, where start/end replace date)."""
    everything = patient_id is not None
    allowed = _EVERYTHING_PARAMS if everything else {*SEARCH_PARAMS["Observation"], *RESULT_PARAMS, PAGE_PARAM}
    allowed = {*allowed, FORMAT_PARAM}
    lo: datetime | None = None
    hi: datetime | None = None
    metrics: set[str] | None = None
    categories: set[str] | None = None
    count = MAX_COUNT if everything else DEFAULT_COUNT
    descending = not everything
    cursor: Cursor | None = None
    want_total = not everything
    kept: list[tuple[str, str]] = []
    for name, value in params:
        if name not in allowed:
            raise InvalidSearchError(f"unknown or unsupported search parameter {name[:40]!r}", param=name[:40])
        if name != PAGE_PARAM:
            kept.append((name, value))
        if name in {"patient", "subject"}:
            pid = _patient_ref(value, name)
            if patient_id is not None and pid != patient_id:
                raise InvalidSearchError("patient and subject disagree", param=name)
            patient_id = pid
        elif name == "code":
            found: set[str] = set()
            for token in value.split(","):
                found |= t.metrics_for_token(*_token(token))
            metrics = found if metrics is None else metrics & found
        elif name == "category":
            cats = {_token(v)[1] for v in value.split(",")}
            categories = cats if categories is None else categories & cats
        elif name == "date":
            lo, hi = apply_date(value, lo, hi)
        elif name in {"start", "_since"}:
            lo = date_bounds(value, name)[0] if lo is None else max(lo, date_bounds(value, name)[0])
        elif name == "end":
            hi = date_bounds(value, name)[1] if hi is None else min(hi, date_bounds(value, name)[1])
        elif name == "_count":
            count = _count(value)
        elif name == "_sort":
            if value not in {"date", "-date"}:
                raise InvalidSearchError("_sort supports date and -date", param="_sort")
            descending = value == "-date"
        elif name == "_total":
            if value not in {"none", "accurate"}:
                raise InvalidSearchError("_total supports none and accurate", param="_total")
            want_total = value == "accurate"
        elif name == PAGE_PARAM:
            cursor = decode_cursor(value)
        elif name == FORMAT_PARAM:
            _check_format(value)
    if patient_id is None:
        raise InvalidSearchError("patient is required (Observation?patient=<id>)", param="patient")
    selected = set(METRICS) if metrics is None else metrics
    if categories is not None:
        selected = {m for m in selected if t.category(METRICS[m]) in categories}
    return ObservationQuery(
        patient_id=patient_id,
        metrics=frozenset(selected),
        start=lo,
        end=hi,
        count=count,
        descending=descending,
        cursor=cursor,
        snapshot=cursor.snapshot if cursor else now,
        want_total=want_total,
        params=tuple(kept),
    )


def next_cursor(q: ObservationQuery, keys: Sequence[tuple[datetime, uuid.UUID]], total: int | None) -> Cursor:
    """The cursor of the page after the one whose last key is ``keys[-1]``."""
    at, rid = keys[-1]
    return Cursor(at, rid, True, q.snapshot, total)


def prev_cursor(q: ObservationQuery, keys: Sequence[tuple[datetime, uuid.UUID]], total: int | None) -> Cursor:
    """The cursor of the page before the one whose first key is ``keys[0]``."""
    at, rid = keys[0]
    return Cursor(at, rid, False, q.snapshot, total)


@dataclass(frozen=True, slots=True)
class PatientQuery:
    """A validated Patient search: by identifier ``(system or None, value)`` and/or logical id."""

    identifier: tuple[str | None, str] | None
    ids: tuple[uuid.UUID, ...] | None


def patient_query(params: Iterable[tuple[str, str]]) -> PatientQuery:
    """Validate ``Patient?identifier=[system|]value&_id=...``."""
    identifier: tuple[str | None, str] | None = None
    ids: tuple[uuid.UUID, ...] | None = None
    for name, value in params:
        if name == "identifier":
            identifier = _token(value)
            if not identifier[1]:
                raise InvalidSearchError("identifier needs a value", param=name)
        elif name == "_id":
            try:
                ids = tuple(uuid.UUID(v) for v in value.split(","))
            except ValueError:
                raise InvalidSearchError("_id must be tbib patient ids", param=name) from None
        elif name == FORMAT_PARAM:
            _check_format(value)
        elif name not in {"_count"}:
            raise InvalidSearchError(f"unknown or unsupported search parameter {name[:40]!r}", param=name[:40])
    if identifier is None and ids is None:
        raise InvalidSearchError("Patient search needs identifier or _id", param="identifier")
    return PatientQuery(identifier, ids)


def audit_query(params: Iterable[tuple[str, str]]) -> tuple[uuid.UUID, int, int | None]:
    """``AuditEvent?patient=<id>&_count=&_page=`` -> (patient id, page size, audit row id to page before)."""
    patient_id: uuid.UUID | None = None
    count = DEFAULT_COUNT
    before: int | None = None
    for name, value in params:
        if name in {"patient", "entity"}:
            patient_id = _patient_ref(value, name)
        elif name == "_count":
            count = _count(value)
        elif name == PAGE_PARAM:
            if not value.isdigit() or not 0 < int(value) < 2**63:
                raise InvalidSearchError("invalid paging token", param=PAGE_PARAM)
            before = int(value)
        elif name == FORMAT_PARAM:
            _check_format(value)
        else:
            raise InvalidSearchError(f"unknown or unsupported search parameter {name[:40]!r}", param=name[:40])
    if patient_id is None:
        raise InvalidSearchError("patient is required (AuditEvent?patient=<id>)", param="patient")
    return patient_id, count, before
