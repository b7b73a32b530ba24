"""The harness proves itself against the real engines: a hypertable round trip and an MQTT publish/subscribe."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion


def test_timescaledb_hypertable_time_bucket(tsdb_dsn: str) -> None:
    with psycopg.connect(tsdb_dsn, autocommit=True) as conn:
        conn.execute("create table probe (t timestamptz not null, v double precision not null)")
        conn.execute("select create_hypertable('probe', 't', chunk_time_interval => interval '1 day')")
        t0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
        with conn.cursor() as cur, cur.copy("copy probe (t, v) from stdin") as copy:
            for i in range(120):
                copy.write_row((t0 + timedelta(seconds=30 * i), float(i)))
        rows = conn.execute(
            "select time_bucket('15 minutes', t) b, count(*), min(v), max(v) from probe group by b order by b"
        ).fetchall()
        chunks = conn.execute("select count(*) from show_chunks('probe')").fetchone()
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (t0 + timedelta(minutes=15 * k), 30, 30.0 * k, 30.0 * k + 29) for k in range(4)
    ]
    assert chunks == (1,)


def test_plain_postgres_has_no_timescaledb(plain_dsn: str) -> None:
    with psycopg.connect(plain_dsn) as conn:
        assert conn.execute("select count(*) from pg_extension where extname = 'timescaledb'").fetchone() == (0,)
        # date_bin is the plain-PostgreSQL counterpart of time_bucket used by the store's queries
        row = conn.execute("select date_bin('15 minutes', timestamptz '2026-11-29 10:20:00+00', 'epoch')").fetchone()
    assert row == (datetime(2026, 11, 29, 10, 15, tzinfo=UTC),)


def test_mqtt_publish_subscribe_qos1(mqtt_host_port: tuple[str, int]) -> None:
    host, port = mqtt_host_port
    topic = f"tbib/test/{uuid.uuid4().hex}"
    got: list[bytes] = []
    subscribed = threading.Event()
    received = threading.Event()

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sub.on_subscribe = lambda *_a: subscribed.set()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        got.append(msg.payload)
        if len(got) == 3:
            received.set()

    sub.on_message = on_message
    sub.connect(host, port)
    sub.subscribe(topic, qos=1)
    sub.loop_start()
    try:
        assert subscribed.wait(5)
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        pub.connect(host, port)
        pub.loop_start()
        infos = [pub.publish(topic, f"m{i}".encode(), qos=1) for i in range(3)]
        for info in infos:
            info.wait_for_publish(5)
            assert info.is_published()
        pub.loop_stop()
        pub.disconnect()
        assert received.wait(5)
    finally:
        sub.loop_stop()
        sub.disconnect()
    assert got == [b"m0", b"m1", b"m2"]


@pytest.mark.parametrize("flavour", ["timescaledb", "plain"])
def test_make_database_gives_isolated_databases(make_database, flavour: str) -> None:
    a, b = make_database(flavour), make_database(flavour)
    assert a != b
    with psycopg.connect(a, autocommit=True) as conn:
        conn.execute("create table only_in_a (x int)")
    with psycopg.connect(b) as conn:
        assert conn.execute("select to_regclass('only_in_a')").fetchone() == (None,)
