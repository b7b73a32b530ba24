"""Committing one batch until it is stored: retries with backoff, poison isolation, ``gateways.last_seen_at``.

- A connection, standby (read-only after a failover) or deadlock error is retried with backoff on a fresh
  connection (the write is idempotent, :mod:`.writer`, so an unknown commit outcome is safe); while
  the worker stops, :class:`Abandoned` is raised instead (the batch stays unacknowledged: the broker redelivers it).
- A batch refused for a data reason is written again one transaction per message; a message still refused becomes a
  dead letter (:attr:`.batch.Incoming.refused`, which its commit receipt reports).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg

from teleconsult.ingest.batch import Work, account, dead_letter, due_gateways
from teleconsult.ingest.metrics import IngestMetrics
from teleconsult.ingest.writer import prepare_connection, write_batch
from teleconsult.store.failover import RETRYABLE

log = logging.getLogger("teleconsult.ingest.worker")

#: Connection loss, a standby reached after a failover (``ReadOnlySqlTransaction``: never a data reason, so never a
#: dead letter), a deadlock: retried on a fresh connection (:mod:`teleconsult.store.failover`).
_RETRIED = RETRYABLE


class Abandoned(Exception):
    """Stopping while the database is unreachable: the batch stays unacknowledged."""


class Committer:
    """Writes batches for one worker (any number of connections: each writer task passes its own)."""

    def __init__(self, dsn: str, metrics: IngestMetrics, *, dead_max_bytes: int, stopping: Callable[[], bool]) -> None:
        self.dsn = dsn
        self.metrics = metrics
        self.dead_max_bytes = dead_max_bytes
        self.stopping = stopping
        self.seen: dict[str, float] = {}
        """Gateway -> monotonic time ``last_seen_at`` was last written."""

    async def connect(self) -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True, connect_timeout=5)
        await prepare_connection(conn)
        return conn

    async def commit(self, conn: psycopg.AsyncConnection[Any] | None, work: Work) -> psycopg.AsyncConnection[Any]:
        """Write ``work`` until it is committed; returns the (possibly new) connection."""
        delay = 0.1
        split = False
        while True:
            try:
                if conn is None or conn.closed:
                    conn = await self.connect()
                await (self._write_each(conn, work) if split else self._write_all(conn, work))
            except _RETRIED as exc:
                self.metrics.db_errors += 1
                if self.stopping():
                    raise Abandoned from exc
                log.warning("database write failed (%s); retrying in %.1f s", str(exc).strip()[:200], delay)
                if conn is not None and (conn.broken or isinstance(exc, psycopg.errors.ReadOnlySqlTransaction)):
                    await conn.close()  # a demoted server stays read-only: reconnect (the DSN finds the leader)
                    conn = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except psycopg.Error as exc:
                if split:
                    raise
                log.warning("batch refused by the database (%s); writing message by message", str(exc)[:200])
                split = True
            else:
                return conn

    async def _write_all(self, conn: psycopg.AsyncConnection[Any], work: Work) -> None:
        dead = work.all_dead()
        t0 = time.perf_counter()
        result = await write_batch(conn, work.all_lines(), dead, list(work.latest.values()), minutes=work.minutes)
        account(self.metrics, work, result.inserted, result.duplicate, len(dead), time.perf_counter() - t0, time.time())
        await self._touch_gateways(conn, work)

    async def _touch_gateways(self, conn: psycopg.AsyncConnection[Any], work: Work) -> None:
        """``gateways.last_seen_at`` for gateways that sent valid batches, at most every 10 s each (own statement,
        after the commit: never part of the readings transaction, so workers do not queue on gateway rows)."""
        due = due_gateways(work.messages, self.seen, time.monotonic())
        if not due:
            return
        try:
            await conn.execute(
                "update gateways set last_seen_at = now() where id = any(%s)"
                " and (last_seen_at is null or last_seen_at < now())",
                (due,),
            )
        except psycopg.Error as exc:  # best effort: the next batch reconnects if the connection broke
            log.debug("last_seen_at update failed: %s", exc)

    async def _write_each(self, conn: psycopg.AsyncConnection[Any], work: Work) -> None:
        """Poison isolation: one transaction per message; a message the database refuses becomes a dead letter."""
        inserted = duplicate = dead_n = 0
        t0 = time.perf_counter()
        for m, lines, dead in zip(work.messages, work.lines, work.dead, strict=True):
            try:
                r = await write_batch(conn, lines, [dead] if dead else [])
                inserted += r.inserted
                duplicate += r.duplicate
                dead_n += 1 if dead else 0
            except _RETRIED:
                raise
            except psycopg.Error as exc:
                reason = f"refused by the database: {str(exc).strip()[:300]}"
                m.refused = reason
                gw = m.decoded.gateway_id if m.decoded is not None else None
                await write_batch(conn, [], [dead_letter(m, gw, reason, self.dead_max_bytes)])
                self.metrics.rejected += len(lines)
                dead_n += 1
        account(self.metrics, work, inserted, duplicate, dead_n, time.perf_counter() - t0, time.time())
