"""A patient's allergy list (issue 18): read by the care team and the patient, replaced by a doctor or nurse on it.

Used by the prescription checks (``allergy`` warning). See docs/prescriptions.md.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import Field

from teleconsult.api.deps import PatientAccess, Pool
from teleconsult.api.schemas import ApiModel, SafeText
from teleconsult.errors import AuthorizationError
from teleconsult.prescriptions import store
from teleconsult.prescriptions.model import Allergy
from teleconsult.security.models import Role

router = APIRouter(prefix="/patients/{patient_id}/allergies", tags=["prescriptions"])


class AllergyIn(ApiModel):
    """One allergy: a substance (DCI) and optionally an ATC prefix for its class."""

    substance: Annotated[SafeText, Field(min_length=1, max_length=120)]
    atc: Annotated[str, Field(pattern=r"^[A-Za-z]\d{2}[A-Za-z0-9]{0,4}$")] | None = None
    note: Annotated[SafeText, Field(max_length=300)] = ""


class AllergiesIn(ApiModel):
    """The whole list."""

    allergies: Annotated[list[AllergyIn], Field(max_length=50)]


def _out(patient_id: object, items: list[Allergy], updated_at: Any) -> dict[str, Any]:
    return {
        "patient_id": str(patient_id),
        "allergies": [{"substance": a.substance, "atc": a.atc, "note": a.note} for a in items],
        "updated_at": updated_at.isoformat() if updated_at else None,
    }


@router.get("", summary="A patient's allergies")
async def get_allergies(access: PatientAccess, pool: Pool) -> dict[str, Any]:
    """Care team or the patient."""
    async with pool.connection() as conn:
        items, updated = await store.allergies(conn, access.patient_id)
    return _out(access.patient_id, items, updated)


@router.put("", summary="Replace a patient's allergy list (doctor or nurse on the care team)")
async def put_allergies(access: PatientAccess, pool: Pool, body: AllergiesIn) -> dict[str, Any]:
    """The list as given."""
    if access.user.role not in (Role.DOCTOR, Role.NURSE):
        raise AuthorizationError("only a doctor or a nurse can record allergies")
    items = [Allergy(a.substance.strip(), a.atc.upper() if a.atc else None, a.note) for a in body.allergies]
    async with pool.connection() as conn:
        updated = await store.save_allergies(conn, access.patient_id, items, access.user.id)
    return _out(access.patient_id, items, updated)
