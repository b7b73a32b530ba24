"""The patient directory for admins (issue 19 item 6): create a patient record, list records (identity only).

An admin creates the record a patient account and a gateway are then linked to. Only identity fields: no readings, no
alerts (admins see clinical data only through a care-team assignment, like everyone else). Audited.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Request, status
from pydantic import Field

from teleconsult.api.deps import CurrentAdmin, Pool, audit, client_addr
from teleconsult.api.routes.gateways import ADMIN_ERRORS
from teleconsult.api.schemas import ApiModel, SafeText
from teleconsult.store.enrolment import create_patient

router = APIRouter(prefix="/admin/patients", tags=["patients (admin)"])


class PatientIn(ApiModel):
    """A new patient record."""

    display_name: Annotated[SafeText, Field(min_length=1, max_length=200)]
    birth_date: date | None = None
    sex: Literal["female", "male", "other", "unknown"] | None = None


class PatientRecordOut(ApiModel):
    """A patient record as the admin directory shows it."""

    id: uuid.UUID
    display_name: str
    birth_date: date | None
    sex: str | None


@router.get("", summary="Patient directory (admin): identity only", responses=ADMIN_ERRORS)
async def list_records(_admin: CurrentAdmin, pool: Pool) -> list[PatientRecordOut]:
    """Every patient record, by name."""
    async with pool.connection() as conn:
        cur = await conn.execute("select id, display_name, birth_date, sex from patients order by display_name, id")
        rows = await cur.fetchall()
    return [PatientRecordOut(id=r[0], display_name=r[1], birth_date=r[2], sex=r[3]) for r in rows]


@router.post("", status_code=status.HTTP_201_CREATED, summary="Create a patient record (admin)", responses=ADMIN_ERRORS)
async def create_record(body: PatientIn, request: Request, admin: CurrentAdmin, pool: Pool) -> PatientRecordOut:
    """Then create the patient's account (``POST /users``, role patient) and enrol their gateway."""
    async with pool.connection() as conn:
        pid = await create_patient(conn, body.display_name, birth_date=body.birth_date, sex=body.sex)
    await audit(pool, admin, action="patient.create", resource="POST /api/v1/admin/patients", outcome="success",
                patient_id=pid, client_addr=client_addr(request))  # fmt: skip
    return PatientRecordOut(id=pid, display_name=body.display_name, birth_date=body.birth_date, sex=body.sex)
