"""Clinician-facing patient views for the dashboard: my patients by acuity, one patient, history, summary, export.

Every route goes through the care team: the list is restricted in SQL (``tbib_accessible_patients``) and audited
once; per-patient routes depend on ``PatientAccess`` (care-team check + one audit event), the CSV export on an
equivalent check audited with action ``export``. JSON field names are snake_case; chart series are columnar
(``t`` epoch seconds, ``v`` values) so that the browser hands them to uPlot as they are.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import Field

from devices.codes import METRICS
from teleconsult.alerts.rules import DEFAULT_THRESHOLDS, DEFAULT_TRENDS
from teleconsult.api import patient_views as views
from teleconsult.api.deps import (
    CurrentUser,
    DbPool,
    PatientAccess,
    Pool,
    audit,
    authorize_patient,
    client_addr,
    route_template,
)
from teleconsult.api.schemas import ApiModel, SafeText
from teleconsult.errors import AuthorizationError, NotFoundError
from teleconsult.security import audit as audit_log
from teleconsult.security import consent
from teleconsult.security.models import PatientGrant, Role
from teleconsult.store import history as store_history
from teleconsult.store import readings as store_readings

router = APIRouter(prefix="/patients", tags=["patients"])

Range = Literal["1h", "24h", "7d", "30d"]
RANGES: Final[dict[str, timedelta]] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
ALERT_STATES: Final = ("open", "acknowledged", "resolved")

#: Which alert rules mark which chart (thresholds and trends by their metrics; NEWS2 and connectivity on all).
RULE_METRICS: Final[dict[str, tuple[str, ...]]] = {
    **{r.name: r.metrics for r in DEFAULT_THRESHOLDS},
    **{t.name: (t.metric,) for t in DEFAULT_TRENDS},
}


def _metric(metric: str) -> str:
    if metric not in METRICS:
        raise NotFoundError("metric", metric)
    return metric


def _rule_marks(rule: str, metric: str) -> bool:
    if rule.startswith("no_data:"):
        return rule.removeprefix("no_data:") == metric
    related = RULE_METRICS.get(rule)
    return related is None or metric in related


# --- queries --------------------------------------------------------------------------------------------------------


async def _overview(pool: DbPool, patient_ids: list[uuid.UUID]) -> list[dict[str, Any]]:
    """Overview rows of these patients, in acuity order."""
    now = datetime.now(UTC)
    async with pool.connection() as conn:
        cur = await conn.execute(
            "select id, display_name, birth_date, sex from patients where id = any(%s)", (patient_ids,)
        )
        patients = [
            dict(zip(("id", "display_name", "birth_date", "sex"), r, strict=True)) for r in await cur.fetchall()
        ]
        cur = await conn.execute(
            "select patient_id, metric, value, unit, measured_at, device_id from latest_readings"
            " where patient_id = any(%s)",
            (patient_ids,),
        )
        latest: dict[uuid.UUID, dict[str, views.Latest]] = defaultdict(dict)
        for pid, metric, value, unit, at, dev in await cur.fetchall():
            latest[pid][metric] = views.Latest(metric, float(value), unit, at, str(dev) if dev else None)
        cur = await conn.execute(
            "select patient_id, count(*), max(case severity when 'high' then 3 when 'medium' then 2 else 1 end),"
            " array_agg(rule) from alerts where state <> 'resolved' and patient_id = any(%s) group by patient_id",
            (patient_ids,),
        )
        names = {3: "high", 2: "medium", 1: "low"}
        alerts = {
            r[0]: {"count": r[1], "max_severity": names[int(r[2])], "rules": list(r[3])} for r in await cur.fetchall()
        }
        cur = await conn.execute(
            "select g.id, g.patient_id, g.last_seen_at, count(d.id) from gateways g"
            " left join devices d on d.gateway_id = g.id where g.patient_id = any(%s) group by g.id order by g.id",
            (patient_ids,),
        )
        gateways: dict[uuid.UUID, list[dict[str, Any]]] = defaultdict(list)
        for gid, pid, seen, ndev in await cur.fetchall():
            gateways[pid].append({"id": gid, "last_seen_at": seen.isoformat() if seen else None, "devices": int(ndev)})
    rows = [
        views.overview_row(
            patient=p,
            latest=latest.get(p["id"], {}),
            alerts=alerts.get(p["id"]),
            gateways=gateways.get(p["id"], []),
            now=now,
        )
        for p in patients
    ]
    return views.sort_rows(rows)


async def accessible_patients(pool: DbPool, user_id: uuid.UUID) -> list[uuid.UUID]:
    """The patients ``user_id`` may see now (the SQL-side care-team rule)."""
    async with pool.connection() as conn:
        cur = await conn.execute("select p from tbib_accessible_patients(%s) as p", (user_id,))
        return [r[0] for r in await cur.fetchall()]


def _staff(user: Any) -> None:
    if user.role is Role.PATIENT:
        raise AuthorizationError("the patient list is for clinicians")


# --- routes ---------------------------------------------------------------------------------------------------------


@router.get("", summary="My patients, most urgent first")
async def list_patients(request: Request, user: CurrentUser, pool: Pool) -> dict[str, Any]:
    """The caller's care team: NEWS2 and risk, open alerts, latest vitals with their age, connectivity."""
    _staff(user)
    ids = await accessible_patients(pool, user.id)
    rows = await _overview(pool, ids)
    await audit(pool, user, action=audit_log.READ, resource="GET /api/v1/patients", outcome=audit_log.ALLOWED,
                client_addr=client_addr(request), detail={"patients": len(rows)})  # fmt: skip
    return {"generated_at": datetime.now(UTC).isoformat(), "patients": rows, "thresholds": views.thresholds()}


