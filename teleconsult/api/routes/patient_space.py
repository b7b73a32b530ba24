"""The patient's own space (``/#/me`` in the dashboard): what only the patient themself reads in one call.

``GET /patients/{patient_id}/space`` — the patient's own account only (care-team members get 403: their view is the
patient page). It gathers what the other patient-facing routes do not give: devices with their battery (when a device
reports one), every consent purpose with the decision in force, its basis (``explicit``/``legacy``) and what it
means, and the readings refused for lack of consent (dead letters of the patient's gateways), so that a refusal is
never silent to the person concerned. Readings, alerts, consultations, the access log and consent decisions use the
existing routes (``/history``, ``/alerts``, ``/consultations/{id}/join-token``, ``/access-log``, ``/consents``);
``consultations`` here adds the doctor's name, which the patient cannot otherwise read.

Prescriptions: ``sections`` lists the optional parts of the space the server offers; the prescriptions feature adds
``"prescriptions"`` there (see docs/patient-space.md, "Extension point").
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Final

from fastapi import APIRouter, Request
from starlette.routing import NoMatchFound

from teleconsult.api import patient_views as views
from teleconsult.api.deps import PatientAccess, Pool
from teleconsult.errors import AuthorizationError
from teleconsult.security import consent
from teleconsult.security.models import ConsentPurpose

router = APIRouter(prefix="/patients/{patient_id}/space", tags=["patient space"])

#: Metric a device's battery level arrives as (GATT Battery Level 0x2A19, percent), when the gateway forwards it.
BATTERY_METRIC: Final = "battery_level"
#: Dead-letter reasons of readings refused for lack of consent (teleconsult.ingest.payload.CONSENT_WITHDRAWN, and the
#: wording before issue 19, "patient withdrew remote_monitoring consent").
REFUSED_LIKE: Final = "%remote_monitoring consent%"
#: Below this percentage the space says "charge or replace the battery".
BATTERY_LOW_PCT: Final = 20


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at else None


def _sections(request: Request) -> list[str]:
    """Optional sections: the prescriptions feature registers ``GET /patients/{patient_id}/prescriptions``.

    Looked up by the route's name: FastAPI nests included routers, so ``app.routes`` does not list their paths.
    """
    try:
        request.app.url_path_for("list_prescriptions", patient_id="0")
    except NoMatchFound:
        return []
    return ["prescriptions"]


@router.get("", summary="My space: devices and battery, consents with their meaning, refused readings")
async def my_space(request: Request, access: PatientAccess, pool: Pool) -> dict[str, Any]:
    """The patient's own account only."""
    if access.via != "self":
        raise AuthorizationError("the patient space is the patient's own view")
    pid: uuid.UUID = access.patient_id
    now = datetime.now(UTC)
    async with pool.connection() as conn:
        cur = await conn.execute("select display_name from patients where id = %s", (pid,))
        name_row = await cur.fetchone()
        cur = await conn.execute(
            "select d.id, d.gateway_id, d.address, d.model, d.kind,"
            " (select max(l.measured_at) from latest_readings l where l.device_id = d.id and l.metric <> %s),"
            " b.value, b.measured_at"
            " from devices d join gateways g on g.id = d.gateway_id"
            " left join latest_readings b on b.patient_id = %s and b.metric = %s and b.device_id = d.id"
            " where coalesce(d.patient_id, g.patient_id) = %s order by d.kind, d.address",
            (BATTERY_METRIC, pid, BATTERY_METRIC, pid),
        )
        devices = [
            {
                "id": str(i), "gateway_id": gw, "address": addr, "model": model, "kind": kind,
                "last_measured_at": last.isoformat() if last else None, "age_s": views.age_s(now, last),
                "battery_pct": None if bat is None else round(float(bat)),
                "battery_at": bat_at.isoformat() if bat_at else None,
                "battery_low": bat is not None and float(bat) < BATTERY_LOW_PCT,
            }
            for i, gw, addr, model, kind, last, bat, bat_at in await cur.fetchall()
        ]  # fmt: skip
        cur = await conn.execute(
            "select g.id, g.last_seen_at from gateways g where g.patient_id = %s order by g.id", (pid,)
        )
        gateways = [
            {"id": gid, "last_seen_at": seen.isoformat() if seen else None, "age_s": views.age_s(now, seen)}
            for gid, seen in await cur.fetchall()
        ]
        cur = await conn.execute(
            "select count(*), max(received_at) from dead_letters where reason like %s and gateway_id in"
            " (select id from gateways where patient_id = %s"
            "  union select gateway_id from devices where patient_id = %s)",
            (REFUSED_LIKE, pid, pid),
        )
        refused = await cur.fetchone()
        cur = await conn.execute(
            "select c.id, c.created_at, c.scheduled_for, c.started_at, c.ended_at, c.reason, u.display_name"
            " from consultations c left join users u on u.id = c.doctor_id where c.patient_id = %s"
            " order by coalesce(c.scheduled_for, c.created_at) desc limit 20",
            (pid,),
        )
        consultations = [
            {
                "id": str(i), "created_at": created.isoformat(), "scheduled_for": _iso(sched),
                "started_at": _iso(started), "ended_at": _iso(ended), "reason": reason, "doctor_name": doctor,
            }
            for i, created, sched, started, ended, reason, doctor in await cur.fetchall()
        ]  # fmt: skip
        records = await consent.history(conn, pid)
    state = consent.in_force(records)
    purposes = []
    for purpose in ConsentPurpose:
        rec = state[purpose]
        allows, without = consent.PURPOSES[purpose]
        purposes.append(
            {
                "purpose": purpose.value,
                "granted": bool(rec and rec.granted),
                "decided": rec is not None,
                "basis": rec.basis if rec else None,
                "recorded_at": rec.recorded_at.isoformat() if rec else None,
                "recorded_by_me": bool(rec and rec.recorded_by == access.user.id),
                "allows": allows,
                "without": without,
            }
        )
    return {
        "patient_id": str(pid),
        "display_name": name_row[0] if name_row else access.user.display_name,
        "generated_at": now.isoformat(),
        "devices": devices,
        "gateways": gateways,
        "consents": purposes,
        "consultations": consultations,
        "refused_readings": {
            "messages": int(refused[0]) if refused else 0,
            "last_at": refused[1].isoformat() if refused and refused[1] else None,
        },
        "sections": _sections(request),
    }
