"""Publisher: pure batching core, then paho against real Mosquitto brokers (project broker and our own)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.enums import MQTTProtocolVersion

from gateway_agent.errors import BrokerAuthError
from gateway_agent.outbox import Outbox, OutboxEntry
from gateway_agent.publisher import Backoff, BatchPlanner, BrokerParams, LinkState, MqttPublisher

from .conftest import OwnBroker, free_port


async def until(predicate: Any, seconds: float) -> None:
    async with asyncio.timeout(seconds):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


def entries(first: int, n: int) -> list[OutboxEntry]:
    return [OutboxEntry(s, f"id{s}", "A", "{}") for s in range(first, first + n)]


def test_planner_full_batches_go_now_partial_after_delay() -> None:
    p = BatchPlanner(max_readings=3, max_delay=0.5, window=2)
    assert p.get_timer() is None
    p.noticed(10.0)
    assert p.get_timer() == 10.5
    assert p.should_send(entries(1, 3), 10.0)
    p.sent(1, entries(1, 3), now=10.0)
    assert p.cursor == 3
    assert not p.should_send(entries(4, 1), 10.1)  # partial, not yet due
    assert p.should_send(entries(4, 1), 10.6)
    p.sent(2, entries(4, 1), now=10.6)
    assert p.get_timer() is None
    assert p.room() == 0
    assert not p.should_send(entries(5, 3), 11.0)  # window full
    batch = p.acked(1, success=True)
    assert batch is not None
    assert batch.ids == ("id1", "id2", "id3")
    assert p.room() == 1
    assert p.acked(1, success=True) is None  # duplicate PUBACK


def test_planner_failed_puback_rewinds_cursor() -> None:
    p = BatchPlanner(max_readings=2, max_delay=0.0, window=4)
    p.sent(1, entries(1, 2), now=0)
    p.sent(2, entries(3, 2), now=0)
    assert p.cursor == 4
    p.acked(2, success=False)
    assert p.cursor == 2
    p.forget_inflight()
    assert p.cursor == 0
    assert p.inflight() == 0


def test_backoff_is_exponential_with_jitter_and_capped() -> None:
    b = Backoff(initial=1.0, maximum=8.0, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(6)]
    for n, d in enumerate(delays):
        cap = min(8.0, 2.0**n)
        assert cap / 2 <= d <= cap
    assert len(set(delays)) == 6
    b.reset()
    assert b.next_delay() <= 1.0
    assert b.next_delay(floor=30.0) >= 4.0  # capped by maximum, at least half of it


def fill(box: Outbox, n: int, devices: int = 3, start: int = 0) -> list[str]:
    return box.append(
        (f"C0:FF:EE:00:00:0{i % devices}", {"device": {"address": f"C0:FF:EE:00:00:0{i % devices}"}, "value": float(i)})
        for i in range(start, start + n)
    )


def params(host: str, port: int, gw: str, **kw: Any) -> BrokerParams:
    return BrokerParams(host=host, port=port, client_id=gw, **kw)


async def test_publishes_everything_and_empties_outbox(tmp_path: Path, mqtt_host_port, subscribe) -> None:
    host, port = mqtt_host_port
    gw = f"gw-test-{uuid.uuid4().hex[:8]}"
    sub = subscribe(host, port, f"tbib/v1/gw/{gw}/#")
    box = Outbox(tmp_path / "o.sqlite3")
    ids = fill(box, 1050)
    pub = MqttPublisher(
        box, params(host, port, gw), gateway_id=gw, max_readings=100, max_delay=0.05, window=4, receipts=False
    )
    await pub.start()
    async with asyncio.timeout(20):
        await pub.drain()
    assert box.depth() == 0
    await asyncio.to_thread(sub.wait_for, lambda: len(sub.readings()) >= 1050)
    got = sub.readings()
    assert [r["id"] for r in got] == ids  # capture order, ids as stored
    batches = sub.payloads()
    assert all(b["v"] == 1 and b["gateway_id"] == gw and b["sent_at"].endswith("Z") for b in batches)
    assert max(len(b["readings"]) for b in batches) == 100
    assert pub.stats.readings_acked == 1050
    assert next(p for t, p, _r in sub.messages if t.endswith("/status")) == b"online"
    await pub.stop()
    await asyncio.to_thread(sub.wait_for, lambda: any(p == b"offline" for t, p, _ in sub.messages))
    box.close()


async def test_fails_over_to_the_next_broker_of_the_cluster(tmp_path: Path, broker_factory, subscribe) -> None:
    """Two broker URLs (MQTT 3.1.1, as RabbitMQ 3.10 speaks): the first broker dies, the publisher connects to the
    next one and the readings measured meanwhile arrive there (docs/scale-out.md)."""
    first, second = broker_factory(""), broker_factory("")
    gw = f"gw-fo-{uuid.uuid4().hex[:8]}"
    sub = subscribe("127.0.0.1", second.port, f"tbib/v1/gw/{gw}/readings")
    box = Outbox(tmp_path / "o.sqlite3")
    pub = MqttPublisher(
        box,
        params(
            "127.0.0.1",
            first.port,
            gw,
            keepalive=5,
            fallbacks=(("127.0.0.1", second.port),),
            protocol=MQTTProtocolVersion.MQTTv311,
        ),
        gateway_id=gw,
        max_readings=20,
        max_delay=0.05,
        window=3,
        backoff=Backoff(initial=0.2, maximum=1.0),
        receipts=False,
    )
    await pub.start()
    fill(box, 50)
    pub.notify()
    async with asyncio.timeout(20):
        await pub.drain()
    first.stop()
    later = fill(box, 50, start=50)
    pub.notify()
    async with asyncio.timeout(20):
        await pub.drain()
    await asyncio.to_thread(sub.wait_for, lambda: {r["id"] for r in sub.readings()} >= set(later))
    assert pub.stats.connects >= 2
    await pub.stop()
    box.close()


@pytest.mark.slow
async def test_link_outage_nothing_lost_no_republish_after_puback(tmp_path: Path, own_broker: OwnBroker, subscribe):
    """Broker stopped 30 s (as the issue asks) while devices keep measuring, then restarted on the same port and
    persistence: every reading arrives, in order per device, and no id is published again after its PUBACK."""
    gw = f"gw-out-{uuid.uuid4().hex[:8]}"
    sub = subscribe("127.0.0.1", own_broker.port, f"tbib/v1/gw/{gw}/readings")
    box = Outbox(tmp_path / "o.sqlite3")
    acked: set[str] = set()
    violations: list[str] = []
    pub = MqttPublisher(
        box,
        params("127.0.0.1", own_broker.port, gw, keepalive=5),
        gateway_id=gw,
        max_readings=20,
        max_delay=0.05,
        window=3,
        backoff=Backoff(initial=0.2, maximum=1.0),
        on_acked=acked.update,
        receipts=False,
    )
    real_publish = pub._client.publish

    def checked_publish(topic: str, payload: bytes = b"", *a: Any, **kw: Any) -> Any:
        if topic.endswith("/readings"):
            violations.extend(r["id"] for r in json.loads(payload)["readings"] if r["id"] in acked)
        return real_publish(topic, payload, *a, **kw)

    pub._client.publish = checked_publish  # type: ignore[method-assign,assignment]
    await pub.start()
    captured: list[str] = []
    stop = asyncio.Event()

    async def devices() -> None:
        i = 0
        while not stop.is_set():
            captured.extend(fill(box, 5, devices=5, start=i))
            pub.notify()
            i += 5
            await asyncio.sleep(0.05)

    task = asyncio.create_task(devices())
    await asyncio.sleep(1.5)
    own_broker.stop()
    await asyncio.sleep(30)
    assert pub.state is not LinkState.CONNECTED
    depth_during = box.depth()
    own_broker.start()
    await asyncio.sleep(1.5)
    stop.set()
    await task
    async with asyncio.timeout(30):
        await pub.drain()
    await asyncio.to_thread(sub.wait_for, lambda: {r["id"] for r in sub.readings()} >= set(captured), 30)
    got = sub.readings()
    assert depth_during > 100  # readings piled up during the outage
    assert {r["id"] for r in got} == set(captured)
    assert violations == []
    for dev in {r["device"]["address"] for r in got}:  # per-device order (first delivery of each id)
        seen: dict[str, int] = {}
        for n, r in enumerate(got):
            if r["device"]["address"] == dev:
                seen.setdefault(r["id"], n)
        order = sorted(seen, key=seen.__getitem__)
        assert order == [i for i in captured if i in seen]
    assert pub.stats.connects >= 2
    await pub.stop()
    box.close()


async def test_refused_credentials_clear_error_and_backoff(tmp_path: Path, broker_factory) -> None:
    pwfile = tmp_path / "passwd"
    pwfile.touch()
    await asyncio.to_thread(
        subprocess.run, ["mosquitto_passwd", "-b", str(pwfile), "gw-auth", "right-password"], check=True
    )
    os.chmod(pwfile, 0o644)
    broker = broker_factory(f"allow_anonymous false\npassword_file {pwfile}\n")
    box = Outbox(tmp_path / "o.sqlite3")
    fill(box, 10)
    sleeps: list[float] = []
    backoff = Backoff(initial=0.1, maximum=0.4)
    real = backoff.next_delay

    def recording(**kw: Any) -> float:
        d = real(**kw)
        sleeps.append(d)
        return d

    backoff.next_delay = recording  # type: ignore[method-assign]
    bad = MqttPublisher(
        box,
        params("127.0.0.1", broker.port, "gw-auth", username="gw-auth", password="wrong"),
        gateway_id="gw-auth",
        backoff=backoff,
        auth_backoff_floor=0.4,
        receipts=False,
    )
    await bad.start()
    await until(lambda: bad.stats.connect_failures >= 3, 10)
    assert bad.state is LinkState.AUTH_FAILED
    assert isinstance(bad.last_error, BrokerAuthError)
    assert bad.last_error.reason_code in (0x86, 0x87)
    assert "refused the connection" in str(bad.last_error)
    assert all(d >= 0.2 for d in sleeps)  # auth failures back off at least half the floor
    assert box.depth() == 10
    await bad.stop()
    good = MqttPublisher(
        box,
        params("127.0.0.1", broker.port, "gw-auth", username="gw-auth", password="right-password"),
        gateway_id="gw-auth",
        receipts=False,
    )
    await good.start()
    async with asyncio.timeout(10):
        await good.drain()
    assert good.last_error is None
    await good.stop()
    box.close()


async def test_tls_listener_with_test_ca(tmp_path: Path, broker_factory, tls_files, subscribe) -> None:
    plain_port = free_port()  # a second, plain listener for the test subscriber
    broker = broker_factory(
        "allow_anonymous true\n"
        f"cafile {tls_files.ca}\ncertfile {tls_files.cert}\nkeyfile {tls_files.key}\n"
        f"listener {plain_port} 127.0.0.1\n"
    )
    sub = subscribe("127.0.0.1", plain_port, "tbib/v1/gw/gw-tls/readings")
    box = Outbox(tmp_path / "o.sqlite3")
    ids = fill(box, 30)
    pub = MqttPublisher(
        box,
        params("127.0.0.1", broker.port, "gw-tls", tls=True, ca_file=str(tls_files.ca)),
        gateway_id="gw-tls",
        receipts=False,
    )
    await pub.start()
    async with asyncio.timeout(10):
        await pub.drain()
    await asyncio.to_thread(sub.wait_for, lambda: len(sub.readings()) >= 30)
    assert [r["id"] for r in sub.readings()] == ids
    await pub.stop()
    # a CA that did not sign the server certificate: refused, never connected
    other = tmp_path / "other-ca.pem"
    other.write_bytes(tls_files.cert.read_bytes())
    box2 = Outbox(tmp_path / "o2.sqlite3")
    fill(box2, 1)
    pub2 = MqttPublisher(
        box2,
        params("127.0.0.1", broker.port, "gw-tls2", tls=True, ca_file=str(other)),
        gateway_id="gw-tls2",
        backoff=Backoff(initial=0.1, maximum=0.2),
        receipts=False,
    )
    await pub2.start()
    await until(lambda: pub2.stats.connect_failures >= 1, 5)
    assert pub2.state is not LinkState.CONNECTED
    assert "CERTIFICATE_VERIFY_FAILED" in str(pub2.last_error)
    await pub2.stop()
    box.close()
    box2.close()
