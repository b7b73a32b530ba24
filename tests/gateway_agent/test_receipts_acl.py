"""Receipts under the broker ACL (real Mosquitto with the password and ACL files tbib renders): a gateway reads only its
own receipts, only service accounts write receipts; the real publisher's receipt subscription is granted."""

from __future__ import annotations

import queue
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from teleconsult.security.mosquitto import hash_password, render_acl_file, render_password_file

NOT_AUTHORIZED = 135
USERS = {"tbib-ingest": "s3cret-ingest", "gw-a": "s3cret-a", "gw-b": "s3cret-b"}


class Client:
    def __init__(self, port: int, user: str) -> None:
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.connack: queue.Queue[int] = queue.Queue()
        self.suback: queue.Queue[list[int]] = queue.Queue()
        self.puback: queue.Queue[int] = queue.Queue()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"acl-{user}", protocol=mqtt.MQTTv5)
        self.c.username_pw_set(user, USERS[user])
        self.c.on_connect = lambda _c, _u, _f, rc, _p: self.connack.put(rc.value)
        self.c.on_subscribe = lambda _c, _u, _m, rcs, _p: self.suback.put([rc.value for rc in rcs])
        self.c.on_publish = lambda _c, _u, _m, rc, _p: self.puback.put(rc.value)
        self.c.on_message = lambda _c, _u, m: self.messages.put((m.topic, bytes(m.payload)))
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert self.connack.get(timeout=10) == 0

    def publish(self, topic: str, payload: bytes) -> int:
        self.c.publish(topic, payload, qos=1)
        return self.puback.get(timeout=10)

    def subscribe(self, *topics: str) -> list[int]:
        self.c.subscribe([(t, 1) for t in topics])
        return self.suback.get(timeout=10)

    def drain(self, wait: float = 0.5) -> list[tuple[str, bytes]]:
        time.sleep(wait)
        out = []
        while not self.messages.empty():
            out.append(self.messages.get_nowait())
        return out

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_gateway_reads_only_its_own_receipts_and_only_services_write_them(tmp_path: Path, broker_factory: Any) -> None:
    (tmp_path / "passwd").write_text(render_password_file((u, hash_password(p)) for u, p in USERS.items()))
    (tmp_path / "acl").write_text(render_acl_file(["tbib-ingest"]))
    broker = broker_factory(
        f"allow_anonymous false\npassword_file {tmp_path / 'passwd'}\nacl_file {tmp_path / 'acl'}\n"
    )
    ingest, a, b = (Client(broker.port, u) for u in ("tbib-ingest", "gw-a", "gw-b"))
    try:
        assert a.subscribe("tbib/v1/gw/gw-a/receipts") == [1]
        b.subscribe("tbib/v1/gw/gw-b/receipts", "tbib/v1/gw/gw-a/receipts", "tbib/v1/gw/+/receipts", "#")
        assert ingest.publish("tbib/v1/gw/gw-a/receipts", b"receipt-for-a") == 0
        assert a.drain() == [("tbib/v1/gw/gw-a/receipts", b"receipt-for-a")]
        assert b.drain(0.2) == []  # not B's, whatever SUBACK said
        # a gateway cannot forge receipts for another gateway (nor could it read them)
        assert b.publish("tbib/v1/gw/gw-a/receipts", b"forged") == NOT_AUTHORIZED
        assert a.drain(0.2) == []
        assert ingest.publish("tbib/v1/gw/gw-b/receipts", b"receipt-for-b") == 0
        assert set(b.drain()) == {("tbib/v1/gw/gw-b/receipts", b"receipt-for-b")}  # once per matching filter
    finally:
        for c in (ingest, a, b):
            c.close()
