"""Helpers for ingest tests: payload builders, enrolled gateways, a QoS 1 publisher, a private PostgreSQL cluster that
tests may stop and start, and a runner for `tbib ingest` subprocesses (fixtures are in conftest.py)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from teleconsult.ingest.payload import StaticVocabulary
from teleconsult.store.migrate import upgrade

REPO = Path(__file__).resolve().parents[3]
VOCAB = StaticVocabulary({"heart_rate": ["/min"], "spo2": ["%"], "systolic_bp": ["mm[Hg]"], "body_weight": ["kg"]})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reading(address: str, t: datetime, *, metric: str = "heart_rate", unit: str = "/min", value: float = 70.0) -> dict:
    return {
        "id": str(uuid.uuid4()),
        "device": {"address": address, "model": "sim", "serial": "1"},
        "metric": metric,
        "value": value,
        "unit": unit,
        "measured_at": t.isoformat().replace("+00:00", "Z"),
        "device_time": None,
        "received_at": t.isoformat(),
        "group": None,
        "flags": None,
    }


def batch(gateway_id: str, readings: list[dict], *, v: object = 1) -> bytes:
    doc = {"v": v, "gateway_id": gateway_id, "sent_at": datetime.now(UTC).isoformat(), "readings": readings}
    return json.dumps(doc).encode()


def topic(gateway_id: str) -> str:
    return f"tbib/v1/gw/{gateway_id}/readings"


@dataclass
class Gateways:
    """Enrolled test gateways: ``gw_a`` owns ``AA:01``, ``gw_b`` owns ``BB:01`` (unique names per module)."""

    dsn: str
    gw_a: str
    gw_b: str
    patient_a: uuid.UUID
    patient_b: uuid.UUID
    share: str = field(default_factory=lambda: f"tbib-test-{uuid.uuid4().hex[:8]}")

    @property
    def topic_filter(self) -> str:
        return f"$share/{self.share}/tbib/v1/gw/+/readings"


def enrol_sync(dsn: str, gateway_id: str, address: str) -> uuid.UUID:
    pid = uuid.uuid4()
    with psycopg.connect(dsn) as conn:
        conn.execute("insert into patients (id, display_name) values (%s, %s)", (pid, f"Patient {gateway_id}"))
        conn.execute("insert into gateways (id, patient_id) values (%s, %s)", (gateway_id, pid))
        conn.execute(
            "insert into devices (gateway_id, patient_id, address, kind) values (%s, %s, %s, 'hr')",
            (gateway_id, pid, address),
        )
        conn.execute(
            "insert into consents (patient_id, purpose, granted) values (%s, 'remote_monitoring', true)", (pid,)
        )
    return pid


def make_gateways(dsn: str) -> Gateways:
    upgrade(dsn)
    tag = uuid.uuid4().hex[:6]
    gw_a, gw_b = f"gw-a-{tag}", f"gw-b-{tag}"
    return Gateways(dsn, gw_a, gw_b, enrol_sync(dsn, gw_a, "AA:01"), enrol_sync(dsn, gw_b, "BB:01"))


class Publisher:
    """A paho QoS 1 publisher (its own network thread)."""

    def __init__(self, host: str, port: int) -> None:
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"test-pub-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect(host, port)
        self.client.loop_start()
        self.infos: list[mqtt.MQTTMessageInfo] = []

    def publish(self, gateway_id: str, payload: bytes) -> None:
        self.infos.append(self.client.publish(topic(gateway_id), payload, qos=1))

    def wait(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        for info in self.infos:
            info.wait_for_publish(max(deadline - time.monotonic(), 0.1))
        self.infos.clear()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def stored_ids(dsn: str, gateway_id: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "select r.reading_id::text from readings r join devices d on d.id = r.device_id where d.gateway_id = %s",
            (gateway_id,),
        ).fetchall()
    return [r[0] for r in rows]


def wait_for(predicate, timeout: float = 30, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class IngestProcess:
    """`tbib ingest` in a subprocess (real CLI), killable with SIGKILL."""

    def __init__(self, dsn: str, mqtt_url: str, client_id: str, topic_filter: str) -> None:
        self.args = [
            sys.executable,
            "-m",
            "teleconsult.cli.main",
            "ingest",
            "--dsn",
            dsn,
            "--mqtt-url",
            mqtt_url,
            "--client-id",
            client_id,
            "--topic",
            topic_filter,
            "--linger-ms",
            "20",
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class OwnPostgres:
    """A private PostgreSQL cluster (initdb in a temp dir, run as user postgres) that a test may stop and start."""

    def __init__(self) -> None:
        self.bindir = Path("/usr/lib/postgresql") / sorted(os.listdir("/usr/lib/postgresql"))[-1] / "bin"
        self.dir = Path(tempfile.mkdtemp(prefix="tbib-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        shutil.chown(self.dir, "postgres")
        self._pg("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        with (self.data / "postgresql.conf").open("a") as f:
            f.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.dir}'\n"
                "shared_preload_libraries = 'timescaledb'\nfsync = off\ntimescaledb.telemetry_level = off\n"
            )

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg(self, tool: str, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self.bindir / tool), *args],
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "start")

    def stop(self) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def t0() -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def run_threads(*fns) -> None:
    threads = [threading.Thread(target=f) for f in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


class OwnBroker:
    """A private Mosquitto (project config, a loopback listener, persistence in a temp dir) a test may restart."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="tbib-mq-"))
        self.port = free_port()
        base = (REPO / "config" / "mosquitto" / "tbib.conf").read_text()
        (self.dir / "mosquitto.conf").write_text(
            base + f"\nlistener {self.port} 127.0.0.1\nallow_anonymous true\npersistence_location {self.dir}/\n"
        )
        if os.geteuid() == 0:
            shutil.chown(self.dir, "mosquitto")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["/usr/sbin/mosquitto", "-c", str(self.dir / "mosquitto.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # graceful: the persistence file keeps sessions and queued messages
            self.proc.wait(10)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
