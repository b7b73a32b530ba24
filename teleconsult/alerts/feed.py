"""The engine's reading feed: every committed reading, once, from a durable position (migration 0210).

Contract
- Ingest logs each batch's rows in ``reading_log`` inside the batch's transaction (``ingest.writer.write_batch``); the
  insert's trigger sends ``NOTIFY tbib_reading_log`` (empty payload: a wake-up, the rows are read here, so no
  notification has to fit a batch in 8000 bytes).
- A position is a PostgreSQL snapshot (``pg_snapshot``). :func:`fetch_since` returns the rows of every batch whose
  transaction is not visible in the given snapshot and is visible in a new one, plus that new snapshot: a batch is
  delivered exactly once, in commit order, whatever order the ingest workers took their ids in (no lock between them).
- Within one fetch the readings are sorted by ``measured_at`` (then by log order): a batch reaches
  :meth:`Engine.receive` whole and in device-time order.
- The leader stores its position with :func:`save_position` in the transaction of the alert events it produced
  (``store.record_engine_events(..., position=...)``), so a new leader replays exactly what was not yet processed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from psycopg import AsyncConnection

from teleconsult.alerts.model import Reading

FEED_CHANNEL: Final = "tbib_reading_log"

log = logging.getLogger(__name__)

Conn = AsyncConnection[Any]

# Log rows committed after a position: txid not visible in its snapshot (rows below its xmin all are).
_ROWS_SQL: Final = (
    "select data from reading_log where txid >= pg_snapshot_xmin(%(since)s::pg_snapshot)"
    " and not pg_visible_in_snapshot(txid, %(since)s::pg_snapshot) order by id"
)
_NULL: Final = "\\N"


@dataclass(frozen=True, slots=True)
class Fetched:
    """Readings committed between two positions, in ``measured_at`` order, and the new position."""

    readings: list[Reading]
    reading_ids: frozenset[str]
    position: str


def parse_log(data: str, readings: list[Reading], ids: set[str]) -> None:
    """Append the readings of one ``reading_log.data`` (COPY text rows, ``ingest.payload.STAGING_COLUMNS``).

    Parsed here rather than cast in SQL (3-4x cheaper per reading in the leader, the hot path): ingest wrote these
    fields itself, after validating them with the same parsers (uuid text, ``repr(float)``, ``fromisoformat`` with an
    offset); metric and unit are safe text (no tab, newline or backslash), so no COPY escape occurs in them.
    """
    for line in data.split("\n"):
        if not line:
            continue
        f = line.split("\t", 8)
        try:
            at = datetime.fromisoformat(f[5])
            reading = Reading(f[0], f[2], float(f[3]), f[4], at, None if f[1] == _NULL else f[1])
            rid = f[7]
        except (ValueError, IndexError):
            log.exception("reading feed: unreadable log row %.200r (skipped)", line)
            continue
        readings.append(reading)
        ids.add(rid)


async def begin_snapshot(conn: Conn) -> str:
    """Start a REPEATABLE READ transaction on ``conn`` (idle, not autocommit) and return its snapshot (the caller
    commits): every later query of the transaction sees exactly the commits visible in that snapshot."""
    await conn.execute("set transaction isolation level repeatable read")
    cur = await conn.execute("select pg_current_snapshot()::text")
    row = await cur.fetchone()
    assert row is not None
    return str(row[0])


async def rows_since(conn: Conn, since: str, now_position: str) -> Fetched:
    """Inside :func:`begin_snapshot`'s transaction: the readings committed after ``since`` (visible now)."""
    cur = await conn.execute(_ROWS_SQL, {"since": since})
    readings: list[Reading] = []
    ids: set[str] = set()
    for (data,) in await cur.fetchall():
        parse_log(data, readings, ids)
    readings.sort(key=_measured_at)  # stable: log order on ties
    return Fetched(readings, frozenset(ids), now_position)


def _measured_at(r: Reading) -> datetime:
    return r.measured_at


async def fetch_since(conn: Conn, since: str) -> Fetched:
    """The readings committed after position ``since`` and the new position (one short read-only transaction)."""
    position = await begin_snapshot(conn)
    try:
        return await rows_since(conn, since, position)
    finally:
        await conn.commit()


async def load_position(conn: Conn) -> str | None:
    """The stored position (None before the first leader stored one)."""
    cur = await conn.execute("select snapshot::text from alert_engine_state")
    row = await cur.fetchone()
    return None if row is None else str(row[0])


async def save_position(conn: Conn, position: str, *, prune_before: datetime | None = None) -> None:
    """Store the position (inside the caller's transaction); optionally drop log rows processed before it."""
    await conn.execute(
        "insert into alert_engine_state (id, snapshot) values (true, %s::pg_snapshot)"
        " on conflict (id) do update set snapshot = excluded.snapshot, updated_at = now()",
        (position,),
    )
    if prune_before is not None:
        await conn.execute(
            "delete from reading_log where txid < pg_snapshot_xmin(%s::pg_snapshot) and created_at < %s",
            (position, prune_before),
        )
