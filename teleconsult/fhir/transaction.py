"""Import: ``POST /fhir/r4`` with a ``transaction`` or ``batch`` Bundle of Observations (and Devices), as a PHD gateway
sends them.

- Each Observation is parsed by :func:`~teleconsult.fhir.observation.parse_observation` (units converted to the
  metric's canonical unit, the reported value kept in the reading's flags and shown again on export).
- ``subject`` must be ``Patient/<id>`` of an existing patient the caller may write for (care team, or the patient
  themself; one audit row per patient), whose newest remote-monitoring consent decision grants it (no decision on
  file is no consent).
- ``device``: ``Device/<id>`` of one of the patient's enrolled devices, or the ``fullUrl`` of a Device entry of the
  bundle, matched to an enrolled device of the patient by Bluetooth address or serial number (devices are enrolled
  with their gateway, never created by an import).
- Conditional create on ``Observation.identifier`` (with its effective time: the store's idempotency key is
  ``(reading_id, measured_at)``): an Observation whose readings are all stored already answers ``200 OK`` and writes
  nothing (a replayed bundle is a no-op); otherwise ``201 Created``.
- The readings go through the ingest writer (:func:`teleconsult.ingest.writer.write_batch`): the same idempotent COPY,
  rollups and ``latest_readings`` upsert as MQTT readings, so the alert engine and the live dashboards see them
  through the same ``tbib_readings`` notification.
- ``transaction``: any invalid entry -> 400 with one OperationOutcome whose issues name each entry
  (``Bundle.entry[i]...``), nothing written. ``batch``: each entry answers on its own (``400``/``403``/``404`` with an
  OperationOutcome in ``response.outcome``), the valid ones are written.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import orjson
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from teleconsult.errors import AuthorizationError
from teleconsult.fhir import bundle
from teleconsult.fhir.errors import FhirError, InvalidResourceError, UnsupportedError
from teleconsult.fhir.observation import ParsedObservation, ParsedReading, parse_observation
from teleconsult.fhir.resources import device_identifiers, gateway_device_id, outcome
from teleconsult.ingest.payload import LatestRow
from teleconsult.ingest.writer import STAGING_DDL, write_batch
from teleconsult.security.consent import MONITORING_SQL

MAX_ENTRIES: Final = 10_000
Authorize = Callable[[uuid.UUID, int], Awaitable[None]]


@dataclass(slots=True)
class _Entry:
    index: int
    kind: str
    observation: ParsedObservation | None = None
    device_ids: list[tuple[str, str]] = field(default_factory=list)
    full_url: str | None = None
    patient_id: uuid.UUID | None = None
    device_id: uuid.UUID | None = None
    location: str | None = None
    error: tuple[int, str, str, str | None] | None = None
    """(HTTP status, issue code, diagnostics, expression)."""
    existed: bool = False


def _fail(e: _Entry, status: int, code: str, message: str, expression: str | None = None) -> None:
    if e.error is None:
        e.error = (status, code, message, expression)


def _parse_entries(doc: Any, now: datetime) -> tuple[str, list[_Entry]]:
    if not isinstance(doc, Mapping) or doc.get("resourceType") != "Bundle":
        raise InvalidResourceError("the body must be a Bundle", expression="Bundle")
    kind = doc.get("type")
    if kind not in {"transaction", "batch"}:
        raise UnsupportedError("Bundle.type must be transaction or batch", expression="Bundle.type")
    raw = doc.get("entry") or []
    if not isinstance(raw, list):
        raise InvalidResourceError("Bundle.entry must be a list", expression="Bundle.entry")
    if len(raw) > MAX_ENTRIES:
        raise InvalidResourceError(f"at most {MAX_ENTRIES} entries per bundle", expression="Bundle.entry")
    entries: list[_Entry] = []
    for i, item in enumerate(raw):
        where = f"Bundle.entry[{i}]"
        e = _Entry(i, "?")
        entries.append(e)
        resource = item.get("resource") if isinstance(item, Mapping) else None
        if not isinstance(resource, Mapping):
            _fail(e, 400, "required", "entry.resource is required", f"{where}.resource")
            continue
        e.kind = str(resource.get("resourceType"))
        e.full_url = item.get("fullUrl") if isinstance(item.get("fullUrl"), str) else None
        req = item.get("request")
        if isinstance(req, Mapping) and req.get("method") not in {None, "POST", "PUT"}:
            _fail(e, 400, "not-supported", "only POST (create) entries are accepted", f"{where}.request.method")
            continue
        try:
            if e.kind == "Observation":
                e.observation = parse_observation(resource, now=now, where=f"{where}.resource")
            elif e.kind == "Device":
                e.device_ids = device_identifiers(resource, f"{where}.resource")
                owner = resource.get("patient")
                ref = owner.get("reference") if isinstance(owner, Mapping) else None
                if isinstance(ref, str) and ref.startswith("Patient/"):
                    e.patient_id = _uuid_or_none(ref.removeprefix("Patient/"))
            else:
                raise UnsupportedError(f"{e.kind[:40]} entries are not accepted", expression=f"{where}.resource")
        except FhirError as exc:
            _fail(e, 400, exc.code, exc.message, exc.expression)
    return str(kind), entries


NO_MONITORING_CONSENT: Final = "no remote_monitoring consent in force (none given, or withdrawn): not stored"


async def _patients(conn: AsyncConnection[Any], ids: set[uuid.UUID]) -> dict[uuid.UUID, bool]:
    """Existing patients among ``ids`` -> remote-monitoring consent in force (no decision on file is no consent)."""
    cur = await conn.execute(
        f"select p.id, {MONITORING_SQL.format(patient='p.id')} from patients p where p.id = any(%s)",  # noqa: S608
        (list(ids),),
    )
    return {r[0]: bool(r[1]) for r in await cur.fetchall()}


async def _devices(
    conn: AsyncConnection[Any], patients: list[uuid.UUID]
) -> list[tuple[uuid.UUID, uuid.UUID, str, str | None, str]]:
    """Enrolled devices of these patients: (device id, patient id, address, serial, gateway id)."""
    cur = await conn.execute(
        "select d.id, coalesce(d.patient_id, g.patient_id), d.address, d.serial, d.gateway_id"
        " from devices d join gateways g on g.id = d.gateway_id where coalesce(d.patient_id, g.patient_id) = any(%s)",
        (patients,),
    )
    return [tuple(r) for r in await cur.fetchall()]


def _uuid_or_none(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _patient_of(e: _Entry) -> uuid.UUID | None:
    assert e.observation is not None
    ref = e.observation.patient_ref
    try:
        return uuid.UUID(ref.removeprefix("Patient/")) if ref.startswith("Patient/") else None
    except ValueError:
        return None


async def _resolve(
    conn: AsyncConnection[Any], entries: list[_Entry], authorize: Authorize, gateway_id: str | None = None
) -> None:
    """Patients (existence, consent, authorization) and devices of every valid entry (only ``gateway_id``'s devices,
    and that gateway itself, when a gateway imports)."""
    obs = [e for e in entries if e.kind == "Observation" and e.error is None]
    for e in obs:
        e.patient_id = _patient_of(e)
        if e.patient_id is None:
            _fail(e, 400, "invalid", "subject must reference Patient/<id>", f"Bundle.entry[{e.index}].resource.subject")
    wanted = {e.patient_id for e in obs if e.patient_id is not None}
    known = await _patients(conn, wanted)
    allowed: set[uuid.UUID] = set()
    refused: dict[uuid.UUID, str] = {}
    for pid in sorted(wanted & known.keys(), key=str):
        try:
            await authorize(pid, sum(1 for e in obs if e.patient_id == pid))
            allowed.add(pid)
        except AuthorizationError as exc:
            refused[pid] = exc.reason
    for e in obs:
        where = f"Bundle.entry[{e.index}].resource.subject"
        if e.patient_id is None:
            continue
        if e.patient_id not in known:
            _fail(e, 404, "not-found", f"Patient/{e.patient_id} is not known", where)
        elif e.patient_id not in allowed:
            _fail(e, 403, "forbidden", refused.get(e.patient_id, "not on this patient's care team"), where)
        elif not known[e.patient_id]:
            _fail(e, 403, "forbidden", NO_MONITORING_CONSENT, where)
    enrolled = await _devices(conn, sorted(allowed, key=str))
    if gateway_id is not None:
        enrolled = [dev for dev in enrolled if dev[4] == gateway_id]
    by_full_url = {e.full_url: e for e in entries if e.kind == "Device" and e.full_url}
    users: dict[str | None, list[_Entry]] = {}
    for o in obs:
        if o.observation is not None and o.observation.device_ref in by_full_url:
            users.setdefault(o.observation.device_ref, []).append(o)
    for d in by_full_url.values():
        if d.error is not None:
            continue
        # whose device: the Observations that reference it, else Device.patient, else any patient of the bundle
        pids = {o.patient_id for o in users.get(d.full_url, []) if o.patient_id in allowed}
        pids = pids or ({d.patient_id} & allowed if d.patient_id else set()) or set(allowed)
        values = {v for _, v in d.device_ids}
        gateways = {gw for dev in enrolled if dev[1] in pids for gw in [dev[4]]}
        match = [dev for dev in enrolled if dev[1] in pids and (dev[2] in values or (dev[3] and dev[3] in values))]
        if match:
            d.device_id, d.patient_id = match[0][0], match[0][1]
            d.location = f"Device/{d.device_id}"
        elif values & gateways:
            d.location = f"Device/{gateway_device_id(next(iter(values & gateways)))}"
        else:
            _fail(
                d,
                404,
                "not-found",
                "no enrolled device of the patient has this address or serial number",
                f"Bundle.entry[{d.index}].resource.identifier",
            )
        d.existed = True
    ids = {(dev[0], dev[1]) for dev in enrolled}
    for e in obs:
        if e.error is not None or e.observation is None or e.observation.device_ref is None:
            continue
        ref = e.observation.device_ref
        where = f"Bundle.entry[{e.index}].resource.device"
        if ref in by_full_url:
            target = by_full_url[ref]
            if target.error is not None or (target.device_id is None and target.location is None):
                _fail(e, 404, "not-found", f"device {ref[:60]} is not an enrolled device of the patient", where)
            e.device_id = target.device_id
            continue
        try:
            device_id = uuid.UUID(ref.removeprefix("Device/")) if ref.startswith("Device/") else None
        except ValueError:
            device_id = None
        if device_id is None or (device_id, e.patient_id) not in ids:
            _fail(e, 404, "not-found", f"device {ref[:60]} is not an enrolled device of the patient", where)
        e.device_id = device_id


_NULL: Final = "\\N"


def _copy_line(e: _Entry, r: ParsedReading) -> str:
    """A COPY text row in the ingest writer's column order (``teleconsult.ingest.payload.STAGING_COLUMNS``)."""
    flags = orjson.dumps(r.flags).decode().replace("\\", "\\\\") if r.flags else _NULL
    received = r.received_at.isoformat() if r.received_at else _NULL
    device = str(e.device_id) if e.device_id else _NULL
    group = str(r.group_id) if r.group_id else _NULL
    return (
        f"{e.patient_id}\t{device}\t{r.metric}\t{r.value!r}\t{r.unit}\t{r.measured_at.isoformat()}\t"
        f"{received}\t{r.reading_id}\t{group}\t{flags}\n"
    )


