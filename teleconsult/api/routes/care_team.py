"""Care-team assignments: admins manage them; clinicians list their own."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from fastapi import APIRouter, Request, status

from teleconsult.api.deps import CurrentAdmin, CurrentUser, Pool, audit, client_addr
from teleconsult.api.schemas import ApiModel, UtcDatetime
from teleconsult.errors import AuthorizationError
from teleconsult.security import care_team
from teleconsult.security.care_team import Assignment
from teleconsult.security.models import Role

router = APIRouter(prefix="/care-team", tags=["care team"])


class AssignmentIn(ApiModel):
    """Assign a clinician (or an admin) to a patient from ``valid_from`` (default now) until ``valid_to`` (open)."""

    clinician_id: uuid.UUID
    patient_id: uuid.UUID
    valid_from: UtcDatetime | None = None
    valid_to: UtcDatetime | None = None


class AssignmentOut(ApiModel):
    """One assignment."""

    id: uuid.UUID
    clinician_id: uuid.UUID
    patient_id: uuid.UUID
    valid_from: datetime
    valid_to: datetime | None
    created_by: uuid.UUID | None

    @classmethod
    def of(cls, a: Assignment) -> AssignmentOut:
        """From the domain value."""
        return cls(
            id=a.id,
            clinician_id=a.clinician_id,
            patient_id=a.patient_id,
            valid_from=a.valid_from,
            valid_to=a.valid_to,
            created_by=a.created_by,
        )


@router.get("", summary="List assignments (admin)")
async def list_assignments(
    _admin: CurrentAdmin,
    pool: Pool,
    patient_id: uuid.UUID | None = None,
    clinician_id: uuid.UUID | None = None,
    active: bool = False,
) -> list[AssignmentOut]:
    """Filter by patient and/or clinician; ``active=true`` keeps those in force now."""
    async with pool.connection() as conn:
        rows = await care_team.list_assignments(
            conn, patient_id=patient_id, clinician_id=clinician_id, active_at=datetime.now(UTC) if active else None
        )
    return [AssignmentOut.of(a) for a in rows]


@router.post("", status_code=status.HTTP_201_CREATED, summary="Assign a clinician to a patient (admin)")
async def create_assignment(body: AssignmentIn, request: Request, admin: CurrentAdmin, pool: Pool) -> AssignmentOut:
    """404 unknown user or patient; 409 for a patient account or an empty period."""
    async with pool.connection() as conn:
        a = await care_team.assign(
            conn,
            clinician_id=body.clinician_id,
            patient_id=body.patient_id,
            valid_from=body.valid_from,
            valid_to=body.valid_to,
            created_by=admin.id,
        )
    await audit(pool, admin, action="care_team.assign", resource="POST /api/v1/care-team", outcome="success",
                patient_id=a.patient_id, client_addr=client_addr(request),
                detail={"assignment": str(a.id), "clinician_id": str(a.clinician_id)})  # fmt: skip
    return AssignmentOut.of(a)


@router.post("/{assignment_id}/end", summary="End an assignment now (admin)")
async def end_assignment(assignment_id: uuid.UUID, request: Request, admin: CurrentAdmin, pool: Pool) -> AssignmentOut:
    """The clinician loses access immediately; the history is kept."""
    async with pool.connection() as conn:
        a = await care_team.end_assignment(conn, assignment_id)
    await audit(pool, admin, action="care_team.end", resource="POST /api/v1/care-team/{assignment_id}/end",
                outcome="success", patient_id=a.patient_id, client_addr=client_addr(request),
                detail={"assignment": str(a.id), "clinician_id": str(a.clinician_id)})  # fmt: skip
    return AssignmentOut.of(a)


@router.get("/mine", summary="My active assignments (clinicians)")
async def my_assignments(user: CurrentUser, pool: Pool) -> list[AssignmentOut]:
    """The patients the caller may see now, with the period of each assignment."""
    if user.role is Role.PATIENT:
        raise AuthorizationError("patients have no care-team assignments")
    async with pool.connection() as conn:
        rows = await care_team.list_assignments(conn, clinician_id=user.id, active_at=datetime.now(UTC))
    return [AssignmentOut.of(a) for a in rows]
