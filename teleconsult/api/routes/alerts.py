"""Alert lifecycle over HTTP: read one alert, acknowledge, resolve (care team only, audited); patient alert profile.

Lists of alerts are served by the dashboard routes (``GET /api/v1/patients/alerts``,
``GET /api/v1/patients/{patient_id}/alerts``); live events by ``/ws/v1/alerts``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from devices.codes import METRICS
from teleconsult.alerts import store
from teleconsult.alerts.errors import AlertNotFoundError, AlertStateError
from teleconsult.api.deps import CurrentUser, PatientAccess, Pool, authorize_patient, client_addr
from teleconsult.api.schemas import SafeText
from teleconsult.security import audit as audit_log

router = APIRouter(tags=["alerts"])


class Note(BaseModel):
    """Body of acknowledge/resolve."""

    model_config = ConfigDict(extra="forbid")

    note: Annotated[SafeText, Field(max_length=2000)] = ""


def _known_metric(name: str) -> str:
    if name not in METRICS:
        raise ValueError(f"unknown metric {name[:40]!r}")
    return name


MetricName = Annotated[str, AfterValidator(_known_metric)]


class AlertProfileBody(BaseModel):
    """Per-patient alert settings (see docs/alerts.md)."""

    model_config = ConfigDict(extra="forbid")

    spo2_scale: int = Field(default=1, ge=1, le=2)
    supplemental_oxygen: bool | None = None
    heart_failure: bool = False
    expected_intervals_s: dict[MetricName, Annotated[float, Field(ge=60, le=31 * 86400)]] = Field(
        default_factory=dict, max_length=50
    )
    """metric -> expected seconds between measurements (1 min to 31 days)."""


async def _authorize(request: Request, pool: Pool, user: Any, alert_id: int, action: str) -> None:
    try:
        async with pool.connection() as conn:
            patient = await store.alert_patient(conn, alert_id)
    except AlertNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    route = request.scope.get("route")
    await authorize_patient(
        pool,
        user,
        patient,
        action=action,
        resource=f"{request.method} {getattr(route, 'path', request.url.path)}",
        client_addr=client_addr(request),
        detail={"alert_id": alert_id},
    )


@router.get("/alerts/{alert_id}", summary="One alert")
async def get_alert(alert_id: int, request: Request, user: CurrentUser, pool: Pool) -> dict[str, Any]:
    """The alert row (care team of its patient)."""
    await _authorize(request, pool, user, alert_id, audit_log.READ)
    async with pool.connection() as conn:
        return await store.get_alert(conn, alert_id)


async def _transition(kind: str, alert_id: int, body: Note, request: Request, user: Any, pool: Pool) -> dict[str, Any]:
    if not user.is_clinician:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only clinicians acknowledge or resolve alerts")
    await _authorize(request, pool, user, alert_id, audit_log.WRITE)
    fn = store.acknowledge if kind == "acknowledge" else store.resolve
    try:
        async with pool.connection() as conn:
            event = await fn(conn, alert_id, user_id=user.id, note=body.note, now=datetime.now(UTC))
    except AlertStateError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    return {"event_id": event.id, "alert": event.payload}


@router.post("/alerts/{alert_id}/acknowledge", summary="Acknowledge an alert (stops escalation)")
async def acknowledge(
    alert_id: int, request: Request, user: CurrentUser, pool: Pool, body: Note | None = None
) -> dict[str, Any]:
    """open → acknowledged; 409 when already acknowledged or resolved."""
    return await _transition("acknowledge", alert_id, body or Note(), request, user, pool)


@router.post("/alerts/{alert_id}/resolve", summary="Resolve an alert")
async def resolve(
    alert_id: int, request: Request, user: CurrentUser, pool: Pool, body: Note | None = None
) -> dict[str, Any]:
    """open/acknowledged → resolved; 409 when already resolved."""
    return await _transition("resolve", alert_id, body or Note(), request, user, pool)


@router.put("/patients/{patient_id}/alert-profile", summary="Set a patient's alert settings")
async def put_profile(body: AlertProfileBody, grant: PatientAccess, pool: Pool) -> dict[str, Any]:
    """SpO2 scale 2, oxygen, heart failure, expected measurement intervals (applied by the engine at once)."""
    if not grant.user.is_clinician:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only clinicians of the care team set alert profiles")
    config = body.model_dump()
    async with pool.connection() as conn:
        await store.set_profile(conn, grant.patient_id, config)
    return {"patient_id": str(grant.patient_id), **config}
