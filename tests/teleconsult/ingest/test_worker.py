"""The ingest worker against the real Mosquitto and TimescaleDB: idempotency, dead letters, shared subscription."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import psycopg
import pytest

from teleconsult.ingest.payload import CONSENT_WITHDRAWN
from teleconsult.ingest.worker import IngestConfig, IngestWorker
from tests.teleconsult.ingest.helpers import VOCAB, Gateways, Publisher, batch, reading, stored_ids, t0


def worker(gateways: Gateways, mqtt_url: str, name: str | None = None) -> IngestWorker:
    config = IngestConfig(
        dsn=gateways.dsn,
        mqtt_url=mqtt_url,
        client_id=name or f"test-ingest-{uuid.uuid4().hex[:8]}",
        topic=gateways.topic_filter,
        linger_s=0.02,
    )
    return IngestWorker(config, vocabulary=VOCAB)


async def until(predicate, seconds: float = 20.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        if await asyncio.to_thread(predicate):
            return True
        await asyncio.sleep(0.1)
    return bool(await asyncio.to_thread(predicate))


def dead_letters(dsn: str, gateway_id: str) -> list[tuple[str, int]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "select reason, payload_size from dead_letters where gateway_id = %s order by id", (gateway_id,)
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


async def test_same_batch_twice_is_stored_once(gateways: Gateways, mqtt_url: str, publisher: Publisher) -> None:
    w = worker(gateways, mqtt_url)
    await w.start()
    try:
        assert await w.wait_connected()
        start = t0()
        readings = [reading("AA:01", start + timedelta(seconds=i)) for i in range(10)]
        payload = batch(gateways.gw_a, readings)
        before = len(stored_ids(gateways.dsn, gateways.gw_a))
        publisher.publish(gateways.gw_a, payload)
        publisher.publish(gateways.gw_a, payload)  # what a QoS 1 redelivery or a gateway resend looks like
        publisher.wait()
        assert await until(lambda: w.metrics.messages >= 2)
        ids = stored_ids(gateways.dsn, gateways.gw_a)
        assert len(ids) - before == 10
        assert {r["id"] for r in readings} <= set(ids)
        assert w.metrics.accepted == 10
        assert w.metrics.duplicate == 10
        with psycopg.connect(gateways.dsn) as conn:
            seen = conn.execute("select last_seen_at from gateways where id = %s", (gateways.gw_a,)).fetchone()
        assert seen is not None
        assert seen[0] is not None
    finally:
        await w.stop()


async def test_latest_is_newest_measured_not_last_received(
    gateways: Gateways, mqtt_url: str, publisher: Publisher
) -> None:
    w = worker(gateways, mqtt_url)
    await w.start()
    try:
        assert await w.wait_connected()
        newest = t0() + timedelta(minutes=30)
        publisher.publish(
            gateways.gw_a, batch(gateways.gw_a, [reading("AA:01", newest, metric="spo2", unit="%", value=97)])
        )
        publisher.wait()
        assert await until(lambda: w.metrics.accepted >= 1)
        late = reading("AA:01", newest - timedelta(minutes=10), metric="spo2", unit="%", value=88)
        publisher.publish(gateways.gw_a, batch(gateways.gw_a, [late]))  # an older reading arrives last (outbox replay)
        publisher.wait()
        assert await until(lambda: w.metrics.accepted >= 2)
        with psycopg.connect(gateways.dsn) as conn:
            row = conn.execute(
                "select value from latest_readings where patient_id = %s and metric = 'spo2'", (gateways.patient_a,)
            ).fetchone()
        assert row == (97.0,)
    finally:
        await w.stop()


async def test_bad_payloads_go_to_dead_letters_and_are_acked(
    gateways: Gateways, mqtt_url: str, publisher: Publisher
) -> None:
    name = f"test-ingest-{uuid.uuid4().hex[:8]}"
    w = worker(gateways, mqtt_url, name)
    gw = gateways.gw_b
    start = t0()
    good = reading("BB:01", start)
    cases = {
        "invalid JSON": b"{oops",
        "unsupported payload version": batch(gw, [reading("BB:01", start)], v=2),
        "unknown metric": batch(gw, [reading("BB:01", start, metric="happiness")]),
        "wrong unit": batch(gw, [reading("BB:01", start, unit="bpm")]),
        "is not enrolled to gateway": batch(gw, [reading("AA:01", start)]),  # gw_a's device, published by gw_b
        "payload too large": b'{"v":1,"pad":"' + b"x" * (10 * 1024 * 1024) + b'"}',
    }
    await w.start()
    try:
        assert await w.wait_connected()
        for payload in cases.values():
            publisher.publish(gw, payload)
        publisher.publish(gw, batch(gw, [good]))
        publisher.wait(60)
        assert await until(lambda: good["id"] in stored_ids(gateways.dsn, gw), 30)
        assert await until(lambda: len(dead_letters(gateways.dsn, gw)) >= len(cases), 30)
        letters = dead_letters(gateways.dsn, gw)
        for expected in cases:
            assert any(expected in reason for reason, _ in letters), (expected, letters)
        big = [size for reason, size in letters if "payload too large" in reason]
        assert big == [len(cases["payload too large"])]
        assert await until(lambda: w.metrics.inflight == 0)
    finally:
        await w.stop()
    # acknowledged: the same session (client id) gets nothing redelivered
    again = worker(gateways, mqtt_url, name)
    await again.start()
    try:
        assert await again.wait_connected()
        await asyncio.sleep(1.0)
        assert again.metrics.messages == 0
        assert len(dead_letters(gateways.dsn, gw)) == len(cases)
    finally:
        await again.stop()


async def test_two_workers_split_the_load_without_duplicates(
    gateways: Gateways, mqtt_url: str, publisher: Publisher
) -> None:
    w1, w2 = worker(gateways, mqtt_url), worker(gateways, mqtt_url)
    await w1.start()
    await w2.start()
    try:
        assert await w1.wait_connected()
        assert await w2.wait_connected()
        start = t0() - timedelta(days=1)
        sent: set[str] = set()
        before = set(stored_ids(gateways.dsn, gateways.gw_a))
        for m in range(300):
            rs = [reading("AA:01", start + timedelta(seconds=m * 10 + i)) for i in range(10)]
            sent |= {r["id"] for r in rs}
            publisher.publish(gateways.gw_a, batch(gateways.gw_a, rs))
        publisher.wait(60)
        assert await until(lambda: w1.metrics.messages + w2.metrics.messages >= 300, 30)
        ids = [i for i in stored_ids(gateways.dsn, gateways.gw_a) if i not in before]
        assert len(ids) == len(set(ids)) == len(sent)
        assert set(ids) == sent
        assert w1.metrics.messages > 0
        assert w2.metrics.messages > 0
        assert w1.metrics.duplicate + w2.metrics.duplicate == 0
    finally:
        await w1.stop()
        await w2.stop()


async def test_metrics_render_prometheus_text(gateways: Gateways, mqtt_url: str) -> None:
    w = worker(gateways, mqtt_url)
    text = w.metrics.render()
    assert "tbib_ingest_readings_accepted_total 0" in text
    assert 'tbib_ingest_commit_seconds_bucket{le="+Inf"} 0' in text


async def test_graceful_stop_drains_what_the_broker_assigned(
    gateways: Gateways, mqtt_url: str, publisher: Publisher
) -> None:
    """stop() right after a burst: everything the broker accepted is committed before the session ends."""
    w = worker(gateways, mqtt_url)
    await w.start()
    assert await w.wait_connected()
    start = t0() - timedelta(days=4)
    before = set(stored_ids(gateways.dsn, gateways.gw_b))
    sent: set[str] = set()
    for m in range(500):
        rs = [reading("BB:01", start + timedelta(seconds=m * 10 + i)) for i in range(10)]
        sent |= {r["id"] for r in rs}
        publisher.publish(gateways.gw_b, batch(gateways.gw_b, rs))
    await asyncio.to_thread(publisher.wait, 60)
    await w.stop()  # no waiting for the worker first
    stored = set(stored_ids(gateways.dsn, gateways.gw_b)) - before
    assert stored == sent


@pytest.mark.parametrize("decisions", [(True, False), ()], ids=["withdrawn", "never-decided"])
async def test_readings_without_consent_in_force_are_counted_and_not_kept(
    gateways: Gateways, mqtt_url: str, publisher: Publisher, decisions: tuple[bool, ...]
) -> None:
    """Withdrawn, or never given (issue 19: no decision on file is no consent): refused, counted, dead-lettered with
    the reason and the size, the vitals themselves not kept."""
    gw = f"gw-consent-{uuid.uuid4().hex[:8]}"
    pid = uuid.uuid4()
    with psycopg.connect(gateways.dsn, autocommit=True) as conn:
        conn.execute("insert into patients (id, display_name) values (%s, 'Consent test')", (pid,))
        conn.execute("insert into gateways (id, patient_id) values (%s, %s)", (gw, pid))
        conn.execute("insert into devices (id, gateway_id, address) values (%s, %s, 'CC:01')", (uuid.uuid4(), gw))
        for granted in decisions:
            conn.execute(
                "insert into consents (patient_id, purpose, granted) values (%s, 'remote_monitoring', %s)",
                (pid, granted),
            )
    config = IngestConfig(
        dsn=gateways.dsn,
        mqtt_url=mqtt_url,
        client_id=f"test-ingest-{uuid.uuid4().hex[:8]}",
        topic=gateways.topic_filter,
        linger_s=0.02,
        enrolment_max_age_s=0.2,
    )
    w = IngestWorker(config, vocabulary=VOCAB)
    start = t0()
    refused = reading("CC:01", start)
    await w.start()
    try:
        assert await w.wait_connected()
        publisher.publish(gw, batch(gw, [refused]))
        publisher.wait(30)
        assert await until(lambda: len(dead_letters(gateways.dsn, gw)) == 1, 30)
        with psycopg.connect(gateways.dsn) as conn:
            reason, payload, size = conn.execute(
                "select reason, payload, payload_size from dead_letters where gateway_id = %s", (gw,)
            ).fetchone()
            latest = conn.execute("select count(*) from latest_readings where patient_id = %s", (pid,)).fetchone()
        assert CONSENT_WITHDRAWN in reason
        assert bytes(payload) == b""  # the refused vitals are not kept, not even as a dead letter
        assert size > 0
        assert w.metrics.rejected >= 1  # counted, not silently dropped
        assert latest == (0,)
        assert refused["id"] not in stored_ids(gateways.dsn, gw)
        # consent given again: the worker picks it up within its enrolment max age and stores new readings
        with psycopg.connect(gateways.dsn, autocommit=True) as conn:
            conn.execute(
                "insert into consents (patient_id, purpose, granted) values (%s, 'remote_monitoring', true)", (pid,)
            )
        await asyncio.sleep(0.5)
        accepted = reading("CC:01", start + timedelta(seconds=5))
        publisher.publish(gw, batch(gw, [accepted]))
        publisher.wait(30)
        # the map is older than its max age: it is reloaded before this message is judged
        assert await until(lambda: accepted["id"] in stored_ids(gateways.dsn, gw), 30)
        assert refused["id"] not in stored_ids(gateways.dsn, gw)
    finally:
        await w.stop()
