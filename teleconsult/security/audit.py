"""The audit log: append-only (a trigger rejects UPDATE/DELETE/TRUNCATE) and hash-chained.

Row ``n`` stores ``prev_hash`` (the hash of row ``n-1``; 32 zero bytes for row 1) and
``hash = sha256(prev_hash || canonical(row))`` where ``canonical`` is the UTF-8 JSON (sorted keys, no spaces) of
``id, occurred_at (UTC ISO-8601, microseconds), actor_id, actor_username, actor_role, action, patient_id, resource,
outcome, client_addr, detail``. Ids are gapless: an insert locks the single-row ``audit_chain_head`` (which holds the
last id and hash), so inserts are serialized and the head detects a truncated tail. :func:`verify_rows` is pure.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from teleconsult.errors import AuditChainError

GENESIS_HASH: Final = bytes(32)

# Actions and outcomes used by the API; features may add their own words (e.g. "export", "subscribe").
READ: Final = "read"
WRITE: Final = "write"
ALLOWED: Final = "allowed"
DENIED: Final = "denied"


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """Who did what to which patient's data, from where, and how it ended."""

    action: str
    resource: str
    outcome: str
    actor_id: uuid.UUID | None = None
    actor_username: str | None = None
    actor_role: str | None = None
    patient_id: uuid.UUID | None = None
    client_addr: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditRow:
    """A stored audit row."""

    id: int
    occurred_at: datetime
    event: AuditEvent
    prev_hash: bytes
    hash: bytes


COLUMNS: Final = (
    "id, occurred_at, actor_id, actor_username, actor_role, action, patient_id, resource, outcome, client_addr, "
    "detail, prev_hash, hash"
)


def canonical(row_id: int, occurred_at: datetime, ev: AuditEvent) -> bytes:
    """The bytes that are hashed for one row."""
    doc = {
        "id": row_id,
        "occurred_at": occurred_at.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor_id": str(ev.actor_id) if ev.actor_id else None,
        "actor_username": ev.actor_username,
        "actor_role": ev.actor_role,
        "action": ev.action,
        "patient_id": str(ev.patient_id) if ev.patient_id else None,
        "resource": ev.resource,
        "outcome": ev.outcome,
        "client_addr": ev.client_addr,
        "detail": dict(ev.detail),
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(prev_hash: bytes, row_id: int, occurred_at: datetime, ev: AuditEvent) -> bytes:
    """``sha256(prev_hash || canonical(row))``."""
    return hashlib.sha256(prev_hash + canonical(row_id, occurred_at, ev)).digest()


async def append(conn: AsyncConnection[Any], event: AuditEvent, *, now: datetime | None = None) -> int:
    """Append one event (in its own transaction or a savepoint of the caller's); returns its id."""
    occurred_at = (now or datetime.now(UTC)).astimezone(UTC)
    async with conn.transaction():
        cur = await conn.execute("select last_id, last_hash from audit_chain_head where singleton for update")
        head = await cur.fetchone()
        if head is None:
            raise AuditChainError(0, "audit_chain_head is missing (run `tbib db upgrade`)")
        row_id = int(head[0]) + 1
        prev = bytes(head[1])
        digest = chain_hash(prev, row_id, occurred_at, event)
        await conn.execute(
            f"insert into audit_events ({COLUMNS}) values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",  # noqa: S608 - constant column list
            (
                row_id,
                occurred_at,
                event.actor_id,
                event.actor_username,
                event.actor_role,
                event.action,
                event.patient_id,
                event.resource,
                event.outcome,
                event.client_addr,
                Jsonb(dict(event.detail)),
                prev,
                digest,
            ),
        )
        await conn.execute("update audit_chain_head set last_id = %s, last_hash = %s where singleton", (row_id, digest))
    return row_id


def row_from_record(rec: tuple[Any, ...]) -> AuditRow:
    """Build an :class:`AuditRow` from a tuple selected with :data:`COLUMNS`."""
    ev = AuditEvent(
        actor_id=rec[2],
        actor_username=rec[3],
        actor_role=rec[4],
        action=rec[5],
        patient_id=rec[6],
        resource=rec[7],
        outcome=rec[8],
        client_addr=rec[9],
        detail=rec[10] or {},
    )
    return AuditRow(id=int(rec[0]), occurred_at=rec[1], event=ev, prev_hash=bytes(rec[11]), hash=bytes(rec[12]))


def verify_rows(rows: Iterable[AuditRow], head: tuple[int, bytes] | None) -> int:
    """Check the chain in id order; returns the number of rows, raises :class:`AuditChainError` at the first bad row."""
    expected_id = 1
    prev = GENESIS_HASH
    for row in rows:
        if row.id != expected_id:
            raise AuditChainError(expected_id, f"row missing (next stored row is {row.id})")
        if row.prev_hash != prev:
            raise AuditChainError(row.id, "prev_hash does not match the previous row's hash")
        if chain_hash(prev, row.id, row.occurred_at, row.event) != row.hash:
            raise AuditChainError(row.id, "content does not match its hash (row was altered)")
        prev = row.hash
        expected_id += 1
    count = expected_id - 1
    if head is not None:
        last_id, last_hash = head
        if last_id != count:
            raise AuditChainError(
                count + 1 if last_id > count else last_id, f"chain head says {last_id} rows, found {count}"
            )
        if count and last_hash != prev:
            raise AuditChainError(count, "chain head hash does not match the last row")
    return count


async def events_for_patient(
    conn: AsyncConnection[Any],
    patient_id: uuid.UUID,
    *,
    limit: int = 100,
    before_id: int | None = None,
    exclude_actor: uuid.UUID | None = None,
) -> list[AuditRow]:
    """A patient's access log, newest first (for the "who accessed my record" route); ``exclude_actor`` leaves out
    one account's own accesses (the patient's own visits)."""
    cur = await conn.execute(
        f"select {COLUMNS} from audit_events where patient_id = %s and (%s::bigint is null or id < %s) "  # noqa: S608
        "and (%s::uuid is null or actor_id is distinct from %s) order by id desc limit %s",
        (patient_id, before_id, before_id, exclude_actor, exclude_actor, limit),
    )
    return [row_from_record(r) for r in await cur.fetchall()]
