"""Teleconsultations of a patient, and the short-lived join tokens for their signaling room.

- ``POST /patients/{patient_id}/consultations``: a doctor on the care team opens one (the patient must have consented
  to teleconsultation); they are its assigned doctor.
- ``GET /patients/{patient_id}/consultations``: the record (care team or the patient).
- ``POST /patients/{patient_id}/consultations/{consultation_id}/join-token`` with ``{"role": ...}``:
  ``doctor`` for the assigned doctor only; ``patient`` for the patient themself; ``agent`` (the patient's gateway,
  sent through the gateway's ``commands`` topic or ``tbib consult join``) for the patient or the assigned doctor;
  ``interpreter`` (an invitation link) for the assigned doctor.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Request, status
from pydantic import Field

from teleconsult.api.deps import PatientAccess, Pool
from teleconsult.api.schemas import ApiModel, SafeText, UtcDatetime
from teleconsult.errors import AuthorizationError, TeleconsultError
from teleconsult.security.consent import require_consent
from teleconsult.security.models import ConsentPurpose
from teleconsult.security.models import Role as UserRole
from teleconsult.signaling import record
from teleconsult.signaling.tokens import DEFAULT_TTL, Role, issue_token

router = APIRouter(prefix="/patients/{patient_id}/consultations", tags=["consultations"])


class ConsultationIn(ApiModel):
    """A new consultation."""

    scheduled_for: UtcDatetime | None = None
    reason: Annotated[SafeText, Field(max_length=500)] = ""


class ConsultationOut(ApiModel):
    """A consultation and its lifecycle stamps (set by the signaling room)."""

    id: uuid.UUID
    patient_id: uuid.UUID
    doctor_id: uuid.UUID
    created_at: datetime
    scheduled_for: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    reason: str

    @classmethod
    def of(cls, c: record.Consultation) -> ConsultationOut:
        """From the domain value."""
        return cls(
            id=c.id, patient_id=c.patient_id, doctor_id=c.doctor_id, created_at=c.created_at,
            scheduled_for=c.scheduled_for, started_at=c.started_at, ended_at=c.ended_at, reason=c.reason,
        )  # fmt: skip


class JoinTokenIn(ApiModel):
    """Which seat the token is for."""

    role: Literal["doctor", "patient", "agent", "interpreter"]


class JoinTokenOut(ApiModel):
    """A join token and where to use it."""

    token: str
    role: str
    consultation_id: uuid.UUID
    expires_at: datetime
    signaling_path: str = "/ws/v1/signaling"
    page_path: str
    """The call page, token in the fragment (``/consult/patient#token=...``); share it only with its holder."""


@router.post("", status_code=status.HTTP_201_CREATED, summary="Open a teleconsultation")
async def create_consultation(access: PatientAccess, pool: Pool, body: ConsultationIn) -> ConsultationOut:
    """The calling doctor becomes the assigned doctor."""
    if access.user.role is not UserRole.DOCTOR:
        raise AuthorizationError("only a doctor can open a teleconsultation")
    async with pool.connection() as conn:
        await require_consent(conn, access.patient_id, ConsentPurpose.TELECONSULTATION)
        c = await record.create(
            conn,
            patient_id=access.patient_id,
            doctor_id=access.user.id,
            created_by=access.user.id,
            scheduled_for=body.scheduled_for,
            reason=body.reason,
        )
    return ConsultationOut.of(c)


@router.get("", summary="Teleconsultations of a patient")
async def list_consultations(access: PatientAccess, pool: Pool) -> list[ConsultationOut]:
    """Newest first (50)."""
    async with pool.connection() as conn:
        return [ConsultationOut.of(c) for c in await record.list_for_patient(conn, access.patient_id)]


@router.post("/{consultation_id}/join-token", summary="A short-lived token to join the consultation's call")
async def join_token(
    request: Request, consultation_id: uuid.UUID, body: JoinTokenIn, access: PatientAccess, pool: Pool
) -> JoinTokenOut:
    """Checked against the consultation's assigned doctor and patient."""
    async with pool.connection() as conn:
        c = await record.get(conn, consultation_id, access.patient_id)
        # withdrawing teleconsultation consent also closes the door of consultations already opened
        await require_consent(conn, access.patient_id, ConsentPurpose.TELECONSULTATION)
    if c.ended_at is not None:
        raise AuthorizationError("this consultation has ended")
    user = access.user
    is_doctor = user.id == c.doctor_id
    is_patient = user.role is UserRole.PATIENT and user.patient_id == c.patient_id
    role = Role(body.role)
    allowed = {
        Role.DOCTOR: is_doctor,
        Role.PATIENT: is_patient,
        Role.AGENT: is_doctor or is_patient,
        Role.INTERPRETER: is_doctor,
    }[role]
    if not allowed:
        raise AuthorizationError(f"you cannot join this consultation as {role.value}")
    subject = {
        Role.DOCTOR: str(user.id),
        Role.PATIENT: str(user.id),
        Role.AGENT: f"gateway-of-{c.patient_id}",
        Role.INTERPRETER: f"interpreter-{uuid.uuid4()}",
    }[role]
    service = getattr(request.app.state, "signaling", None)
    if service is None:
        raise TeleconsultError("signaling is not enabled on this server")
    ttl: timedelta = getattr(request.app.state, "signaling_token_ttl", DEFAULT_TTL)
    now = datetime.now(UTC)
    token = issue_token(
        key=service.core.config.token_key, consultation_id=str(c.id), role=role, subject=subject, now=now, ttl=ttl
    )
    page = "doctor" if role is Role.DOCTOR else "patient"
    return JoinTokenOut(
        token=token,
        role=role.value,
        consultation_id=c.id,
        expires_at=now + ttl,
        page_path=f"/consult/{page}#token={token}",
    )
