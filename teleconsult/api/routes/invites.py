"""Invitation links to a teleconsultation for guests without an account (issue 19 item 3: nurse, interpreter, family).

- ``POST /patients/{patient_id}/consultations/{consultation_id}/invites`` (the consultation's doctor): a one-time link
  ``/consult/guest#invite=<secret>`` for a role and a name; the secret is shown once, only its hash is stored.
- ``GET .../invites`` (the consultation's doctor): the invitations and their status (pending, used, expired, revoked).
- ``DELETE .../invites/{invite_id}`` (the consultation's doctor): withdraw an unused invitation.
- ``POST /invites/redeem`` (no login: the secret is the credential): use the link once for a short-lived join token;
  the guest then waits in the room's lobby until the doctor admits or refuses them. Audited either way.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Final, Literal

from fastapi import APIRouter, Request, Response, status
from pydantic import Field

from teleconsult.api.deps import PatientAccess, Pool, audit, client_addr
from teleconsult.api.schemas import ApiModel, SafeText
from teleconsult.errors import AuthenticationError, AuthorizationError, NotFoundError, TeleconsultError
from teleconsult.security.consent import require_consent
from teleconsult.security.models import ConsentPurpose
from teleconsult.signaling import invite_store, record
from teleconsult.signaling.invites import Invite, InviteError
from teleconsult.signaling.tokens import DEFAULT_TTL, Role, issue_token

router = APIRouter(tags=["consultations"])
BASE: Final = "/patients/{patient_id}/consultations/{consultation_id}/invites"


class ErrorOut(ApiModel):
    """Every error body: ``{"detail": "..."}``."""

    detail: str


DOCTOR_ERRORS: Final[dict[int | str, dict[str, object]]] = {
    401: {"model": ErrorOut, "description": "not logged in"},
    403: {"model": ErrorOut, "description": "not the consultation's doctor, no consent, or the consultation ended"},
    404: {"model": ErrorOut, "description": "unknown consultation (or invitation)"},
}


class InviteIn(ApiModel):
    """Who the link is for."""

    role: Literal["nurse", "interpreter", "family"]
    name: Annotated[SafeText, Field(min_length=1, max_length=80)]
    """Shown to the doctor in the waiting room."""
    ttl_minutes: Annotated[int, Field(ge=5, le=2880)] = 120


class InviteOut(ApiModel):
    """An invitation (without its secret)."""

    id: uuid.UUID
    consultation_id: uuid.UUID
    role: str
    name: str
    created_at: datetime
    expires_at: datetime
    status: Literal["pending", "used", "expired", "revoked"]

    @classmethod
    def of(cls, i: Invite, now: datetime) -> InviteOut:
        """From the domain value."""
        return cls(id=i.id, consultation_id=i.consultation_id, role=i.role.value, name=i.name,
                   created_at=i.created_at, expires_at=i.expires_at, status=i.status(now))  # fmt: skip


class InviteCreated(InviteOut):
    """The new invitation with its link (shown once)."""

    link_path: str
    """``/consult/guest#invite=<secret>``: the secret travels in the fragment, never in a server log."""


class RedeemIn(ApiModel):
    """The secret of an invitation link."""

    secret: Annotated[str, Field(min_length=20, max_length=200)]


class RedeemOut(ApiModel):
    """A join token for the guest's seat."""

    token: str
    role: str
    name: str
    consultation_id: uuid.UUID
    expires_at: datetime
    signaling_path: str = "/ws/v1/signaling"


async def _doctor_consultation(access: PatientAccess, pool: Pool, consultation_id: uuid.UUID) -> record.Consultation:
    async with pool.connection() as conn:
        c = await record.get(conn, consultation_id, access.patient_id)
    if access.user.id != c.doctor_id:
        raise AuthorizationError("only the consultation's doctor manages its invitations")
    return c


@router.post(BASE, status_code=status.HTTP_201_CREATED, summary="Invite a guest to a teleconsultation",
             responses=DOCTOR_ERRORS)  # fmt: skip
