"""Fault injection: kill -9 of a `tbib ingest` process, and a database restart, while a gateway publishes.

Both must end with every sent reading stored exactly once (id sets compared).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from datetime import timedelta

import psycopg
import pytest

from teleconsult.ingest.worker import IngestConfig, IngestWorker
from tests.teleconsult.ingest.helpers import (
    VOCAB,
    Gateways,
    IngestProcess,
    OwnBroker,
    OwnPostgres,
    Publisher,
    batch,
    make_gateways,
    reading,
    stored_ids,
    t0,
    wait_for,
)

pytestmark = pytest.mark.slow


class Stream:
    """Publishes ``messages`` batches of 10 readings from one gateway at about ``rate`` messages/s, in a thread."""

    def __init__(self, publisher: Publisher, gateway_id: str, address: str, messages: int, rate: float) -> None:
        self.publisher, self.gateway_id, self.address = publisher, gateway_id, address
        self.messages, self.rate = messages, rate
        self.sent: set[str] = set()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        start = t0() - timedelta(days=2, seconds=int(uuid.uuid4().int % 100_000))
        began = time.monotonic()
        for m in range(self.messages):
            rs = [reading(self.address, start + timedelta(seconds=m * 10 + i)) for i in range(10)]
            self.publisher.publish(self.gateway_id, batch(self.gateway_id, rs))
            self.sent |= {r["id"] for r in rs}
            ahead = (m + 1) / self.rate - (time.monotonic() - began)
            if ahead > 0:
                time.sleep(ahead)
        self.publisher.wait(60)

    def __enter__(self) -> Stream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join()


def assert_exactly_once(dsn: str, gateway_id: str, sent: set[str], before: set[str]) -> None:
    assert wait_for(lambda: sent <= set(stored_ids(dsn, gateway_id)), 60), "readings lost"
    ids = [i for i in stored_ids(dsn, gateway_id) if i not in before]
    lost = sent - set(ids)
    duplicated = len(ids) - len(set(ids))
    assert (len(lost), duplicated) == (0, 0)
    assert set(ids) == sent


def test_kill_9_worker_then_restart_loses_and_duplicates_nothing(
    gateways: Gateways, mqtt_url: str, publisher: Publisher
) -> None:
    proc = IngestProcess(gateways.dsn, mqtt_url, f"test-kill9-{uuid.uuid4().hex[:8]}", gateways.topic_filter)
    proc.start()
    try:
        probe = reading("AA:01", t0())
        before = set(stored_ids(gateways.dsn, gateways.gw_a))
        # the session must exist before the stream starts: resend a probe until the worker has stored it
        assert wait_for(
            lambda: (
                publisher.publish(gateways.gw_a, batch(gateways.gw_a, [probe]))
                or probe["id"] in stored_ids(gateways.dsn, gateways.gw_a)
            ),
            30,
            0.5,
        )
        before = set(stored_ids(gateways.dsn, gateways.gw_a))
        with Stream(publisher, gateways.gw_a, "AA:01", messages=1500, rate=500) as stream:
            time.sleep(1.0)
            proc.kill9()  # mid-stream: batches in flight, none acknowledged
            time.sleep(1.0)
            proc.start()  # same client id: the broker redelivers what was not acknowledged, plus what it queued
        assert_exactly_once(gateways.dsn, gateways.gw_a, stream.sent, before)
    finally:
        assert proc.stop() == 0


async def test_database_restart_mid_stream_loses_nothing(
    own_postgres: OwnPostgres, mqtt_url: str, publisher: Publisher
) -> None:
    with psycopg.connect(own_postgres.dsn, autocommit=True) as conn:
        conn.execute("create extension if not exists timescaledb")
    gws: Gateways = await asyncio.to_thread(make_gateways, own_postgres.dsn)
    config = IngestConfig(
        dsn=gws.dsn, mqtt_url=mqtt_url, client_id=f"test-dbrestart-{uuid.uuid4().hex[:8]}", topic=gws.topic_filter
    )
    w = IngestWorker(config, vocabulary=VOCAB)
    await w.start()
    try:
        assert await w.wait_connected()
        before: set[str] = set()
        stream = Stream(publisher, gws.gw_a, "AA:01", messages=1500, rate=500)
        stream.thread.start()
        await asyncio.sleep(1.0)
        await asyncio.to_thread(own_postgres.stop)
        await asyncio.sleep(1.5)
        await asyncio.to_thread(own_postgres.start)
        await asyncio.to_thread(stream.thread.join)
        await asyncio.to_thread(assert_exactly_once, gws.dsn, gws.gw_a, stream.sent, before)
        assert w.metrics.db_errors > 0  # the outage was seen and retried
    finally:
        await w.stop()


async def test_worker_started_with_database_down_waits_instead_of_refusing(
    own_postgres: OwnPostgres, mqtt_url: str, publisher: Publisher
) -> None:
    """With no enrolment map (database unreachable), a reading must wait, not be dead-lettered as 'not enrolled'."""
    with psycopg.connect(own_postgres.dsn, autocommit=True) as conn:
        conn.execute("create extension if not exists timescaledb")
    gws: Gateways = await asyncio.to_thread(make_gateways, own_postgres.dsn)
    await asyncio.to_thread(own_postgres.stop)
    config = IngestConfig(
        dsn=gws.dsn, mqtt_url=mqtt_url, client_id=f"test-dbdown-{uuid.uuid4().hex[:8]}", topic=gws.topic_filter
    )
    w = IngestWorker(config, vocabulary=VOCAB)
    await w.start()
    try:
        assert await w.wait_connected()
        r = reading("AA:01", t0())
        publisher.publish(gws.gw_a, batch(gws.gw_a, [r]))
        await asyncio.to_thread(publisher.wait)
        await asyncio.sleep(1.5)
        await asyncio.to_thread(own_postgres.start)
        assert await asyncio.to_thread(wait_for, lambda: r["id"] in stored_ids(gws.dsn, gws.gw_a), 30)
        with psycopg.connect(gws.dsn) as conn:
            # (only our gateway: the shared broker also carries other sessions' test traffic)
            n = conn.execute("select count(*) from dead_letters where gateway_id = %s", (gws.gw_a,)).fetchone()
            assert n == (0,)
    finally:
        await w.stop()


async def test_broker_restart_worker_reconnects_and_loses_nothing(gateways: Gateways, own_broker: OwnBroker) -> None:
    host, port = "127.0.0.1", own_broker.port
    config = IngestConfig(
        dsn=gateways.dsn, mqtt_url=own_broker.url, client_id=f"test-mqrestart-{uuid.uuid4().hex[:8]}", linger_s=0.02
    )
    w = IngestWorker(config, vocabulary=VOCAB)
    await w.start()
    pub = Publisher(host, port)
    try:
        assert await w.wait_connected()
        before = set(stored_ids(gateways.dsn, gateways.gw_b))
        sent: set[str] = set()
        start = t0() - timedelta(days=3)

        def publish(first: int, n: int) -> None:
            for m in range(first, first + n):
                rs = [reading("BB:01", start + timedelta(seconds=m * 10 + i)) for i in range(10)]
                sent.update(r["id"] for r in rs)
                pub.publish(gateways.gw_b, batch(gateways.gw_b, rs))
            pub.wait(30)  # acknowledged by the broker: from now on the broker is responsible for them

        await asyncio.to_thread(publish, 0, 400)
        await asyncio.to_thread(own_broker.stop)  # some messages are still queued or in flight to the worker
        await asyncio.sleep(1.0)
        await asyncio.to_thread(own_broker.start)
        assert await asyncio.to_thread(wait_for, lambda: pub.client.is_connected(), 20)
        await asyncio.to_thread(publish, 400, 200)
        await asyncio.to_thread(assert_exactly_once, gateways.dsn, gateways.gw_b, sent, before)
        assert w.metrics.mqtt_reconnects >= 2
    finally:
        pub.close()
        await w.stop()
