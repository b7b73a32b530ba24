"""Gateway provisioning from the admin UI: one-time codes, redemption for the MQTT credential, revocation, devices.

An admin enrols a gateway for a patient (:func:`issue_code`): the server returns a one-time provisioning code, shown
once (and as a QR), stored as sha256 only (the code has 60 random bits, so a fast hash is enough), valid for
``ttl_s`` seconds and redeemable once; issuing a new code voids the gateway's unused ones. The gateway redeems it over
HTTPS (:func:`redeem`) and receives its MQTT password, stored hashed like every broker credential (Mosquitto ``$7$``,
:mod:`teleconsult.security.enrolment`). :func:`revoke` ends the credential; the API then rewrites the broker's files
and SIGHUPs it (:func:`sync_broker`), which refuses the login and drops the live connection at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from psycopg import AsyncConnection, errors

from teleconsult.errors import AuthenticationError, ConflictError, NotFoundError
from teleconsult.security import enrolment, mosquitto

#: Crockford base32 (no I, L, O, U): easy to read aloud and to type.
ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_CHARS: Final = 12
DEFAULT_TTL_S: Final = 900
BAD_CODE: Final = "invalid, expired or already used provisioning code"


@dataclass(frozen=True, slots=True)
class IssuedCode:
    """A provisioning code as shown once to the admin."""

    gateway_id: str
    patient_id: uuid.UUID
    code: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class GatewayRow:
    """One gateway as the admin pages list it."""

    gateway_id: str
    patient_id: uuid.UUID | None
    patient_name: str | None
    credential: str
    """``none`` (never redeemed), ``active`` or ``revoked``."""
    code_expires_at: datetime | None
    """Expiry of the pending (unused, unexpired) provisioning code, if any."""
    last_seen_at: datetime | None
    devices: int


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """One device of a gateway."""

    id: uuid.UUID
    gateway_id: str
    patient_id: uuid.UUID | None
    address: str
    model: str | None
    kind: str | None
    enrolled_at: datetime
    unenrolled_at: datetime | None


def new_code() -> str:
    """12 random Crockford base32 characters, grouped ``XXXX-XXXX-XXXX``."""
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_CHARS))
    return "-".join(raw[i : i + 4] for i in range(0, CODE_CHARS, 4))


def normalize_code(code: str) -> str:
    """Upper case, without separators; O->0 and I/L->1 as Crockford reads them."""
    cleaned = "".join(ch for ch in code.upper() if ch not in "- ")
    return cleaned.translate(str.maketrans("OIL", "011"))


def code_hash(code: str) -> bytes:
    """What is stored: sha256 of the normalized code."""
    return hashlib.sha256(normalize_code(code).encode()).digest()


def gateway_name(gateway_id: str) -> str:
    """``gateway_id`` if it is a valid broker username, else :class:`ConflictError`."""
    try:
        return mosquitto.check_username(gateway_id)
    except ValueError as exc:
        raise ConflictError(str(exc)) from exc


async def issue_code(
    conn: AsyncConnection[Any],
    *,
    gateway_id: str,
    patient_id: uuid.UUID,
    created_by: uuid.UUID | None,
    now: datetime,
    ttl_s: int = DEFAULT_TTL_S,
) -> IssuedCode:
    """Bind ``gateway_id`` to ``patient_id`` and issue a new one-time code (voiding unused ones)."""
    name = gateway_name(gateway_id)
    code = new_code()
    async with conn.transaction():
        cur = await conn.execute("select 1 from broker_service_accounts where username = %s", (name,))
        if await cur.fetchone():
            raise ConflictError(f"{name} is a service account name")
        cur = await conn.execute("select patient_id from gateways where id = %s for update", (name,))
        row = await cur.fetchone()
        if row is not None and row[0] is not None and row[0] != patient_id:
            raise ConflictError(f"gateway {name} belongs to another patient; revoke it and use a new id")
        try:
            await conn.execute(
                "insert into gateways (id, patient_id) values (%s, %s)"
                " on conflict (id) do update set patient_id = excluded.patient_id",
                (name, patient_id),
            )
        except errors.ForeignKeyViolation as exc:
            raise NotFoundError("patient", patient_id) from exc
        await conn.execute(
            "update gateway_provisioning_codes set voided_at = %s"
            " where gateway_id = %s and used_at is null and voided_at is null",
            (now, name),
        )
        expires = now + timedelta(seconds=ttl_s)
        await conn.execute(
            "insert into gateway_provisioning_codes (gateway_id, code_hash, created_at, created_by, expires_at)"
            " values (%s, %s, %s, %s, %s)",
            (name, code_hash(code), now, created_by, expires),
        )
    return IssuedCode(name, patient_id, code, expires)


async def redeem(conn: AsyncConnection[Any], *, code: str, now: datetime) -> tuple[str, str]:
    """Spend a code: ``(gateway_id, new MQTT secret)``; :class:`AuthenticationError` for a bad or spent code."""
    secret = enrolment.new_secret()
    async with conn.transaction():
        cur = await conn.execute(
            "update gateway_provisioning_codes set used_at = %s where code_hash = %s and used_at is null"
            " and voided_at is null and expires_at > %s returning gateway_id",
            (now, code_hash(code), now),
        )
        row = await cur.fetchone()
        if row is None:
            raise AuthenticationError(BAD_CODE)
        gateway_id = str(row[0])
        await conn.execute(
            "insert into gateway_credentials (gateway_id, secret_hash, created_at, created_by) values (%s, %s, %s, %s)"
            " on conflict (gateway_id) do update set secret_hash = excluded.secret_hash,"
            " created_at = excluded.created_at, created_by = excluded.created_by, revoked_at = null",
            (gateway_id, mosquitto.hash_password(secret), now, "provisioning-code"),
        )
    return gateway_id, secret


async def revoke(conn: AsyncConnection[Any], gateway_id: str, now: datetime) -> None:
    """End the gateway's MQTT credential and void its pending codes; 404 when nothing was live."""
    name = gateway_name(gateway_id)
    async with conn.transaction():
        cur = await conn.execute(
            "update gateway_credentials set revoked_at = %s where gateway_id = %s and revoked_at is null"
            " returning gateway_id",
            (now, name),
        )
        revoked = await cur.fetchone()
        cur = await conn.execute(
            "update gateway_provisioning_codes set voided_at = %s"
            " where gateway_id = %s and used_at is null and voided_at is null and expires_at > %s returning id",
            (now, name, now),
        )
        voided = await cur.fetchall()
    if revoked is None and not voided:
        raise NotFoundError("live gateway credential or pending code", name)


