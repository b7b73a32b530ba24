"""A patient's consents, per purpose: read and recorded by the patient or their care team."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, status
from pydantic import Field

from teleconsult.api.deps import PatientAccess, Pool
from teleconsult.api.schemas import ApiModel, SafeText
from teleconsult.security import consent
from teleconsult.security.consent import ConsentRecord
from teleconsult.security.models import ConsentPurpose

router = APIRouter(prefix="/patients/{patient_id}/consents", tags=["consents"])


class ConsentIn(ApiModel):
    """A decision: grant or withdraw consent for one purpose."""

    purpose: ConsentPurpose
    granted: bool
    note: Annotated[SafeText, Field(max_length=500)] = ""


class ConsentOut(ApiModel):
    """One recorded decision."""

    id: int
    purpose: ConsentPurpose
    granted: bool
    recorded_by: uuid.UUID | None
    recorded_at: datetime
    note: str
    basis: str = "explicit"
    """``explicit`` (recorded by the patient or their care team) or ``legacy`` (carried over by migration 0110)."""

    @classmethod
    def of(cls, r: ConsentRecord) -> ConsentOut:
        """From the domain value."""
        return cls(
            id=r.id, purpose=r.purpose, granted=r.granted, recorded_by=r.recorded_by, recorded_at=r.recorded_at,
            note=r.note, basis=r.basis,
        )  # fmt: skip


class ConsentsOut(ApiModel):
    """The consent in force per purpose, and the history (newest first)."""

    current: dict[ConsentPurpose, bool]
    history: list[ConsentOut]


@router.get("", summary="Consents of a patient")
async def get_consents(access: PatientAccess, pool: Pool) -> ConsentsOut:
    """Current state and history."""
    async with pool.connection() as conn:
        records = await consent.history(conn, access.patient_id)
    return ConsentsOut(current=consent.current(records), history=[ConsentOut.of(r) for r in records])


@router.post("", status_code=status.HTTP_201_CREATED, summary="Record a consent decision")
async def record_consent(body: ConsentIn, access: PatientAccess, pool: Pool) -> ConsentOut:
    """Grant or withdraw; who recorded it and when are kept."""
    async with pool.connection() as conn:
        rec = await consent.record(
            conn,
            patient_id=access.patient_id,
            purpose=body.purpose,
            granted=body.granted,
            recorded_by=access.user.id,
            note=body.note,
        )
    return ConsentOut.of(rec)
