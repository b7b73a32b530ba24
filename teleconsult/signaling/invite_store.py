"""Invitation links in PostgreSQL (migration 0310, table ``consultation_invites``); rules in :mod:`.invites`."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any, Final

from psycopg import AsyncConnection

from teleconsult.signaling.invites import Invite, check_new, check_redeem, hash_secret, new_secret
from teleconsult.signaling.tokens import Role

_COLS: Final = "id, consultation_id, role, name, created_at, expires_at, used_at, revoked_at"


def _row(r: tuple[Any, ...]) -> Invite:
    return Invite(r[0], r[1], Role(r[2]), r[3], r[4], r[5], r[6], r[7])


async def create(
    conn: AsyncConnection[Any],
    *,
    consultation_id: uuid.UUID,
    role: Role,
    name: str,
    created_by: uuid.UUID | None,
    now: datetime,
    ttl: timedelta,
) -> tuple[Invite, str]:
    """A new invitation and its secret (returned once, never stored)."""
    clean = check_new(role, name, ttl)
    secret, digest = new_secret()
    cur = await conn.execute(
        "insert into consultation_invites"  # noqa: S608
        " (consultation_id, role, name, secret_hash, created_by, created_at, expires_at)"
        f" values (%s, %s, %s, %s, %s, %s, %s) returning {_COLS}",
        (consultation_id, role.value, clean, digest, created_by, now, now + ttl),
    )
    row = await cur.fetchone()
    assert row is not None
    return _row(row), secret


async def list_for(conn: AsyncConnection[Any], consultation_id: uuid.UUID) -> list[Invite]:
    """Invitations of a consultation, oldest first."""
    cur = await conn.execute(
        f"select {_COLS} from consultation_invites where consultation_id = %s order by created_at, id",  # noqa: S608
        (consultation_id,),
    )
    return [_row(r) for r in await cur.fetchall()]


async def revoke(conn: AsyncConnection[Any], consultation_id: uuid.UUID, invite_id: uuid.UUID, now: datetime) -> bool:
    """Withdraw an unused invitation; False when there is none to withdraw."""
    cur = await conn.execute(
        "update consultation_invites set revoked_at = %s"
        " where id = %s and consultation_id = %s and used_at is null and revoked_at is null",
        (now, invite_id, consultation_id),
    )
    return cur.rowcount == 1


async def redeem(conn: AsyncConnection[Any], secret: str, now: datetime) -> Invite:
    """Use the invitation of ``secret`` once (row lock, then ``used_at``); :class:`InviteError` when it cannot be."""
    async with conn.transaction():
        cur = await conn.execute(
            f"select {', '.join('i.' + c for c in _COLS.split(', '))}, c.ended_at is not null"  # noqa: S608
            " from consultation_invites i join consultations c on c.id = i.consultation_id"
            " where i.secret_hash = %s for update of i",
            (hash_secret(secret),),
        )
        row = await cur.fetchone()
        invite = check_redeem(_row(row) if row else None, now, consultation_ended=bool(row and row[-1]))
        await conn.execute("update consultation_invites set used_at = %s where id = %s", (now, invite.id))
    return Invite(
        invite.id, invite.consultation_id, invite.role, invite.name, invite.created_at, invite.expires_at, now
    )
