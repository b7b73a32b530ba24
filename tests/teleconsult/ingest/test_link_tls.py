"""The ingest client's lean read path over TLS with a password, on a shared subscription (real Mosquitto, the
development CA of `tbib pki init`): every QoS 1 message arrives once, in order, whole across TLS records; the batched
PUBACKs settle them (a reconnect of the same persistent session gets nothing again); a wrong password is refused."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from teleconsult.cli.main import main as tbib
from teleconsult.ingest.link import Delivery, IngestClient
from tests.teleconsult.ingest.helpers import free_port

MOSQUITTO = "/usr/sbin/mosquitto"
SHARE = "$share/tls-test/tbib/v1/gw/+/readings"


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(port)


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    pki = tmp_path_factory.mktemp("pki")
    assert tbib(["pki", "init", "--dir", str(pki), "--host", "localhost", "--host", "127.0.0.1"]) == 0
    d = tmp_path_factory.mktemp("broker")
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(d / "passwd"), "ingest", "s3cret"], check=True)
    port = free_port()
    (d / "mosquitto.conf").write_text(
        f"user root\npersistence false\nallow_anonymous false\npassword_file {d / 'passwd'}\n"
        "max_inflight_messages 1000\nmax_queued_messages 100000\nset_tcp_nodelay true\n"
        f"listener {port} 127.0.0.1\ncafile {pki / 'ca.crt'}\ncertfile {pki / 'broker.crt'}\n"
        f"keyfile {pki / 'broker.key'}\n"
    )
    proc = subprocess.Popen([MOSQUITTO, "-c", str(d / "mosquitto.conf")], stderr=subprocess.DEVNULL)
    try:
        _wait_port(port)
        yield port, pki / "ca.crt"
    finally:
        proc.terminate()
        proc.wait(10)


class Receiver:
    """An IngestClient on the shared subscription, recording what it is handed."""

    def __init__(self, port: int, ca: Path, password: str = "s3cret") -> None:
        self.runs: list[list[Delivery]] = []
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.refused: Any = None
        c = IngestClient(
            CallbackAPIVersion.VERSION2, client_id="tls-ingest", protocol=MQTTProtocolVersion.MQTTv5, manual_ack=True
        )
        c.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED)
        c.username_pw_set("ingest", password)
        c.on_publishes = self.runs.append
        c.read_pause_s = 0.002
        c.on_connect = self._on_connect
        c.on_subscribe = lambda *_a: self.subscribed.set()
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 300
        props.ReceiveMaximum = 3000
        c.connect("127.0.0.1", port, 30, clean_start=False, properties=props)
        c.loop_start()
        self.client = c

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self.refused = reason
        else:
            client.subscribe(SHARE, options=SubscribeOptions(qos=1))
        self.connected.set()

    def received(self) -> list[Delivery]:
        return [d for run in self.runs for d in run]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_tls_password_shared_subscription_qos1_and_batched_acks(tls_broker: tuple[int, Path]) -> None:
    port, ca = tls_broker
    rx = Receiver(port, ca)
    assert rx.subscribed.wait(10)
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="tls-pub", protocol=MQTTProtocolVersion.MQTTv5)
    pub.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED)
    pub.username_pw_set("ingest", "s3cret")
    pub.max_inflight_messages_set(1000)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    try:
        # 3-30 KB messages: several per TLS record and records split across messages
        sent = [(f"tbib/v1/gw/gw-{i % 7}/readings", bytes([65 + i % 26]) * (3000 + 97 * i)) for i in range(300)]
        infos = [pub.publish(t, p, qos=1) for t, p in sent]
        for info in infos:
            info.wait_for_publish(10)
        deadline = time.monotonic() + 20
        while len(rx.received()) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.05)
        got = rx.received()
        assert [(t, p) for _mid, _qos, t, p in got] == sent
        assert {qos for _mid, qos, _t, _p in got} == {1}
        assert len(rx.runs) < len(sent)  # handed over in runs, not one call per message
        rx.client.ack_many([mid for mid, *_ in got])
        time.sleep(0.5)
    finally:
        pub.disconnect()
        pub.loop_stop()
        rx.close()
    again = Receiver(port, ca)  # the same persistent session: everything was acknowledged
    try:
        assert again.subscribed.wait(10)
        time.sleep(1.0)
        assert again.received() == []
    finally:
        again.close()


def test_wrong_password_is_refused(tls_broker: tuple[int, Path]) -> None:
    port, ca = tls_broker
    rx = Receiver(port, ca, password="wrong")
    try:
        assert rx.connected.wait(10)
        assert rx.refused is not None
        assert not rx.subscribed.is_set()
    finally:
        rx.close()