async def _existing(conn: AsyncConnection[Any], entries: list[_Entry]) -> set[tuple[uuid.UUID, datetime]]:
    """``(reading_id, measured_at)`` of the entries' readings already stored (the store's idempotency key; the time
    bounds let TimescaleDB/BRIN skip the chunks outside the bundle's measurement window)."""
    readings = [r for e in entries if e.observation for r in e.observation.readings]
    if not readings:
        return set()
    times = [r.measured_at for r in readings]
    cur = await conn.execute(
        "select reading_id, measured_at from readings where reading_id = any(%s) and measured_at between %s and %s",
        ([r.reading_id for r in readings], min(times), max(times)),
    )
    return {(row[0], row[1]) for row in await cur.fetchall()}


async def _write(conn: AsyncConnection[Any], entries: list[_Entry]) -> int:
    """Store the readings of ``entries`` through the ingest writer; returns the rows inserted."""
    seen = await _existing(conn, entries)
    lines: list[str] = []
    latest: dict[tuple[str, str], LatestRow] = {}
    for e in entries:
        assert e.observation is not None
        fresh = [r for r in e.observation.readings if (r.reading_id, r.measured_at) not in seen]
        e.existed = not fresh
        e.location = f"Observation/{e.observation.readings[0].reading_id}"
        for r in fresh:
            seen.add((r.reading_id, r.measured_at))
            lines.append(_copy_line(e, r))
            key = (str(e.patient_id), r.metric)
            cur = latest.get(key)
            if cur is None or r.measured_at > cur.measured_at:
                latest[key] = LatestRow(
                    e.patient_id, r.metric, r.value, r.unit, r.measured_at, e.device_id, str(r.reading_id)
                )
    if not lines:
        return 0
    await conn.execute(STAGING_DDL)
    result = await write_batch(conn, lines, [], list(latest.values()))
    return result.inserted


