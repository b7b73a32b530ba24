"""What a client of a failover pair (Patroni + HAProxy or a libpq multi-host DSN, docs/scale-out.md) must tell apart.

- :data:`RETRYABLE`: the transaction's outcome is unknown or it never ran, and the same work may be retried on a fresh
  connection: the connection broke (the leader died, HAProxy cut the session when its health check marked the node
  down, ``AdminShutdown`` at a switchover), or the server is a standby that refuses writes
  (``ReadOnlySqlTransaction``: a connection made before a demotion, or a DSN that reached the replica). Only work that
  is idempotent may be retried blindly (readings by ``(reading_id, measured_at)``; alert transitions, see
  :mod:`teleconsult.alerts.store`).
- :func:`check_writable`: the pool's ``check`` callback: a pooled connection is given out only if it still reaches a
  server that accepts writes, so requests after a failover never get a dead or demoted connection.
"""

from __future__ import annotations

from typing import Any, Final

import psycopg
from psycopg import errors as pg_errors

#: Errors after which the same idempotent transaction is retried on a new connection.
RETRYABLE: Final = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    pg_errors.ReadOnlySqlTransaction,
    pg_errors.DeadlockDetected,
)


class StandbyConnectionError(psycopg.OperationalError):
    """The connection reaches a standby (read-only) server."""


def is_retryable(exc: BaseException) -> bool:
    """Whether ``exc`` means "retry the idempotent transaction on a fresh connection"."""
    return isinstance(exc, RETRYABLE)


async def check_writable(conn: psycopg.AsyncConnection[Any]) -> None:
    """Raise unless ``conn`` is alive and on a primary (``psycopg_pool`` ``check=``: a failing connection is discarded
    and another one is given out)."""
    autocommit = conn.autocommit
    if not autocommit:
        await conn.set_autocommit(True)
    try:
        cur = await conn.execute("select pg_is_in_recovery()")
        row = await cur.fetchone()
    finally:
        if not autocommit:
            await conn.set_autocommit(False)
    if row is None or row[0]:
        raise StandbyConnectionError("the connection reaches a standby server (read-only)")
