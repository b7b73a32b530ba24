"""Gateway credentials on a real Mosquitto started with the files `tbib pki` generates.

Gateway A publishes under its own prefix; gateway B can neither publish under A's prefix nor read A's topics;
a wrong password, an anonymous client and a revoked gateway are refused (revocation = rewrite + SIGHUP, no restart).
The broker's TLS listener uses the development CA from `tbib pki init`.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from teleconsult.cli.main import main as tbib
from teleconsult.security import enrolment
from teleconsult.security.enrolment import BrokerFiles
from tests.teleconsult.api.helpers import Seeded

REPO = Path(__file__).resolve().parents[3]
MOSQUITTO = "/usr/sbin/mosquitto"
NOT_AUTHORIZED = 135


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(port)


@dataclass
class Broker:
    dir: Path
    port: int
    tls_port: int
    files: BrokerFiles
    proc: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    assert tbib(["pki", "init", "--dir", str(d), "--host", "localhost", "--host", "127.0.0.1"]) == 0
    return d


@pytest.fixture(scope="module")
def broker(seeded: Seeded, pki_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    d = tmp_path_factory.mktemp("broker")
    files = BrokerFiles(d / "passwd", d / "acl", d / "mosquitto.pid")
    with psycopg.connect(seeded.dsn, autocommit=True) as conn:
        enrolment.sync_broker(conn, files)  # empty files: nobody may connect yet
    port, tls_port = _free_port(), _free_port()
    base = "\n".join(
        line for line in (REPO / "config/mosquitto/tbib.conf").read_text().splitlines()
        if not line.startswith(("persistence", "autosave"))
    )  # fmt: skip
    conf = d / "mosquitto.conf"
    conf.write_text(
        f"{base}\nuser root\npersistence false\nallow_anonymous false\n"
        f"password_file {files.passwd_file}\nacl_file {files.acl_file}\n"
        f"listener {port} 127.0.0.1\n"
        f"listener {tls_port} 127.0.0.1\ncafile {pki_dir / 'ca.crt'}\ncertfile {pki_dir / 'broker.crt'}\n"
        f"keyfile {pki_dir / 'broker.key'}\n"
    )
    log = (d / "mosquitto.log").open("ab")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=log)
    log.close()
    assert files.pid_file is not None
    files.pid_file.write_text(str(proc.pid))
    _wait_port(port)
    _wait_port(tls_port)
    yield Broker(d, port, tls_port, files, proc)
    proc.terminate()
    proc.wait(10)


class Client:
    """A paho MQTT v5 client with its events in queues."""

    def __init__(self, port: int, username: str | None, password: str | None, *, tls_ca: Path | None = None) -> None:
        self.connack: queue.Queue[int] = queue.Queue()
        self.puback: dict[int, int] = {}
        self.suback: queue.Queue[list[int]] = queue.Queue()
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.disconnected = threading.Event()
        self._acked = threading.Condition()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, client_id=f"t-{username}-{port}")
        if username is not None:
            self.c.username_pw_set(username, password)
        if tls_ca is not None:
            self.c.tls_set(ca_certs=str(tls_ca), cert_reqs=ssl.CERT_REQUIRED)
        self.c.on_connect = lambda c, u, f, rc, p: self.connack.put(rc.value)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.suback.put([rc.value for rc in rcs])
        self.c.on_message = lambda c, u, m: self.messages.put((m.topic, bytes(m.payload)))
        self.c.on_publish = self._on_publish
        self.c.on_disconnect = lambda c, u, f, rc, p: self.disconnected.set()
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.rc = self.connack.get(timeout=10)

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: Any, _p: Any) -> None:
        with self._acked:
            self.puback[mid] = rc.value
            self._acked.notify_all()

    def publish(self, topic: str, payload: bytes = b"x") -> int:
        """QoS 1 publish; returns the PUBACK reason code."""
        info = self.c.publish(topic, payload, qos=1)
        with self._acked:
            assert self._acked.wait_for(lambda: info.mid in self.puback, timeout=10), f"no PUBACK for {topic}"
            return self.puback[info.mid]

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


def _enroll(seeded: Seeded, broker: Broker, gateway_id: str, capsys: pytest.CaptureFixture[str]) -> str:
    f = broker.files
    code = tbib(
        ["pki", "enroll-gateway", gateway_id, "--database-url", seeded.dsn, "--passwd-file", str(f.passwd_file),
         "--acl-file", str(f.acl_file), "--pid-file", str(f.pid_file)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "broker reloaded" in out
    return out.strip().splitlines()[-1].rsplit(" ", 1)[-1]


def test_gateways_confined_to_their_prefix(seeded: Seeded, broker: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    secret_a = _enroll(seeded, broker, "gw-a", capsys)
    secret_b = _enroll(seeded, broker, "gw-b", capsys)
    with psycopg.connect(seeded.dsn, autocommit=True) as conn:
        ingest_secret = enrolment.add_service_account(conn, "tbib-ingest")
        assert enrolment.sync_broker(conn, broker.files)
    time.sleep(0.3)  # SIGHUP is asynchronous
    ingest = Client(broker.port, "tbib-ingest", ingest_secret)
    a = Client(broker.port, "gw-a", secret_a)
    b = Client(broker.port, "gw-b", secret_b)
    try:
        assert (ingest.rc, a.rc, b.rc) == (0, 0, 0)
        assert ingest.subscribe("tbib/v1/gw/+/readings", "tbib/v1/gw/+/events") == [1, 1]
        # A publishes under its own prefix: accepted and delivered
        assert a.publish("tbib/v1/gw/gw-a/readings", b"from-a") == 0
        assert ingest.drain() == [("tbib/v1/gw/gw-a/readings", b"from-a")]
        # B cannot publish under A's prefix (PUBACK "not authorized", nothing delivered) but can under its own
        assert b.publish("tbib/v1/gw/gw-a/readings", b"forged-by-b") == NOT_AUTHORIZED
        assert b.publish("tbib/v1/gw/gw-a/events", b"forged-by-b") == NOT_AUTHORIZED
        assert b.publish("tbib/v1/gw/gw-b/readings", b"from-b") == 0
        assert ingest.drain() == [("tbib/v1/gw/gw-b/readings", b"from-b")]
        # B cannot read A's topics: whatever SUBACK says, nothing of A's reaches B
        b.subscribe("tbib/v1/gw/gw-a/#", "tbib/v1/gw/gw-a/commands", "tbib/v1/gw/+/readings", "#")
        assert a.subscribe("tbib/v1/gw/gw-a/commands") == [1]
        assert ingest.publish("tbib/v1/gw/gw-a/commands", b"cmd-for-a") == 0
        assert a.publish("tbib/v1/gw/gw-a/readings", b"more-from-a") == 0
        assert a.drain() == [("tbib/v1/gw/gw-a/commands", b"cmd-for-a")]
        assert b.drain() == []
        # a gateway cannot read other topics either, even its own readings (write-only) or the service topics
        assert ingest.publish("tbib/v1/internal/x", b"internal") == 0
        assert a.drain(0.2) == []
    finally:
        for c in (ingest, a, b):
            c.close()


def test_refused_clients_and_revocation(seeded: Seeded, broker: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    secret = _enroll(seeded, broker, "gw-r", capsys)
    time.sleep(0.3)
    wrong = Client(broker.port, "gw-r", secret + "x")
    anon = Client(broker.port, None, None)
    assert wrong.rc in (134, 135)  # bad user name or password / not authorized
    assert anon.rc in (134, 135)
    live = Client(broker.port, "gw-r", secret)
    assert live.rc == 0
    f = broker.files
    code = tbib(
        ["pki", "revoke-gateway", "gw-r", "--database-url", seeded.dsn, "--passwd-file", str(f.passwd_file),
         "--acl-file", str(f.acl_file), "--pid-file", str(f.pid_file)]
    )  # fmt: skip
    assert code == 0
    assert "gw-r" not in f.passwd_file.read_text()
    time.sleep(0.5)
    again = Client(broker.port, "gw-r", secret)
    assert again.rc in (134, 135)
    assert broker.proc.poll() is None  # same broker process: no restart
    # the connection opened before the revocation is dropped by the reload
    assert live.disconnected.wait(5)
    for c in (wrong, anon, live, again):
        c.close()
    # re-enrolling issues a new secret; the old one stays refused
    new_secret = _enroll(seeded, broker, "gw-r", capsys)
    time.sleep(0.3)
    assert Client(broker.port, "gw-r", secret).rc in (134, 135)
    fresh = Client(broker.port, "gw-r", new_secret)
    assert fresh.rc == 0
    fresh.close()


def test_tls_listener_with_development_ca(seeded: Seeded, broker: Broker, pki_dir: Path, capsys: Any) -> None:
    secret = _enroll(seeded, broker, "gw-tls", capsys)
    time.sleep(0.3)
    c = Client(broker.tls_port, "gw-tls", secret, tls_ca=pki_dir / "ca.crt")
    assert c.rc == 0
    assert c.publish("tbib/v1/gw/gw-tls/status", b"online") in (0, 16)  # 16: accepted, no matching subscribers
    c.close()


def test_gateway_side_enrolment(
    seeded: Seeded, broker: Broker, pki_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """`tbib pki enroll-gateway` on the server, then `tbib gateway enroll` on the gateway with the printed secret."""
    import io
    import sys

    from gateway_agent.config import load_config

    secret = _enroll(seeded, broker, "gw-home", capsys)
    time.sleep(0.3)
    creds, cfg = tmp_path / "credentials.toml", tmp_path / "gateway.toml"
    url = f"mqtts://127.0.0.1:{broker.tls_port}"
    args = ["gateway", "enroll", "gw-home", "--broker-url", url, "--ca-file", str(pki_dir / "ca.crt"),
            "--credentials-file", str(creds), "--config", str(cfg), "--secret-stdin"]  # fmt: skip
    monkeypatch.setattr(sys, "stdin", io.StringIO("not-the-secret\n"))
    assert tbib(args) == 1
    assert "refused the credentials" in capsys.readouterr().err
    assert not creds.exists()
    monkeypatch.setattr(sys, "stdin", io.StringIO(secret + "\n"))
    assert tbib(args) == 0
    assert "accepted by the broker" in capsys.readouterr().out
    assert creds.stat().st_mode & 0o077 == 0
    settings = load_config(cfg)
    assert settings.gateway_id == "gw-home"
    assert settings.credentials() is not None
    assert settings.credentials().password == secret  # type: ignore[union-attr]
