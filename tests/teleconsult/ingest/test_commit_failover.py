"""The ingest commit after a PostgreSQL failover, on the real database: a connection that reaches a read-only server
(``ReadOnlySqlTransaction``, what a connection made before a demotion gets) is retried on a fresh connection; the batch
is neither split into dead letters nor lost."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from teleconsult.ingest.batch import Incoming, Work
from teleconsult.ingest.commit import Committer
from teleconsult.ingest.metrics import IngestMetrics
from teleconsult.ingest.writer import DeadLetter, prepare_connection
from teleconsult.store.failover import is_retryable
from teleconsult.store.migrate import upgrade


async def test_read_only_server_is_retried_on_a_fresh_connection(tsdb_dsn: str) -> None:
    upgrade(tsdb_dsn)
    reason = f"failover test {uuid.uuid4()}"
    topic = "tbib/v1/gw/gw-failover/readings"
    work = Work(
        [Incoming(1, 1, 0, topic, b"not json")],
        lines=[[]],
        dead=[DeadLetter(topic, "gw-failover", reason, b"not json", 8)],
        sent_at=[None],
    )
    metrics = IngestMetrics()
    committer = Committer(tsdb_dsn, metrics, dead_max_bytes=1024, stopping=lambda: False)
    stale = await psycopg.AsyncConnection.connect(tsdb_dsn, autocommit=True)
    await prepare_connection(stale)
    await stale.execute("set default_transaction_read_only = on")  # as a demoted leader's sessions are
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction) as refused:
        await stale.execute("insert into dead_letters (topic, reason, payload, payload_size) values ('t', 'r', '', 0)")
    assert is_retryable(refused.value)
    conn = await committer.commit(stale, work)
    try:
        assert conn is not stale
        assert stale.closed
        assert metrics.db_errors == 1
        assert work.messages[0].refused is None  # not taken for a data error
        async with await psycopg.AsyncConnection.connect(tsdb_dsn) as check:
            cur = await check.execute("select count(*) from dead_letters where reason = %s", (reason,))
            row = await cur.fetchone()
        assert row == (1,)
    finally:
        await conn.close()