async def list_gateways(conn: AsyncConnection[Any], now: datetime) -> list[GatewayRow]:
    """Every gateway with its patient, credential state, pending code and device count."""
    cur = await conn.execute(
        "select g.id, g.patient_id, p.display_name,"
        " case when c.gateway_id is null then 'none' when c.revoked_at is null then 'active' else 'revoked' end,"
        " (select max(expires_at) from gateway_provisioning_codes k where k.gateway_id = g.id and k.used_at is null"
        "  and k.voided_at is null and k.expires_at > %s),"
        " g.last_seen_at,"
        " (select count(*) from devices d where d.gateway_id = g.id and d.unenrolled_at is null)"
        " from gateways g left join patients p on p.id = g.patient_id"
        " left join gateway_credentials c on c.gateway_id = g.id order by g.id",
        (now,),
    )
    return [GatewayRow(r[0], r[1], r[2], r[3], r[4], r[5], int(r[6])) for r in await cur.fetchall()]


_DEVICE_COLS: Final = "id, gateway_id, patient_id, address, model, kind, enrolled_at, unenrolled_at"


def _device(r: tuple[Any, ...]) -> DeviceRow:
    return DeviceRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7])


async def list_devices(conn: AsyncConnection[Any], gateway_id: str) -> list[DeviceRow]:
    """The gateway's devices (unenrolled ones included, marked), 404 for an unknown gateway."""
    cur = await conn.execute("select 1 from gateways where id = %s", (gateway_id,))
    if await cur.fetchone() is None:
        raise NotFoundError("gateway", gateway_id)
    cur = await conn.execute(
        f"select {_DEVICE_COLS} from devices where gateway_id = %s order by address",  # noqa: S608
        (gateway_id,),
    )
    return [_device(r) for r in await cur.fetchall()]


async def enrol_device(
    conn: AsyncConnection[Any], gateway_id: str, *, address: str, model: str | None, kind: str | None, now: datetime
) -> DeviceRow:
    """Enrol (or re-enrol) a device on a gateway, for the gateway's patient."""
    cur = await conn.execute("select patient_id from gateways where id = %s", (gateway_id,))
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError("gateway", gateway_id)
    if row[0] is None:
        raise ConflictError(f"gateway {gateway_id} has no patient")
    cur = await conn.execute(
        "insert into devices (gateway_id, patient_id, address, model, kind, enrolled_at)"  # noqa: S608
        " values (%s, %s, %s, %s, %s, %s) on conflict (gateway_id, address) do update set"
        " patient_id = excluded.patient_id, model = coalesce(excluded.model, devices.model),"
        " kind = coalesce(excluded.kind, devices.kind), enrolled_at = excluded.enrolled_at, unenrolled_at = null"
        f" returning {_DEVICE_COLS}",
        (gateway_id, row[0], address, model, kind, now),
    )
    created = await cur.fetchone()
    assert created is not None
    return _device(created)


async def unenrol_device(conn: AsyncConnection[Any], gateway_id: str, device_id: uuid.UUID, now: datetime) -> DeviceRow:
    """Stop routing the device's readings (the row and its history stay); 404 unless enrolled."""
    cur = await conn.execute(
        f"update devices set unenrolled_at = %s where id = %s and gateway_id = %s and unenrolled_at is null"  # noqa: S608
        f" returning {_DEVICE_COLS}",
        (now, device_id, gateway_id),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError("enrolled device", device_id)
    return _device(row)


async def sync_broker(conn: AsyncConnection[Any], files: enrolment.BrokerFiles | None) -> bool:
    """Rewrite the broker's password and ACL files from the database and SIGHUP it; False when not configured."""
    if files is None:
        return False
    cur = await conn.execute("select gateway_id, secret_hash from gateway_credentials where revoked_at is null")
    gateways = await cur.fetchall()
    cur = await conn.execute("select username, secret_hash from broker_service_accounts where revoked_at is null")
    services = await cur.fetchall()
    entries = [(str(r[0]), str(r[1])) for r in [*gateways, *services]]
    passwd = mosquitto.render_password_file(entries)
    acl = mosquitto.render_acl_file(str(r[0]) for r in services)
    return await asyncio.to_thread(enrolment.write_broker_files, files, passwd, acl)
