"""Fixtures of the gateway tests: our own Mosquitto processes (stoppable), a TLS CA, MQTT subscribers."""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

REPO = Path(__file__).resolve().parents[2]
MOSQUITTO = "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


@dataclass
class OwnBroker:
    """A Mosquitto of our own: the project's tuned config plus a loopback listener; stoppable and restartable."""

    dir: Path
    port: int
    extra: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        conf = self.dir / "mosquitto.conf"
        base = (REPO / "config/mosquitto/tbib.conf").read_text()
        conf.write_text(
            base
            + f"\nuser root\npersistence_location {self.dir}/\nlistener {self.port} 127.0.0.1\n"
            + (self.extra or "allow_anonymous true\n")
        )
        log = (self.dir / "mosquitto.log").open("ab")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=log)
        log.close()
        # Every listener, not only the first: Mosquitto binds them one after the other, and a test that connects to
        # a second listener right away was refused under load (fresh-clone run, test_tls_listener_with_test_ca).
        for port in re.findall(r"^listener (\d+)", conf.read_text(), re.MULTILINE):
            wait_port(int(port))

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[OwnBroker]:
    """An anonymous Mosquitto on a free port, stoppable by the test."""
    (tmp_path / "broker").mkdir()
    broker = OwnBroker(tmp_path / "broker", free_port())
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Any]:
    """``make(extra_config) -> OwnBroker`` (started), for password files and TLS listeners."""
    made: list[OwnBroker] = []

    def make(extra: str, port: int | None = None) -> OwnBroker:
        d = tmp_path / f"broker{len(made)}"
        d.mkdir()
        broker = OwnBroker(d, port or free_port(), extra=extra.replace("{dir}", str(d)))
        broker.extra = broker.extra.replace("{port}", str(broker.port))
        broker.start()
        made.append(broker)
        return broker

    yield make
    for b in made:
        b.stop()


@dataclass
class Tls:
    ca: Path
    cert: Path
    key: Path


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A throw-away CA and a server certificate for 127.0.0.1 / localhost, made with ``cryptography``."""
    d = tmp_path_factory.mktemp("tls")
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tbib test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    tls = Tls(d / "ca.pem", d / "server.pem", d / "server.key")
    tls.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    tls.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tls.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return tls


@dataclass
class Subscriber:
    """A paho subscriber in its own thread with a persistent session; collects (topic, payload, retain)."""

    host: str
    port: int
    topic: str
    messages: list[tuple[str, bytes, bool]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    subscribed: threading.Event = field(default_factory=threading.Event)
    client: mqtt.Client | None = None

    def start(self) -> None:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-sub-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)
        c.reconnect_delay_set(1, 1)

        def on_connect(client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
            if not rc.is_failure:
                client.subscribe(self.topic, qos=1)

        def on_subscribe(*_a: Any) -> None:
            self.subscribed.set()

        def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
            with self.lock:
                self.messages.append((msg.topic, bytes(msg.payload), msg.retain))

        c.on_connect = on_connect
        c.on_subscribe = on_subscribe
        c.on_message = on_message
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        c.connect(self.host, self.port, clean_start=False, properties=props)
        c.loop_start()
        self.client = c
        assert self.subscribed.wait(10), "subscription not acknowledged"

    def stop(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()

    def payloads(self, suffix: str = "/readings") -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(p) for t, p, _r in self.messages if t.endswith(suffix)]

    def readings(self) -> list[dict[str, Any]]:
        return [r for batch in self.payloads() for r in batch["readings"]]

    def wait_for(self, predicate: Any, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise TimeoutError("condition not met in time")


@pytest.fixture
def subscribe() -> Iterator[Any]:
    """``subscribe(host, port, topic) -> Subscriber`` (started); all are stopped after the test."""
    subs: list[Subscriber] = []

    def make(host: str, port: int, topic: str) -> Subscriber:
        s = Subscriber(host, port, topic)
        s.start()
        subs.append(s)
        return s

    yield make
    for s in subs:
        s.stop()