@router.get("/alerts", summary="Alerts of my patients (the inbox)")
async def list_my_alerts(
    request: Request,
    user: CurrentUser,
    pool: Pool,
    state: Annotated[list[Literal["open", "acknowledged", "resolved"]] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> dict[str, Any]:
    """Newest first; default states open and acknowledged. ``last_event_id`` lets the live socket resume after it."""
    _staff(user)
    ids = await accessible_patients(pool, user.id)
    states = list(state or ["open", "acknowledged"])
    async with pool.connection() as conn:
        cur = await conn.execute("select coalesce(max(id), 0) from alert_events")
        row = await cur.fetchone()
        cur = await conn.execute(
            "select to_jsonb(a) || jsonb_build_object('patient_name', p.display_name) from alerts a"
            " join patients p on p.id = a.patient_id where a.patient_id = any(%s) and a.state = any(%s)"
            " order by a.raised_at desc, a.id desc limit %s",
            (ids, states, limit),
        )
        alerts = [dict(r[0]) for r in await cur.fetchall()]
    await audit(pool, user, action=audit_log.READ, resource="GET /api/v1/patients/alerts", outcome=audit_log.ALLOWED,
                client_addr=client_addr(request), detail={"alerts": len(alerts)})  # fmt: skip
    return {"last_event_id": int(row[0]) if row else 0, "alerts": alerts}


@router.get("/{patient_id}", summary="One patient: overview, devices and alert thresholds")
async def get_patient(grant: PatientAccess, pool: Pool) -> dict[str, Any]:
    """The overview row plus devices (with their newest reading time)."""
    rows = await _overview(pool, [grant.patient_id])
    if not rows:
        raise NotFoundError("patient", grant.patient_id)
    async with pool.connection() as conn:
        cur = await conn.execute(
            "select d.id, d.gateway_id, d.address, d.model, d.kind,"
            " (select max(l.measured_at) from latest_readings l where l.device_id = d.id)"
            " from devices d join gateways g on g.id = d.gateway_id"
            " where coalesce(d.patient_id, g.patient_id) = %s order by d.kind, d.address",
            (grant.patient_id,),
        )
        now = datetime.now(UTC)
        devices = [
            {"id": str(i), "gateway_id": gw, "address": addr, "model": model, "kind": kind,
             "last_measured_at": last.isoformat() if last else None, "age_s": views.age_s(now, last)}
            for i, gw, addr, model, kind, last in await cur.fetchall()
        ]  # fmt: skip
        consents = consent.current(await consent.history(conn, grant.patient_id))
    # no decision on file is no consent (issue 19): the page says what is not done for this patient
    return rows[0] | {"devices": devices, "thresholds": views.thresholds(), "consents": consents}


@router.get("/{patient_id}/alerts", summary="Alerts of one patient, newest first")
async def patient_alerts(
    grant: PatientAccess, pool: Pool, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[dict[str, Any]]:
    """Every state (open, acknowledged, resolved) with notes and who acted."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "select to_jsonb(a) from alerts a where patient_id = %s order by raised_at desc, id desc limit %s",
            (grant.patient_id, limit),
        )
        return [dict(r[0]) for r in await cur.fetchall()]


@router.get("/{patient_id}/history", summary="One vital over 1h/24h/7d/30d, downsampled for a chart")
async def patient_history(
    grant: PatientAccess,
    pool: Pool,
    metric: Annotated[str, Query(max_length=64)],
    range_: Annotated[Range, Query(alias="range")] = "24h",
    max_points: Annotated[int, Query(ge=3, le=5000)] = 600,
) -> dict[str, Any]:
    """Columnar ``t`` (epoch s) / ``v``; thresholds to draw; alerts raised in the range on this vital.

    ``source``: raw rows or the ``1m``/``1h`` rollup (chosen by range and ``max_points``); ``bucket_s``: the width of
    the min/max pre-buckets (0 when the points are raw readings), so that a live chart merges new readings the same way.
    """
    metric = _metric(metric)
    end = datetime.now(UTC)
    start = end - RANGES[range_]
    hist = await store_readings.history(pool, grant.patient_id, metric, start, end, max_points=max_points)
    async with pool.connection() as conn:
        cur = await conn.execute(
            "select unit from latest_readings where patient_id = %s and metric = %s", (grant.patient_id, metric)
        )
        unit_row = await cur.fetchone()
        cur = await conn.execute(
            "select id, rule, severity, state, raised_at from alerts where patient_id = %s"
            " and raised_at >= %s order by raised_at",
            (grant.patient_id, start),
        )
        marks = [
            {"id": i, "rule": rule, "severity": sev, "state": st, "t": at.timestamp()}
            for i, rule, sev, st, at in await cur.fetchall()
            if _rule_marks(rule, metric)
        ]
    return {
        "metric": metric,
        "unit": unit_row[0] if unit_row else METRICS[metric].canonical_unit,
        "range": range_,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "method": hist.method,
        "source": hist.source,
        "bucket_s": hist.bucket_s,
        "t": [p.t.timestamp() for p in hist.points],
        "v": [p.value for p in hist.points],
        "thresholds": views.thresholds().get(metric, []),
        "alerts": marks,
    }


@router.get("/{patient_id}/summary", summary="Daily min/mean/max per vital")
async def patient_summary(
    grant: PatientAccess,
    pool: Pool,
    days: Annotated[int, Query(ge=1, le=90)] = 7,
    tz: Annotated[str, Query(max_length=64)] = "UTC",
) -> dict[str, Any]:
    """One table per charted vital that has data: local calendar days in ``tz`` (an IANA zone)."""
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise NotFoundError("time zone", tz) from exc
    end = datetime.now(UTC)
    start = end - timedelta(days=days)
    async with pool.connection() as conn:
        cur = await conn.execute("select metric from latest_readings where patient_id = %s", (grant.patient_id,))
        present = {r[0] for r in await cur.fetchall()}
    out: dict[str, list[dict[str, Any]]] = {}
    for metric in views.CHART_METRICS:
        if metric not in present:
            continue
        frame = await store_history.daily_summary(pool, grant.patient_id, metric, start, end, tz=tz)
        out[metric] = [
            {"day": str(r.day), "count": int(r.count), "min": float(r.min), "mean": float(r.mean), "max": float(r.max)}
            for r in frame.itertuples(index=False)
        ]
    return {"tz": tz, "days": days, "metrics": out}


async def patient_export_access(request: Request, patient_id: uuid.UUID, user: CurrentUser, pool: Pool) -> PatientGrant:
    """Care-team check audited as an ``export``."""
    return await authorize_patient(
        pool, user, patient_id, action="export", resource=route_template(request), client_addr=client_addr(request)
    )


@router.get("/{patient_id}/readings.csv", summary="Raw readings as CSV (audited as an export)")
async def patient_csv(
    grant: Annotated[PatientGrant, Depends(patient_export_access)],
    pool: Pool,
    range_: Annotated[Range, Query(alias="range")] = "7d",
    metric: Annotated[list[str] | None, Query()] = None,
) -> Response:
    """``measured_at`` (UTC ISO 8601), metric, value, unit, ids and flags; optionally only some metrics."""
    metrics = [_metric(m) for m in metric] if metric else None
    end = datetime.now(UTC)
    text = await store_history.readings_csv(pool, grant.patient_id, end - RANGES[range_], end, metrics=metrics)
    name = f"tbib-{grant.patient_id}-{range_}.csv"
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
    )


# --- consultation notes ---------------------------------------------------------------------------------------------


class NotesIn(ApiModel):
    """The caller's notes of one consultation (replaces their previous text)."""

    text: Annotated[SafeText, Field(max_length=20_000)]


async def _consultation_of(pool: DbPool, consultation_id: uuid.UUID, patient_id: uuid.UUID) -> None:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "select 1 from consultations where id = %s and patient_id = %s", (consultation_id, patient_id)
        )
        if await cur.fetchone() is None:
            raise NotFoundError("consultation", consultation_id)


@router.put("/{patient_id}/consultation-notes/{consultation_id}", summary="Save my notes of a consultation")
async def put_consultation_notes(
    consultation_id: uuid.UUID, body: NotesIn, grant: PatientAccess, pool: Pool
) -> dict[str, Any]:
    """Clinicians of the care team only; one text per author, stamped ``updated_at``."""
    if grant.user.role is Role.PATIENT:
        raise AuthorizationError("consultation notes are written by clinicians")
    await _consultation_of(pool, consultation_id, grant.patient_id)
    async with pool.connection() as conn:
        cur = await conn.execute(
            "insert into consultation_notes (consultation_id, author_id, text) values (%s, %s, %s)"
            " on conflict (consultation_id, author_id) do update set text = excluded.text, updated_at = now()"
            " returning updated_at",
            (consultation_id, grant.user.id, body.text),
        )
        row = await cur.fetchone()
    assert row is not None
    return {"consultation_id": str(consultation_id), "text": body.text, "updated_at": row[0].isoformat()}


@router.get("/{patient_id}/consultation-notes/{consultation_id}", summary="Notes of a consultation")
async def get_consultation_notes(consultation_id: uuid.UUID, grant: PatientAccess, pool: Pool) -> list[dict[str, Any]]:
    """Every author's notes (care team, or the patient reading their own record)."""
    await _consultation_of(pool, consultation_id, grant.patient_id)
    async with pool.connection() as conn:
        cur = await conn.execute(
            "select n.author_id, u.display_name, n.text, n.updated_at from consultation_notes n"
            " join users u on u.id = n.author_id where n.consultation_id = %s order by n.created_at",
            (consultation_id,),
        )
        return [
            {"author_id": str(a), "author": name, "text": text, "updated_at": at.isoformat()}
            for a, name, text, at in await cur.fetchall()
        ]
