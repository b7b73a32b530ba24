"""Administration for prescriptions (issue 18): pharmacies, their pharmacist accounts, doctors' registration numbers.

Admins only. A pharmacist account belongs to one pharmacy (``users.pharmacy_id``); a doctor needs a registration
number (INPE) to issue prescriptions (it is printed and signed).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, status
from pydantic import Field

from teleconsult.api.deps import CurrentAdmin, Pool
from teleconsult.api.schemas import ApiModel, SafeText
from teleconsult.errors import ConflictError, NotFoundError
from teleconsult.prescriptions import store
from teleconsult.prescriptions.views import pharmacy_json

router = APIRouter(tags=["pharmacies"])


class PharmacyIn(ApiModel):
    """A new pharmacy."""

    name: Annotated[SafeText, Field(min_length=1, max_length=200)]
    city: Annotated[SafeText, Field(max_length=100)] = ""
    address: Annotated[SafeText, Field(max_length=300)] = ""
    license_no: Annotated[SafeText, Field(max_length=60)] = ""


class MemberIn(ApiModel):
    """A pharmacist account to link."""

    user_id: uuid.UUID


class RegistrationIn(ApiModel):
    """A doctor's registration number."""

    registration_number: Annotated[SafeText, Field(min_length=1, max_length=60)]


@router.post("/pharmacies", status_code=status.HTTP_201_CREATED, summary="Create a pharmacy")
async def create_pharmacy(body: PharmacyIn, _admin: CurrentAdmin, pool: Pool) -> dict[str, Any]:
    """Admins only."""
    async with pool.connection() as conn:
        p, created = await store.create_pharmacy(
            conn, name=body.name, city=body.city, address=body.address, license_no=body.license_no
        )
    return pharmacy_json(p, full=True) | {"created_at": created.isoformat()}


@router.get("/pharmacies", summary="All pharmacies")
async def list_pharmacies(_admin: CurrentAdmin, pool: Pool) -> list[dict[str, Any]]:
    """Admins only."""
    async with pool.connection() as conn:
        rows = await store.list_pharmacies(conn)
    return [pharmacy_json(p, full=True) | {"created_at": c.isoformat()} for p, c in rows]


@router.post("/pharmacies/{pharmacy_id}/members", summary="Link a pharmacist account to a pharmacy")
async def add_member(pharmacy_id: uuid.UUID, body: MemberIn, _admin: CurrentAdmin, pool: Pool) -> dict[str, str]:
    """The account must be a pharmacist (409 otherwise)."""
    async with pool.connection() as conn:
        if not await store.pharmacy_exists(conn, pharmacy_id):
            raise NotFoundError("pharmacy", pharmacy_id)
        role = await store.add_member(conn, pharmacy_id, body.user_id)
    if role is None:
        raise NotFoundError("user", body.user_id)
    if role != "pharmacist":
        raise ConflictError(f"user {body.user_id} is a {role}, not a pharmacist")
    return {"user_id": str(body.user_id), "pharmacy_id": str(pharmacy_id)}


@router.put("/practitioners/{user_id}", summary="Set a doctor's registration number")
async def set_registration(
    user_id: uuid.UUID, body: RegistrationIn, _admin: CurrentAdmin, pool: Pool
) -> dict[str, str]:
    """Doctors only (409 for another role)."""
    async with pool.connection() as conn:
        role = await store.set_registration(conn, user_id, body.registration_number.strip())
    if role is None:
        raise NotFoundError("user", user_id)
    if role != "doctor":
        raise ConflictError(f"user {user_id} is a {role}, not a doctor")
    return {"user_id": str(user_id), "registration_number": body.registration_number.strip()}
