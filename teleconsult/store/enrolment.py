"""Enrolment: patients, their gateway and their devices (seeding for tests and the demo, and the ingest lookup).

The ingest worker resolves ``(gateway_id, device address)`` to ``(device_id, patient_id)`` with :func:`enrolment_map`;
a device's own ``patient_id`` wins over its gateway's.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from teleconsult.security.consent import MONITORING_SQL


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """A device to enrol: BLE address (unique per gateway) and what it is."""

    address: str
    model: str | None = None
    serial: str | None = None
    kind: str | None = None


@dataclass(frozen=True, slots=True)
class Enrolled:
    """The ids created by :func:`enrol`: ``devices`` maps address -> device id."""

    patient_id: uuid.UUID
    gateway_id: str
    devices: dict[str, uuid.UUID]


@dataclass(frozen=True, slots=True)
class DeviceBinding:
    """Where readings of one enrolled device go."""

    device_id: uuid.UUID
    patient_id: uuid.UUID
    monitoring_consent: bool = True
    """False unless the patient's newest remote-monitoring decision grants it (law 09-08: no decision, no consent)."""


async def create_patient(
    conn: AsyncConnection[Any],
    display_name: str,
    *,
    patient_id: uuid.UUID | None = None,
    birth_date: date | None = None,
    sex: str | None = None,
) -> uuid.UUID:
    """Insert a patient (idempotent on ``patient_id``); returns its id."""
    pid = patient_id or uuid.uuid4()
    await conn.execute(
        "insert into patients (id, display_name, birth_date, sex) values (%s, %s, %s, %s) on conflict (id) do nothing",
        (pid, display_name, birth_date, sex),
    )
    return pid


async def enrol_on(
    conn: AsyncConnection[Any],
    *,
    patient_id: uuid.UUID,
    gateway_id: str,
    devices: Sequence[DeviceSpec] = (),
) -> Enrolled:
    """Bind ``gateway_id`` and ``devices`` to an existing patient (idempotent: re-enrolling keeps device ids)."""
    await conn.execute(
        "insert into gateways (id, patient_id) values (%s, %s)"
        " on conflict (id) do update set patient_id = excluded.patient_id",
        (gateway_id, patient_id),
    )
    ids: dict[str, uuid.UUID] = {}
    for spec in devices:
        cur = await conn.execute(
            "insert into devices (gateway_id, patient_id, address, model, serial, kind) values (%s, %s, %s, %s, %s, %s)"
            " on conflict (gateway_id, address) do update set patient_id = excluded.patient_id,"
            " model = coalesce(excluded.model, devices.model), serial = coalesce(excluded.serial, devices.serial),"
            " kind = coalesce(excluded.kind, devices.kind), unenrolled_at = null"
            " returning id",
            (gateway_id, patient_id, spec.address, spec.model, spec.serial, spec.kind),
        )
        row = await cur.fetchone()
        assert row is not None
        ids[spec.address] = row[0]
    return Enrolled(patient_id, gateway_id, ids)


async def enrol(
    pool: AsyncConnectionPool[Any],
    *,
    display_name: str,
    gateway_id: str,
    devices: Sequence[DeviceSpec] = (),
    patient_id: uuid.UUID | None = None,
) -> Enrolled:
    """Create (or reuse) a patient, bind a gateway and devices to them, in one transaction."""
    async with pool.connection() as conn, conn.transaction():
        pid = await create_patient(conn, display_name, patient_id=patient_id)
        return await enrol_on(conn, patient_id=pid, gateway_id=gateway_id, devices=devices)


async def enrolment_map(conn: AsyncConnection[Any]) -> dict[tuple[str, str], DeviceBinding]:
    """Every enrolled device: ``(gateway_id, address) -> DeviceBinding`` (devices without a patient, and devices
    unenrolled from the admin UI, ``devices.unenrolled_at``, are left out).

    ``monitoring_consent`` is True only when the patient's newest ``remote_monitoring`` decision grants it: a patient
    with no decision on file has not consented (``teleconsult.security.consent``; the patients monitored before this
    rule got a ``legacy`` decision from migration 0110).
    """
    consent = MONITORING_SQL.format(patient="coalesce(d.patient_id, g.patient_id)")
    cur = await conn.execute(
        "select d.gateway_id, d.address, d.id, coalesce(d.patient_id, g.patient_id), "  # noqa: S608 - constant
        f"{consent} from devices d join gateways g on g.id = d.gateway_id"
        " where coalesce(d.patient_id, g.patient_id) is not null and d.unenrolled_at is null"
    )
    return {
        (str(gw), str(addr)): DeviceBinding(dev, pid, bool(consent))
        for gw, addr, dev, pid, consent in await cur.fetchall()
    }
