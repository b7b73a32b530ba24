"""The alert engine's reading feed (migration 0210): every committed reading, by commit position.

Contract
- Each transaction that inserts into ``readings`` leaves one ``reading_batches`` row (statement trigger): its
  transaction id and its ``now()``, which is the ``ingested_at`` of all its readings. The trigger also sends
  ``NOTIFY tbib_reading_batches`` (a wake-up, at commit).
- A *position* is a ``pg_snapshot``. :func:`fetch` returns the batches committed since position ``S`` (transaction id
  not visible in ``S``, visible to the fetching statement; ids below ``xmin(S)`` are all visible in ``S``, so the
  primary-key range ``xid >= xmin(S)`` bounds the scan) and the new position (that statement's own snapshot). No
  sequence and no lock: a transaction that started earlier and commits later is never skipped (PgQ's technique).
- :func:`readings_of` reads the batches' readings with one query on ``readings_ingested_at``, batch after batch in
  the order given (the fetch's: transaction id), each batch in ``measured_at`` order -- the same order whether the
  batches come one fetch at a time (live) or many at once (a replay after failover), so that a replay feeds the engine
  what the last leader fed it (sorting the readings of several batches together let a replay see a late reading as
  the newest one and raise an episode again with another onset: ``tbib chaos --alert-nodes 2``); the leader feeds each
  with ``now = ingested_at`` (the commit's time, the same on every leader: a replayed event carries the time it had
  the first time, which is what makes it idempotent in :mod:`teleconsult.alerts.store`); a row of another
  transaction that shares the same ``now()`` (microseconds) may come twice: the engine tolerates duplicates.
- ``alert_feed_position`` holds the leader's position, saved after the alert events of those readings were stored
  (events are idempotent: a replay after a crash between the two stores nothing twice). :func:`prune` deletes
  batches below the saved position's ``xmin``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from psycopg import AsyncConnection

from teleconsult.alerts.model import Reading

CHANNEL: Final = "tbib_reading_batches"

Conn = AsyncConnection[Any]

#: The uuids come as text: the engine keys on strings, and a uuid.UUID per column and row (then its str()) made the
#: leader's fetch ~3x slower per row (16 vs 6 us, text protocol, loaded 2-core box) under 10 000 readings/s.
_READING_COLS: Final = (
    "patient_id::text, metric, value, unit, measured_at, device_id::text, reading_id::text, ingested_at"
)


def to_reading(row: Sequence[Any]) -> Reading:
    """A ``readings`` row (:data:`_READING_COLS` order) as an engine :class:`Reading`."""
    return Reading(
        str(row[0]), str(row[1]), float(row[2]), str(row[3]), row[4], None if row[5] is None else str(row[5])
    )


async def current_position(conn: Conn) -> str:
    """A fresh snapshot: the position of a leader that starts on an empty feed."""
    cur = await conn.execute("select pg_current_snapshot()::text")
    row = await cur.fetchone()
    assert row is not None
    return str(row[0])


async def load_position(conn: Conn) -> str | None:
    """The stored leader position (None before any leader saved one)."""
    cur = await conn.execute("select snapshot::text from alert_feed_position")
    row = await cur.fetchone()
    return None if row is None else str(row[0])


async def save_position(conn: Conn, position: str) -> None:
    """Store the leader position (its own transaction)."""
    async with conn.transaction():
        await conn.execute(
            "insert into alert_feed_position (snapshot) values (%s::pg_snapshot)"
            " on conflict (id) do update set snapshot = excluded.snapshot, updated_at = now()",
            (position,),
        )


async def fetch(conn: Conn, position: str) -> tuple[str, list[datetime]]:
    """The new position and the ``ingested_at`` of every batch committed since ``position`` (one statement)."""
    cur = await conn.execute(
        "select pg_current_snapshot()::text, array(select b.ingested_at from reading_batches b"
        " where b.xid >= pg_snapshot_xmin(%(s)s::pg_snapshot)"
        " and not pg_visible_in_snapshot(b.xid, %(s)s::pg_snapshot) order by b.xid)",
        {"s": position},
    )
    row = await cur.fetchone()
    assert row is not None
    return str(row[0]), list(row[1])


async def readings_of(conn: Conn, batches: Sequence[datetime]) -> list[tuple[Any, ...]]:
    """The readings of these batches (``_READING_COLS``): batch by batch in the given order, each in ``measured_at``
    order."""
    if not batches:
        return []
    order = list(dict.fromkeys(batches))
    async with conn.cursor(binary=True) as cur:  # binary float8/timestamptz: ~40 % less decoding than text
        await cur.execute(
            f"select {_READING_COLS} from readings where ingested_at = any(%(b)s)"  # noqa: S608
            " order by array_position(%(b)s::timestamptz[], ingested_at), measured_at",
            {"b": order},
        )
        return list(await cur.fetchall())


async def prune(conn: Conn, position: str) -> int:
    """Delete batches every later fetch from ``position`` skips; returns how many."""
    async with conn.transaction():
        cur = await conn.execute(
            "delete from reading_batches where xid < pg_snapshot_xmin(%s::pg_snapshot)", (position,)
        )
    return max(cur.rowcount, 0)
