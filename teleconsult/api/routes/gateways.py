"""Gateway and device enrolment for admins (issue 19 item 6), and the gateway's redemption of its provisioning code.

Admin only, audited: enrol a gateway for a patient (returns a one-time provisioning code and its QR, shown once),
list gateways, revoke one (its MQTT login is refused at once: the broker's files are rewritten and it is SIGHUPed),
list/enrol/unenrol devices. ``POST /gateways/provision`` is the only unauthenticated route: the code is the credential.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Final, Literal

import segno
from fastapi import APIRouter, Request, status
from pydantic import Field

from teleconsult.api.deps import AppSettings, CurrentAdmin, Pool, audit, client_addr
from teleconsult.api.schemas import ApiModel, SafeText
from teleconsult.errors import AuthenticationError
from teleconsult.security import provisioning
from teleconsult.security.enrolment import BrokerFiles
from teleconsult.settings import Settings

router = APIRouter(prefix="/gateways", tags=["gateways"])

GatewayId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
URI_PREFIX: Final = "tbib-provision:"


class ErrorOut(ApiModel):
    """Every error body: ``{"detail": "..."}``."""

    detail: str


ADMIN_ERRORS: Final[dict[int | str, dict[str, object]]] = {
    401: {"model": ErrorOut, "description": "not logged in"},
    403: {"model": ErrorOut, "description": "not an admin"},
}


class EnrolIn(ApiModel):
    """A gateway to enrol for a patient."""

    gateway_id: GatewayId
    patient_id: uuid.UUID
    ttl_s: Annotated[int, Field(ge=60, le=86_400)] = provisioning.DEFAULT_TTL_S


class CodeOut(ApiModel):
    """The one-time provisioning code (shown once; only its hash is stored)."""

    gateway_id: str
    patient_id: uuid.UUID
    code: str
    expires_at: datetime
    uri: str
    """What the QR encodes: ``tbib-provision:<gateway_id>:<code>``."""
    qr_svg: str


class GatewayOut(ApiModel):
    """A gateway as listed."""

    gateway_id: str
    patient_id: uuid.UUID | None
    patient_name: str | None
    credential: Literal["none", "active", "revoked"]
    code_expires_at: datetime | None
    last_seen_at: datetime | None
    devices: int


class RedeemIn(ApiModel):
    """What the gateway sends (over HTTPS)."""

    code: Annotated[str, Field(min_length=4, max_length=40, pattern=r"^[A-Za-z0-9 -]+$")]


class CredentialOut(ApiModel):
    """The gateway's MQTT credential (the password is shown once; configure it as the gateway's MQTT password)."""

    gateway_id: str
    mqtt_username: str
    mqtt_password: str


class RevokeOut(ApiModel):
    """Outcome of a revocation."""

    gateway_id: str
    revoked: bool
    broker_reloaded: bool
    """False when this node has no broker files configured (run ``tbib pki sync-broker`` where they are)."""


class DeviceIn(ApiModel):
    """A device to enrol on a gateway (BLE address as the gateway reports it)."""

    address: Annotated[SafeText, Field(min_length=1, max_length=64)]
    model: Annotated[SafeText, Field(max_length=100)] | None = None
    kind: Annotated[SafeText, Field(max_length=40)] | None = None


class DeviceOut(ApiModel):
    """A device of a gateway."""

    id: uuid.UUID
    gateway_id: str
    patient_id: uuid.UUID | None
    address: str
    model: str | None
    kind: str | None
    enrolled_at: datetime
    unenrolled_at: datetime | None

    @classmethod
    def of(cls, d: provisioning.DeviceRow) -> DeviceOut:
        """From the domain value."""
        return cls(
            id=d.id,
            gateway_id=d.gateway_id,
            patient_id=d.patient_id,
            address=d.address,
            model=d.model,
            kind=d.kind,
            enrolled_at=d.enrolled_at,
            unenrolled_at=d.unenrolled_at,
        )


def broker_files(settings: Settings) -> BrokerFiles | None:
    """The broker files this node rewrites, from settings (None when not configured)."""
    if settings.mosquitto_passwd_file is None or settings.mosquitto_acl_file is None:
        return None
    return BrokerFiles(settings.mosquitto_passwd_file, settings.mosquitto_acl_file, settings.mosquitto_pid_file)


@router.get("", summary="List gateways (admin)", responses=ADMIN_ERRORS)
async def list_gateways(_admin: CurrentAdmin, pool: Pool) -> list[GatewayOut]:
    """Every gateway with its patient, credential state (none/active/revoked), pending code expiry, device count."""
    async with pool.connection() as conn:
        rows = await provisioning.list_gateways(conn, datetime.now(UTC))
    return [
        GatewayOut(
            gateway_id=g.gateway_id,
            patient_id=g.patient_id,
            patient_name=g.patient_name,
            credential=g.credential,
            code_expires_at=g.code_expires_at,
            last_seen_at=g.last_seen_at,
            devices=g.devices,
        )
        for g in rows
    ]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Enrol a gateway for a patient: one-time provisioning code (admin)",
    responses={
        **ADMIN_ERRORS,
        404: {"model": ErrorOut, "description": "unknown patient"},
        409: {"model": ErrorOut, "description": "gateway bound to another patient, or a service account name"},
    },
)
async def enrol_gateway(body: EnrolIn, request: Request, admin: CurrentAdmin, pool: Pool) -> CodeOut:
    """Binds the gateway to the patient and returns a code valid ``ttl_s`` seconds, once (new codes void old ones)."""
    async with pool.connection() as conn:
        issued = await provisioning.issue_code(
            conn, gateway_id=body.gateway_id, patient_id=body.patient_id, created_by=admin.id,
            now=datetime.now(UTC), ttl_s=body.ttl_s,
        )  # fmt: skip
    await audit(pool, admin, action="gateway.enrol", resource="POST /api/v1/gateways", outcome="success",
                patient_id=issued.patient_id, client_addr=client_addr(request),
                detail={"gateway_id": issued.gateway_id, "expires_at": issued.expires_at.isoformat()})  # fmt: skip
    uri = f"{URI_PREFIX}{issued.gateway_id}:{issued.code}"
    return CodeOut(
        gateway_id=issued.gateway_id,
        patient_id=issued.patient_id,
        code=issued.code,
        expires_at=issued.expires_at,
        uri=uri,
        qr_svg=segno.make(uri, error="m").svg_inline(scale=5, title=f"{issued.gateway_id} provisioning code"),
    )


@router.post(
    "/provision",
    summary="Redeem a provisioning code for the MQTT credential (gateway, no login)",
    responses={401: {"model": ErrorOut, "description": "invalid, expired or already used code"}},
)
async def redeem(body: RedeemIn, request: Request, pool: Pool, settings: AppSettings) -> CredentialOut:
    """Single use: the credential is created (or re-keyed), and the broker reloads its password file."""
    try:
        async with pool.connection() as conn:
            gateway_id, secret = await provisioning.redeem(conn, code=body.code, now=datetime.now(UTC))
            await provisioning.sync_broker(conn, broker_files(settings))
    except AuthenticationError:
        await audit(pool, None, action="gateway.provision", resource="POST /api/v1/gateways/provision",
                    outcome="denied", client_addr=client_addr(request), actor_username="gateway:?")  # fmt: skip
        raise
    await audit(pool, None, action="gateway.provision", resource="POST /api/v1/gateways/provision",
                outcome="success", client_addr=client_addr(request), actor_username=f"gateway:{gateway_id}",
                detail={"gateway_id": gateway_id})  # fmt: skip
    return CredentialOut(gateway_id=gateway_id, mqtt_username=gateway_id, mqtt_password=secret)


@router.post(
    "/{gateway_id}/revoke",
    summary="Revoke a gateway: its MQTT login stops working at once (admin)",
    responses={**ADMIN_ERRORS, 404: {"model": ErrorOut, "description": "no live credential nor pending code"}},
)
async def revoke_gateway(
    gateway_id: GatewayId, request: Request, admin: CurrentAdmin, pool: Pool, settings: AppSettings
) -> RevokeOut:
    """Ends the credential, voids pending codes, rewrites the broker's files and SIGHUPs it (live session dropped)."""
    async with pool.connection() as conn:
        await provisioning.revoke(conn, gateway_id, datetime.now(UTC))
        reloaded = await provisioning.sync_broker(conn, broker_files(settings))
    await audit(pool, admin, action="gateway.revoke", resource="POST /api/v1/gateways/{gateway_id}/revoke",
                outcome="success", client_addr=client_addr(request),
                detail={"gateway_id": gateway_id, "broker_reloaded": reloaded})  # fmt: skip
    return RevokeOut(gateway_id=gateway_id, revoked=True, broker_reloaded=reloaded)


