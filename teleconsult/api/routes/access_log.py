""" "Who accessed my record": a patient's view of the audit log about them (a right under law 09-08)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from teleconsult.api.deps import PatientAccess, Pool
from teleconsult.api.schemas import ApiModel
from teleconsult.errors import AuthorizationError
from teleconsult.security import audit as audit_log

router = APIRouter(prefix="/patients/{patient_id}/access-log", tags=["audit"])


class AccessOut(ApiModel):
    """One access to the record."""

    id: int
    occurred_at: datetime
    actor_username: str | None
    actor_display_name: str | None = None
    """The account's display name now (e.g. "Dr Amina Benali"), when the account still exists."""
    actor_role: str | None
    action: str
    resource: str
    outcome: str
    client_addr: str | None


@router.get("", summary="Who accessed my record (the patient only)")
async def access_log(
    access: PatientAccess,
    pool: Pool,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    others_only: bool = False,
) -> list[AccessOut]:
    """Newest first; page with ``before_id``; ``others_only`` leaves out the patient's own visits. Care-team members
    are refused: this is the patient's own view."""
    if access.via != "self":
        raise AuthorizationError("only the patient may read their access log")
    mine = access.user.id if others_only else None
    async with pool.connection() as conn:
        rows = await audit_log.events_for_patient(
            conn, access.patient_id, limit=limit, before_id=before_id, exclude_actor=mine
        )
        ids = list({r.event.actor_id for r in rows if r.event.actor_id is not None})
        cur = await conn.execute("select id, display_name from users where id = any(%s)", (ids,))
        names = {uid: name for uid, name in await cur.fetchall()}
    return [
        AccessOut(
            id=r.id,
            occurred_at=r.occurred_at,
            actor_username=r.event.actor_username,
            actor_display_name=names.get(r.event.actor_id),
            actor_role=r.event.actor_role,
            action=r.event.action,
            resource=r.event.resource,
            outcome=r.event.outcome,
            client_addr=r.event.client_addr,
        )
        for r in rows
    ]
