"""Commit receipts, ingest side: the pure book (no broker), then the worker on real Mosquitto + TimescaleDB."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from teleconsult.ingest.payload import Decoded, Rejected, decode_batch
from teleconsult.ingest.receipts import BatchRef, Outcome, ReceiptBook, id_of_reason, parse_batch_ref
from teleconsult.ingest.worker import IngestConfig, IngestWorker
from tests.teleconsult.ingest.helpers import VOCAB, Gateways, Publisher, reading, stored_ids, t0

EPOCH = "00000000deadbeef"


def named_batch(gateway_id: str, readings: list[dict], first: int, last: int, **extra: Any) -> bytes:
    doc = {
        "v": 1,
        "gateway_id": gateway_id,
        "sent_at": datetime.now(UTC).isoformat(),
        "batch": {"epoch": EPOCH, "seq": [first, last]},
        "readings": readings,
        **extra,
    }
    return json.dumps(doc).encode()


def test_batch_ref_parsing() -> None:
    assert parse_batch_ref({"epoch": EPOCH, "seq": [1, 3]}) == BatchRef(EPOCH, 1, 3)
    for bad in (None, [], {"epoch": "XYZ", "seq": [1, 2]}, {"epoch": EPOCH, "seq": [3, 1]}, {"epoch": EPOCH}):
        assert parse_batch_ref(bad) is None
    assert parse_batch_ref({"epoch": EPOCH, "seq": [True, 2]}) is None


def test_decode_keeps_the_batch_name_and_the_ids_of_rejected_readings() -> None:
    now = datetime.now(UTC)
    good = reading("AA:01", now)
    bad = reading("AA:01", now, metric="nope")
    d = decode_batch("tbib/v1/gw/gw-1/readings", named_batch("gw-1", [good, bad, 7], 4, 6), vocab=VOCAB, now=now)
    assert isinstance(d, Decoded)
    assert d.batch == BatchRef(EPOCH, 4, 6)
    assert d.reject_ids == [bad["id"], None]
    whole = decode_batch("tbib/v1/gw/gw-1/readings", named_batch("gw-1", [], 1, 1, v=2), vocab=VOCAB, now=now)
    assert isinstance(whole, Rejected)
    assert whole.batch == BatchRef(EPOCH, 1, 1)


def test_book_one_receipt_per_gateway_and_one_warning_per_old_gateway() -> None:
    book = ReceiptBook()
    b1, b2, b3 = BatchRef(EPOCH, 1, 10), BatchRef(EPOCH, 11, 20), BatchRef(EPOCH, 1, 5)
    out, legacy = book.receipts(
        [
            Outcome("gw-1", b1),
            Outcome("gw-1", b2, [("r-9", "readings[2]: unknown metric 'x'")]),
            Outcome("gw-1", b1),  # a re-send in the same transaction: named once
            Outcome("gw-2", b3),
            Outcome("gw-old", None),
            Outcome("gw-old", None),
            Outcome(None, None),
        ]
    )
    assert legacy == ["gw-old"]
    assert [(o.topic, o.batches) for o in out] == [("tbib/v1/gw/gw-1/receipts", 2), ("tbib/v1/gw/gw-2/receipts", 1)]
    assert orjson.loads(out[0].payload) == {
        "v": 1,
        "gateway_id": "gw-1",
        "batches": [{"epoch": EPOCH, "seq": [1, 10]}, {"epoch": EPOCH, "seq": [11, 20]}],
        "rejected": [{"id": "r-9", "reason": "readings[2]: unknown metric 'x'"}],
    }
    assert orjson.loads(out[1].payload) == {"v": 1, "gateway_id": "gw-2", "batches": [{"epoch": EPOCH, "seq": [1, 5]}]}
    assert book.receipts([Outcome("gw-old", None)]) == ([], [])  # warned once only
    ids = ReceiptBook(form="ids").receipts([Outcome("gw-1", b1, (), ["a", "b"])])[0][0]
    assert orjson.loads(ids.payload) == {"v": 1, "gateway_id": "gw-1", "committed": ["a", "b"]}


def test_id_of_binding_refusal() -> None:
    rid = str(uuid.uuid4())
    assert id_of_reason(f"reading {rid}: device 'X' is not enrolled to gateway 'g'") == rid
    assert id_of_reason("readings[3]: unknown metric") is None


class ReceiptListener:
    """A paho subscriber to one gateway's receipts; each receipt is stored with the readings stored at that moment."""

    def __init__(self, host: str, port: int, gateway_id: str, dsn: str) -> None:
        self.got: list[tuple[dict[str, Any], set[str]]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"t-rcpt-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
        )

        def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
            stored = set(stored_ids(dsn, gateway_id))
            with self.lock:
                self.got.append((json.loads(msg.payload), stored))

        self.c.on_message = on_message
        self.c.on_subscribe = lambda *_a: self.subscribed.set()
        self.c.connect(host, port)
        self.c.subscribe(f"tbib/v1/gw/{gateway_id}/receipts", qos=1)
        self.c.loop_start()
        assert self.subscribed.wait(10)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


