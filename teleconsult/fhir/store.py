"""Database side of the FHIR interface: reads for the mapping (async psycopg, one open connection per call).

Observation search (:func:`search_readings`) needs no index beyond the store's ``(patient_id, metric, measured_at
desc)``: one LATERAL index scan per selected metric, each limited to the page size, merged and cut in the database.
Rows folded into a blood-pressure panel are skipped in SQL (:data:`ANCHOR_SQL`, the same rule as
:func:`teleconsult.fhir.observation.is_anchor`) and fetched afterwards as *companions* of their anchor.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from psycopg import AsyncConnection

from teleconsult.fhir import terminology as t
from teleconsult.fhir.records import AlertRecord, DeviceRecord, GatewayRecord, PatientRecord, ReadingRecord
from teleconsult.fhir.search import ObservationQuery

Conn = AsyncConnection[Any]

READING_COLS: Final = (
    "reading_id, patient_id, device_id, metric, value, unit, measured_at, received_at, group_id, flags"
)
#: A reading is its own Observation unless it is folded into its group's blood-pressure panel.
ANCHOR_SQL: Final = (
    "not (metric = 'diastolic_bp' and group_id is not null"
    " and not coalesce(flags ? 'systolic_bp_unavailable', false))"
    " and not (metric = 'mean_arterial_pressure' and group_id is not null"
    " and not coalesce(flags ?& array['systolic_bp_unavailable', 'diastolic_bp_unavailable'], false))"
)


def _reading(row: Sequence[Any]) -> ReadingRecord:
    return ReadingRecord(*row)


async def get_patient(conn: Conn, patient_id: uuid.UUID) -> PatientRecord | None:
    """One patient with its identifiers."""
    cur = await conn.execute(
        "select p.id, p.display_name, p.birth_date, p.sex,"
        " coalesce((select array_agg(array[i.system, i.value] order by i.system, i.value)"
        "           from patient_identifiers i where i.patient_id = p.id), '{}')"
        " from patients p where p.id = %s",
        (patient_id,),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return PatientRecord(row[0], row[1], row[2], row[3], tuple((s, v) for s, v in row[4]))


async def find_patients(conn: Conn, system: str | None, value: str) -> list[uuid.UUID]:
    """Patients with the business identifier ``[system|]value`` (or the tbib id ``urn:uuid:<id>``)."""
    found: list[uuid.UUID] = []
    if system in {None, t.URI_SYSTEM} and value.startswith("urn:uuid:"):
        try:
            pid = uuid.UUID(value[9:])
        except ValueError:
            pid = None
        if pid is not None:
            cur = await conn.execute("select id from patients where id = %s", (pid,))
            found += [r[0] for r in await cur.fetchall()]
    if system is None:
        cur = await conn.execute("select patient_id from patient_identifiers where value = %s", (value,))
    else:
        cur = await conn.execute(
            "select patient_id from patient_identifiers where system = %s and value = %s", (system, value)
        )
    found += [r[0] for r in await cur.fetchall() if r[0] not in found]
    return found


async def add_identifier(conn: Conn, patient_id: uuid.UUID, system: str, value: str) -> None:
    """Record a business identifier of a patient (idempotent)."""
    await conn.execute(
        "insert into patient_identifiers (patient_id, system, value) values (%s, %s, %s)"
        " on conflict (system, value) do nothing",
        (patient_id, system, value),
    )


async def get_device(conn: Conn, device_id: uuid.UUID) -> DeviceRecord | None:
    """One enrolled device (its patient: the device's own, else its gateway's)."""
    cur = await conn.execute(
        "select d.id, d.gateway_id, coalesce(d.patient_id, g.patient_id), d.address, d.model, d.serial, d.kind"
        " from devices d join gateways g on g.id = d.gateway_id where d.id = %s",
        (device_id,),
    )
    row = await cur.fetchone()
    return None if row is None else DeviceRecord(*row)


async def get_gateway(conn: Conn, gateway_id: str) -> GatewayRecord | None:
    """One gateway."""
    cur = await conn.execute("select id, patient_id from gateways where id = %s", (gateway_id,))
    row = await cur.fetchone()
    return None if row is None else GatewayRecord(*row)


async def patient_devices(conn: Conn, patient_id: uuid.UUID) -> tuple[list[DeviceRecord], list[GatewayRecord]]:
    """The patient's devices and gateways."""
    cur = await conn.execute(
        "select d.id, d.gateway_id, coalesce(d.patient_id, g.patient_id), d.address, d.model, d.serial, d.kind"
        " from devices d join gateways g on g.id = d.gateway_id"
        " where coalesce(d.patient_id, g.patient_id) = %s order by d.enrolled_at, d.id",
        (patient_id,),
    )
    devices = [DeviceRecord(*r) for r in await cur.fetchall()]
    cur = await conn.execute("select id, patient_id from gateways where patient_id = %s order by id", (patient_id,))
    return devices, [GatewayRecord(*r) for r in await cur.fetchall()]


async def open_alerts(conn: Conn, patient_id: uuid.UUID) -> list[AlertRecord]:
    """Alerts of the patient that are not resolved, oldest first."""
    cur = await conn.execute(
        "select id, patient_id, rule, severity, state, raised_at, details from alerts"
        " where patient_id = %s and state <> 'resolved' order by id",
        (patient_id,),
    )
    return [AlertRecord(*r) for r in await cur.fetchall()]


