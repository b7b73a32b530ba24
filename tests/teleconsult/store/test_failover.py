"""teleconsult.store.failover on the real database: the API pool's check replaces a connection whose server session
died (as every session does when the PostgreSQL leader is lost), so the next request gets a working one."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from teleconsult.store.failover import check_writable, is_retryable


async def test_pool_check_replaces_a_dead_connection(tsdb_dsn: str) -> None:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        tsdb_dsn, min_size=1, max_size=1, open=False, check=check_writable
    )
    await pool.open(wait=True)
    try:
        async with pool.connection() as conn:
            cur = await conn.execute("select pg_backend_pid()")
            row = await cur.fetchone()
            assert row is not None
            first_pid = row[0]
        async with await psycopg.AsyncConnection.connect(tsdb_dsn, autocommit=True) as admin:
            await admin.execute("select pg_terminate_backend(%s)", (first_pid,))
        async with pool.connection() as conn:  # the check finds the session gone and hands out a new connection
            cur = await conn.execute("select pg_backend_pid(), pg_is_in_recovery()")
            row = await cur.fetchone()
            assert row is not None
            assert row[0] != first_pid
            assert row[1] is False
    finally:
        await pool.close()


async def test_a_terminated_session_is_a_retryable_error(tsdb_dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(tsdb_dsn, autocommit=True) as conn:
        cur = await conn.execute("select pg_backend_pid()")
        row = await cur.fetchone()
        assert row is not None
        async with await psycopg.AsyncConnection.connect(tsdb_dsn, autocommit=True) as admin:
            await admin.execute("select pg_terminate_backend(%s)", (row[0],))
        with pytest.raises(psycopg.Error) as dead:
            await conn.execute("select 1")
        assert is_retryable(dead.value)