def _issue_outcome(e: _Entry) -> dict[str, Any]:
    assert e.error is not None
    _, code, message, expression = e.error
    return outcome([(code, message, expression)])


_STATUS_TEXT: Final = {
    200: "200 OK",
    201: "201 Created",
    400: "400 Bad Request",
    403: "403 Forbidden",
    404: "404 Not Found",
}


async def import_bundle(
    pool: AsyncConnectionPool[Any],
    doc: Any,
    *,
    authorize: Authorize,
    base: str,
    now: datetime,
    gateway_id: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """Import one Bundle; returns (HTTP status, response Bundle or OperationOutcome). ``gateway_id``: the importing
    gateway, whose own devices are the only ones entries may reference."""
    kind, entries = _parse_entries(doc, now)
    async with pool.connection() as conn:
        async with conn.transaction():
            await _resolve(conn, entries, authorize, gateway_id)
        failed = [e for e in entries if e.error is not None]
        if kind == "transaction" and failed:
            issues = [(e.error[1], e.error[2], e.error[3] or f"Bundle.entry[{e.index}]") for e in failed if e.error]
            status = 403 if all(e.error and e.error[0] == 403 for e in failed) else 400
            return status, outcome(issues)
        good = [e for e in entries if e.error is None and e.kind == "Observation"]
        async with conn.transaction():
            await _write(conn, good)
    out = []
    for e in entries:
        if e.error is not None:
            out.append(bundle.response_entry(_STATUS_TEXT.get(e.error[0], str(e.error[0])), outcome=_issue_outcome(e)))
        else:
            code = 200 if e.existed else 201
            out.append(bundle.response_entry(_STATUS_TEXT[code], location=e.location))
    return 200, bundle.response_bundle(kind, out, now)