async def get_reading(conn: Conn, reading_id: uuid.UUID) -> ReadingRecord | None:
    """One reading by id (the newest measured_at if a gateway reused an id)."""
    cur = await conn.execute(
        f"select {READING_COLS} from readings where reading_id = %s order by measured_at desc limit 1",  # noqa: S608
        (reading_id,),
    )
    row = await cur.fetchone()
    return None if row is None else _reading(row)


async def companions(conn: Conn, anchors: Sequence[ReadingRecord]) -> dict[uuid.UUID, list[ReadingRecord]]:
    """The other blood-pressure readings of each anchor's group: ``group_id -> readings``."""
    groups = [(a.patient_id, a.measured_at, a.group_id) for a in anchors if a.metric in t.BP_COMPONENTS and a.group_id]
    if not groups:
        return {}
    cur = await conn.execute(
        f"select {READING_COLS} from readings"  # noqa: S608 - constant columns
        " where patient_id = any(%s) and metric = any(%s) and measured_at = any(%s) and group_id = any(%s)",
        (
            list({g[0] for g in groups}),
            list(t.BP_COMPONENTS),
            list({g[1] for g in groups}),
            list({g[2] for g in groups}),
        ),
    )
    out: dict[uuid.UUID, list[ReadingRecord]] = {}
    for row in await cur.fetchall():
        r = _reading(row)
        assert r.group_id is not None
        out.setdefault(r.group_id, []).append(r)
    return out


@dataclass(frozen=True, slots=True)
class Page:
    """One page of readings (anchors in page order) and their panel companions."""

    anchors: list[ReadingRecord]
    companions: dict[uuid.UUID, list[ReadingRecord]]
    has_more: bool
    """More rows exist beyond this page in the direction it was read."""
    total: int | None


def _where(q: ObservationQuery) -> tuple[str, dict[str, Any]]:
    sql = ["patient_id = %(patient)s", "metric = m.name", "ingested_at <= %(snapshot)s", ANCHOR_SQL]
    args: dict[str, Any] = {"patient": q.patient_id, "snapshot": q.snapshot, "metrics": sorted(q.metrics)}
    if q.start is not None:
        sql.append("measured_at >= %(start)s")
        args["start"] = q.start
    if q.end is not None:
        sql.append("measured_at < %(end)s")
        args["end"] = q.end
    return " and ".join(sql), args


async def _no_jit(conn: Conn) -> None:
    """JIT off for this transaction: a LATERAL over 16 metrics x N chunks is estimated expensive enough to JIT-compile
    (~100 ms measured on 5 M rows) although it runs in ~3 ms."""
    await conn.execute("set local jit = off")


async def count_readings(conn: Conn, q: ObservationQuery) -> int:
    """How many Observations match ``q`` (at its snapshot)."""
    await _no_jit(conn)
    where, args = _where(q)
    cur = await conn.execute(
        "select coalesce(sum(n), 0) from unnest(%(metrics)s::text[]) m(name)"  # noqa: S608 - constant fragments
        f" cross join lateral (select count(*) as n from readings where {where}) c",
        args,
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def search_readings(conn: Conn, q: ObservationQuery) -> Page:
    """The page of ``q``: keyset on ``(measured_at, reading_id)`` after/before its cursor.

    ``total``: carried by the cursor after the first page; on the first page the page size when everything fits in it,
    else a count (only when ``q.want_total``)."""
    if not q.metrics:
        return Page([], {}, False, 0)
    await _no_jit(conn)
    where, args = _where(q)
    # Reading in the page's direction: descending for -date forward or date backward.
    forward = q.cursor is None or q.cursor.forward
    desc = q.descending == forward
    op, order = ("<", "desc") if desc else (">", "asc")
    if q.cursor is not None:
        edge = "<=" if desc else ">="
        where += f" and measured_at {edge} %(c_at)s and (measured_at, reading_id) {op} (%(c_at)s, %(c_id)s)"
        args |= {"c_at": q.cursor.at, "c_id": q.cursor.reading_id}
    args["n"] = q.count + 1
    sql = (
        "select r.* from unnest(%(metrics)s::text[]) m(name) cross join lateral"  # noqa: S608
        f" (select {READING_COLS} from readings where {where}"
        f"  order by measured_at {order}, reading_id {order} limit %(n)s) r"
        f" order by measured_at {order}, reading_id {order} limit %(n)s"
    )
    cur = await conn.execute(sql, args)
    rows = [_reading(r) for r in await cur.fetchall()]
    has_more = len(rows) > q.count
    rows = rows[: q.count]
    if not forward:
        rows.reverse()
    total = q.cursor.total if q.cursor is not None else None
    if q.cursor is None and not has_more:
        total = len(rows)
    elif total is None and q.want_total and q.cursor is None:
        total = await count_readings(conn, q)
    return Page(rows, await companions(conn, rows), has_more, total)


async def readings_since(conn: Conn, patient_id: uuid.UUID, start: datetime | None) -> int:
    """How many readings of the patient were measured since ``start`` (export progress)."""
    cur = await conn.execute(
        "select count(*) from readings where patient_id = %s and measured_at >= coalesce(%s, '-infinity')",
        (patient_id, start),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0
