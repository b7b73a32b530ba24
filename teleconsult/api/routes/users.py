"""Account management for admins (no clinical data here)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Request, status
from pydantic import Field

from teleconsult.api.deps import CurrentAdmin, Pool, audit, client_addr
from teleconsult.api.schemas import ApiModel, Password, SafeText, Username, UserOut
from teleconsult.errors import ConflictError, NotFoundError
from teleconsult.prescriptions import store as rx_store
from teleconsult.security import accounts
from teleconsult.security.models import Role

router = APIRouter(prefix="/users", tags=["users"])


class UserCreate(ApiModel):
    """A new account; patient accounts name their patient record."""

    username: Username
    password: Password
    role: Role
    display_name: Annotated[SafeText, Field(max_length=200)] = ""
    patient_id: uuid.UUID | None = None
    pharmacy_id: uuid.UUID | None = None
    """Pharmacist accounts only: the pharmacy they work at (``POST /pharmacies``); linked in the same transaction."""


@router.get("", summary="List accounts")
async def list_users(_admin: CurrentAdmin, pool: Pool) -> list[UserOut]:
    """Every account."""
    async with pool.connection() as conn:
        return [UserOut.of(u) for u in await accounts.list_users(conn)]


@router.post("", status_code=status.HTTP_201_CREATED, summary="Create an account")
async def create_user(body: UserCreate, request: Request, admin: CurrentAdmin, pool: Pool) -> UserOut:
    """409 for a taken username, a password under 10 characters, a role/patient or role/pharmacy mismatch; 404 unknown
    patient or pharmacy."""
    if body.pharmacy_id is not None and body.role is not Role.PHARMACIST:
        raise ConflictError("only pharmacist accounts belong to a pharmacy")
    async with pool.connection() as conn, conn.transaction():
        if body.pharmacy_id is not None and not await rx_store.pharmacy_exists(conn, body.pharmacy_id):
            raise NotFoundError("pharmacy", body.pharmacy_id)
        user = await accounts.create_user(
            conn,
            username=body.username,
            password=body.password,
            role=body.role,
            display_name=body.display_name,
            patient_id=body.patient_id,
        )
        if body.pharmacy_id is not None:
            await rx_store.add_member(conn, body.pharmacy_id, user.id)
    await audit(pool, admin, action="user.create", resource="POST /api/v1/users", outcome="success",
                client_addr=client_addr(request), detail={"user": user.username, "role": user.role.value})  # fmt: skip
    return UserOut.of(user)


async def _set_disabled(
    request: Request, admin: CurrentAdmin, pool: Pool, user_id: uuid.UUID, disabled: bool
) -> UserOut:
    async with pool.connection() as conn:
        user = await accounts.set_disabled(conn, user_id, disabled, datetime.now(UTC))
    action = "user.disable" if disabled else "user.enable"
    await audit(pool, admin, action=action, resource=f"POST /api/v1/users/{{user_id}}/{action[5:]}", outcome="success",
                client_addr=client_addr(request), detail={"user": user.username})  # fmt: skip
    return UserOut.of(user)


@router.post("/{user_id}/disable", summary="Disable an account (ends its sessions)")
async def disable_user(user_id: uuid.UUID, request: Request, admin: CurrentAdmin, pool: Pool) -> UserOut:
    """The account can no longer log in; its tokens stop working immediately."""
    return await _set_disabled(request, admin, pool, user_id, True)


@router.post("/{user_id}/enable", summary="Re-enable an account")
async def enable_user(user_id: uuid.UUID, request: Request, admin: CurrentAdmin, pool: Pool) -> UserOut:
    """Undo a disable."""
    return await _set_disabled(request, admin, pool, user_id, False)
