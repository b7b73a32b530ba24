"""Calls started from the dashboard (issue 19 item 2): the doctor rings the patient's gateway.

- ``POST /patients/{patient_id}/consultations/{consultation_id}/call``: the consultation's assigned doctor; the
  server issues an ``agent`` join token and publishes a signed ``join`` command to the patient's gateway
  (:mod:`teleconsult.calls`). The answer says ``ringing`` (sent) or ``offline`` (no gateway, gateway offline, no
  broker); later states arrive on ``/ws/v1/patients`` as ``{"type": "call", ...}`` frames.
- ``GET /calls/command-key``: the public key gateways verify commands with (``commands.server_keys``). Public.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request

from teleconsult.api.deps import PatientAccess, Pool, audit, client_addr
from teleconsult.api.schemas import ApiModel
from teleconsult.errors import AuthorizationError, TeleconsultError
from teleconsult.security.consent import require_consent
from teleconsult.security.models import ConsentPurpose
from teleconsult.signaling import record
from teleconsult.signaling.tokens import DEFAULT_TTL, Role, issue_token

router = APIRouter(tags=["consultations"])


class CallOut(ApiModel):
    """What the click did."""

    call_id: str | None
    state: str
    """``ringing`` (command sent) or ``offline``."""
    reason: str | None = None
    gateway_id: str | None = None


class CommandKeyOut(ApiModel):
    """The server's command-signing public key."""

    alg: str = "Ed25519"
    kid: str
    public_key: str
    """base64url of the raw 32-byte key."""


@router.get("/calls/command-key", summary="Public key of the server's gateway commands")
async def command_key(request: Request) -> CommandKeyOut:
    """Gateways put it in ``commands.server_keys``."""
    service = getattr(request.app.state, "calls", None)
    if service is None:
        raise TeleconsultError("calls are not enabled on this server")
    return CommandKeyOut(kid=service.signer.kid, public_key=service.signer.public_key_text)


@router.post("/patients/{patient_id}/consultations/{consultation_id}/call", summary="Ring the patient's gateway")
async def call_gateway(request: Request, consultation_id: uuid.UUID, access: PatientAccess, pool: Pool) -> CallOut:
    """The gateway's consult agent joins the consultation's room."""
    async with pool.connection() as conn:
        c = await record.get(conn, consultation_id, access.patient_id)
        await require_consent(conn, access.patient_id, ConsentPurpose.TELECONSULTATION)
        cur = await conn.execute(
            "select g.id from gateways g where g.patient_id = %s and not exists"
            " (select 1 from gateway_credentials gc where gc.gateway_id = g.id and gc.revoked_at is not null)"
            " order by g.last_seen_at desc nulls last, g.created_at desc limit 1",
            (access.patient_id,),
        )
        row = await cur.fetchone()
    if c.ended_at is not None:
        raise AuthorizationError("this consultation has ended")
    if access.user.id != c.doctor_id:
        raise AuthorizationError("only the consultation's doctor can call the patient")
    service = getattr(request.app.state, "calls", None)
    signaling = getattr(request.app.state, "signaling", None)
    if service is None or signaling is None:
        raise TeleconsultError("calls are not enabled on this server")
    if row is None:
        return CallOut(call_id=None, state="offline", reason="no-gateway")
    gateway_id = str(row[0])
    ttl: timedelta = getattr(request.app.state, "signaling_token_ttl", DEFAULT_TTL)
    token = issue_token(key=signaling.core.config.token_key, consultation_id=str(c.id), role=Role.AGENT,
                        subject=f"gateway-of-{c.patient_id}", now=datetime.now(UTC), ttl=ttl)  # fmt: skip
    server = str(request.base_url).rstrip("/")
    call = await service.place(
        patient_id=access.patient_id, gateway_id=gateway_id, room=str(c.id), token=token, server=server
    )
    await audit(pool, access.user, action="call", resource=f"gateway {gateway_id}", outcome="allowed",
                client_addr=client_addr(request), detail={"consultation_id": str(c.id), "call_id": call.call_id,
                "state": call.state},
                patient_id=access.patient_id)  # fmt: skip
    return CallOut(call_id=call.call_id, state=call.state, gateway_id=gateway_id, reason=call.reason)