@router.get(
    "/{gateway_id}/devices",
    summary="A gateway's devices (admin)",
    responses={**ADMIN_ERRORS, 404: {"model": ErrorOut, "description": "unknown gateway"}},
)
async def list_devices(gateway_id: GatewayId, _admin: CurrentAdmin, pool: Pool) -> list[DeviceOut]:
    """Enrolled and unenrolled devices (``unenrolled_at`` set)."""
    async with pool.connection() as conn:
        return [DeviceOut.of(d) for d in await provisioning.list_devices(conn, gateway_id)]


@router.post(
    "/{gateway_id}/devices",
    status_code=status.HTTP_201_CREATED,
    summary="Enrol a device on a gateway (admin)",
    responses={
        **ADMIN_ERRORS,
        404: {"model": ErrorOut, "description": "unknown gateway"},
        409: {"model": ErrorOut, "description": "gateway without a patient"},
    },
)
async def enrol_device(
    gateway_id: GatewayId, body: DeviceIn, request: Request, admin: CurrentAdmin, pool: Pool
) -> DeviceOut:
    """Readings of this address on this gateway go to the gateway's patient (re-enrolling clears an unenrolment)."""
    async with pool.connection() as conn:
        d = await provisioning.enrol_device(
            conn, gateway_id, address=body.address, model=body.model, kind=body.kind, now=datetime.now(UTC)
        )
    await audit(pool, admin, action="device.enrol", resource="POST /api/v1/gateways/{gateway_id}/devices",
                outcome="success", patient_id=d.patient_id, client_addr=client_addr(request),
                detail={"gateway_id": gateway_id, "device_id": str(d.id), "address": d.address})  # fmt: skip
    return DeviceOut.of(d)


@router.post(
    "/{gateway_id}/devices/{device_id}/unenrol",
    summary="Unenrol a device (admin)",
    responses={**ADMIN_ERRORS, 404: {"model": ErrorOut, "description": "no such enrolled device on this gateway"}},
)
async def unenrol_device(
    gateway_id: GatewayId, device_id: uuid.UUID, request: Request, admin: CurrentAdmin, pool: Pool
) -> DeviceOut:
    """Its readings are no longer stored for the patient (ingest refreshes its map); history is kept."""
    async with pool.connection() as conn:
        d = await provisioning.unenrol_device(conn, gateway_id, device_id, datetime.now(UTC))
    await audit(pool, admin, action="device.unenrol",
                resource="POST /api/v1/gateways/{gateway_id}/devices/{device_id}/unenrol", outcome="success",
                patient_id=d.patient_id, client_addr=client_addr(request),
                detail={"gateway_id": gateway_id, "device_id": str(d.id)})  # fmt: skip
    return DeviceOut.of(d)