async def until(predicate: Any, seconds: float = 20.0) -> bool:
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return bool(predicate())


async def test_worker_receipts_after_commit_with_rejects_and_no_receipt_for_old_gateways(
    gateways: Gateways, mqtt_url: str, mqtt_host_port: tuple[str, int], publisher: Publisher, caplog: Any
) -> None:
    caplog.set_level(logging.WARNING, logger="teleconsult.ingest.worker")
    w = IngestWorker(
        IngestConfig(
            dsn=gateways.dsn,
            mqtt_url=mqtt_url,
            client_id=f"test-rcpt-{uuid.uuid4().hex[:8]}",
            topic=gateways.topic_filter,
            linger_s=0.02,
        ),
        vocabulary=VOCAB,
    )
    listen_a = ReceiptListener(*mqtt_host_port, gateways.gw_a, gateways.dsn)
    listen_b = ReceiptListener(*mqtt_host_port, gateways.gw_b, gateways.dsn)
    await w.start()
    try:
        assert await w.wait_connected()
        start = t0()
        good = [reading("AA:01", start + timedelta(seconds=i)) for i in range(5)]
        unknown_metric = reading("AA:01", start, metric="nope")
        stranger = reading("CC:99", start)  # a device not enrolled to gw_a
        payload = named_batch(gateways.gw_a, [*good, unknown_metric, stranger], 1, 7)
        publisher.publish(gateways.gw_a, payload)
        publisher.publish(gateways.gw_a, payload)  # a re-send after a lost receipt: committed again (no-op), receipted
        old = [reading("BB:01", start + timedelta(seconds=i)) for i in range(3)]
        for r in old:  # gw_b is an old gateway: no batch name
            publisher.publish(gateways.gw_b, json.dumps({"v": 1, "gateway_id": gateways.gw_b,
                "sent_at": datetime.now(UTC).isoformat(), "readings": [r]}).encode())  # fmt: skip
        publisher.wait()
        assert await until(lambda: len(listen_a.got) >= 1 and w.metrics.messages >= 5)
        await asyncio.sleep(0.3)
        for doc, stored_then in listen_a.got:
            assert doc["gateway_id"] == gateways.gw_a
            assert doc["batches"] == [{"epoch": EPOCH, "seq": [1, 7]}]
            assert {r["id"] for r in good} <= stored_then  # the receipt left after the commit
            rejected = {r["id"]: r["reason"] for r in doc["rejected"]}
            assert set(rejected) == {unknown_metric["id"], stranger["id"]}
            assert "unknown metric" in rejected[unknown_metric["id"]]
            assert "not enrolled" in rejected[stranger["id"]]
        await asyncio.sleep(0.3)
        assert listen_b.got == []
        assert {r["id"] for r in old} <= set(stored_ids(gateways.dsn, gateways.gw_b))
        warnings = [r.getMessage() for r in caplog.records if "PUBACK mode" in r.getMessage()]
        assert warnings == [
            f"gateway {gateways.gw_b} sends batches without a batch name: old gateway, PUBACK mode, no receipts"
        ]
        assert w.metrics.receipts == len(listen_a.got) in (1, 2)  # one per transaction (both copies may share one)
    finally:
        await w.stop()
        listen_a.close()
        listen_b.close()


@pytest.mark.parametrize("form", ["off"])
async def test_receipts_off_publishes_none(
    gateways: Gateways, mqtt_url: str, mqtt_host_port: tuple[str, int], publisher: Publisher, form: str
) -> None:
    w = IngestWorker(
        IngestConfig(
            dsn=gateways.dsn, mqtt_url=mqtt_url, client_id=f"test-off-{uuid.uuid4().hex[:8]}",
            topic=gateways.topic_filter, linger_s=0.02, receipts=None,
        ),
        vocabulary=VOCAB,
    )  # fmt: skip
    listen = ReceiptListener(*mqtt_host_port, gateways.gw_a, gateways.dsn)
    await w.start()
    try:
        assert await w.wait_connected()
        r = reading("AA:01", t0())
        publisher.publish(gateways.gw_a, named_batch(gateways.gw_a, [r], 1, 1))
        publisher.wait()
        assert await until(lambda: r["id"] in stored_ids(gateways.dsn, gateways.gw_a))
        await asyncio.sleep(0.3)
        assert listen.got == []
        assert w.metrics.receipts == 0
    finally:
        await w.stop()
        listen.close()