async def create_invite(
    request: Request, consultation_id: uuid.UUID, body: InviteIn, access: PatientAccess, pool: Pool
) -> InviteCreated:
    """A one-time link for a nurse, an interpreter or a family member; they wait in the lobby until admitted."""
    c = await _doctor_consultation(access, pool, consultation_id)
    if c.ended_at is not None:
        raise AuthorizationError("this consultation has ended")
    now = datetime.now(UTC)
    async with pool.connection() as conn:
        await require_consent(conn, access.patient_id, ConsentPurpose.TELECONSULTATION)
        try:
            inv, secret = await invite_store.create(
                conn, consultation_id=c.id, role=Role(body.role), name=body.name, created_by=access.user.id,
                now=now, ttl=timedelta(minutes=body.ttl_minutes),
            )  # fmt: skip
        except InviteError as exc:
            raise AuthorizationError(str(exc)) from exc
    await audit(pool, access.user, action="consultation.invite", resource=f"POST /api/v1{BASE}", outcome="success",
                patient_id=access.patient_id, client_addr=client_addr(request),
                detail={"consultation_id": str(c.id), "invite_id": str(inv.id), "role": body.role})  # fmt: skip
    base = InviteOut.of(inv, now)
    return InviteCreated(**base.model_dump(), link_path=f"/consult/guest#invite={secret}")


@router.get(BASE, summary="Invitations of a teleconsultation", responses=DOCTOR_ERRORS)
async def list_invites(consultation_id: uuid.UUID, access: PatientAccess, pool: Pool) -> list[InviteOut]:
    """Oldest first, with their status."""
    c = await _doctor_consultation(access, pool, consultation_id)
    now = datetime.now(UTC)
    async with pool.connection() as conn:
        return [InviteOut.of(i, now) for i in await invite_store.list_for(conn, c.id)]


@router.delete(BASE + "/{invite_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Withdraw an invitation",
               responses=DOCTOR_ERRORS)  # fmt: skip
async def revoke_invite(
    consultation_id: uuid.UUID, invite_id: uuid.UUID, access: PatientAccess, pool: Pool
) -> Response:
    """Only an unused invitation can be withdrawn."""
    c = await _doctor_consultation(access, pool, consultation_id)
    async with pool.connection() as conn:
        if not await invite_store.revoke(conn, c.id, invite_id, datetime.now(UTC)):
            raise NotFoundError("unused invitation", invite_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


REDEEM_ERRORS: Final[dict[int | str, dict[str, object]]] = {
    401: {"model": ErrorOut, "description": "unknown, used, expired or withdrawn link"},
}


@router.post("/invites/redeem", summary="Use an invitation link (guest, no login)", responses=REDEEM_ERRORS)
async def redeem_invite(body: RedeemIn, request: Request, pool: Pool) -> RedeemOut:
    """Works once: the join token that comes back is the guest's only credential (valid a few minutes)."""
    service = getattr(request.app.state, "signaling", None)
    if service is None:
        raise TeleconsultError("signaling is not enabled on this server")
    now = datetime.now(UTC)
    try:
        async with pool.connection() as conn:
            inv = await invite_store.redeem(conn, body.secret, now)
    except InviteError as exc:
        await audit(pool, None, action="consultation.invite.redeem", resource="POST /api/v1/invites/redeem",
                    outcome="denied", client_addr=client_addr(request), actor_username="guest:?",
                    detail={"code": exc.code})  # fmt: skip
        raise AuthenticationError(str(exc)) from exc
    await audit(pool, None, action="consultation.invite.redeem", resource="POST /api/v1/invites/redeem",
                outcome="success", client_addr=client_addr(request), actor_username=inv.subject,
                detail={"consultation_id": str(inv.consultation_id), "role": inv.role.value})  # fmt: skip
    ttl: timedelta = getattr(request.app.state, "signaling_token_ttl", DEFAULT_TTL)
    token = issue_token(key=service.core.config.token_key, consultation_id=str(inv.consultation_id), role=inv.role,
                        subject=inv.subject, now=now, ttl=ttl, name=inv.name)  # fmt: skip
    return RedeemOut(token=token, role=inv.role.value, name=inv.name, consultation_id=inv.consultation_id,
                     expires_at=now + ttl)  # fmt: skip
