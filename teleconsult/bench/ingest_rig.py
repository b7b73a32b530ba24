"""The ingest benchmark's rig: project services, a private broker, `tbib ingest` processes, scraping their metrics,
CPU accounting, enrolled benchmark gateways (used by ``tbib bench ingest`` and by other benchmarks)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Final

import psycopg

from teleconsult.bench.loadgen import cpu_seconds_by_role
from teleconsult.ingest.metrics import LATENCY_BUCKETS, quantile_from_buckets

REPO: Final = Path(__file__).resolve().parents[2]


def log(msg: str) -> None:
    """Progress on stderr (stdout is reserved for the result)."""
    print(f"bench ingest: {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def project_dsn() -> str:
    """The project's database: $TBIB_TEST_DSN, else `scripts/services.sh up`."""
    if os.environ.get("TBIB_TEST_DSN"):
        return os.environ["TBIB_TEST_DSN"]
    script = str(REPO / "scripts" / "services.sh")
    out = subprocess.run([script, "up"], check=True, capture_output=True, text=True)  # noqa: S603 - our script
    m = re.search(r"^export TBIB_TEST_DSN='([^']*)'$", out.stdout, re.MULTILINE)
    if not m:
        raise RuntimeError("scripts/services.sh up did not print TBIB_TEST_DSN")
    return m.group(1)


class Broker:
    """A private Mosquitto with the project's tuned settings (persistence in a temp dir)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="tbib-bench-mq-"))
        self.port = free_port()
        base = (REPO / "config" / "mosquitto" / "tbib.conf").read_text()
        (self.dir / "mosquitto.conf").write_text(
            base + f"\nlistener {self.port} 127.0.0.1\nallow_anonymous true\npersistence_location {self.dir}/\n"
        )
        if os.geteuid() == 0:
            shutil.chown(self.dir, "mosquitto")  # mosquitto drops root privileges to this user
        self.proc = subprocess.Popen(  # noqa: S603 - fixed binary, our config
            ["/usr/sbin/mosquitto", "-c", str(self.dir / "mosquitto.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.3)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def scrape(port: int) -> dict[str, float]:
    """A worker's Prometheus text as {sample name with labels: value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def totals(ports: list[int]) -> dict[str, float]:
    """Sum of every sample over the workers."""
    acc: dict[str, float] = {}
    for p in ports:
        for k, v in scrape(p).items():
            acc[k] = acc.get(k, 0.0) + v
    return acc


def latency_quantiles(before: dict[str, float], after: dict[str, float]) -> tuple[float | None, float | None]:
    """p50/p99 (seconds) of the publish -> commit histogram between two scrapes."""
    name = "tbib_ingest_publish_to_commit_seconds_bucket"
    cum = [after.get(f'{name}{{le="{b:g}"}}', 0) - before.get(f'{name}{{le="{b:g}"}}', 0) for b in LATENCY_BUCKETS]
    inf = after.get(f'{name}{{le="+Inf"}}', 0) - before.get(f'{name}{{le="+Inf"}}', 0)
    counts = [int(c - p) for c, p in zip([*cum, inf], [0, *cum], strict=True)]
    return quantile_from_buckets(LATENCY_BUCKETS, counts, 0.5), quantile_from_buckets(LATENCY_BUCKETS, counts, 0.99)


class CpuMeter:
    """CPU seconds (user + system) used by the ingest workers, the broker and the database backends of the run."""

    def __init__(self, dsn: str, workers: list[int], broker: int | None) -> None:
        self.dsn, self.workers, self.broker = dsn, workers, broker

    def _pids(self) -> dict[str, list[int]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            rows = conn.execute(
                "select pid from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()"
            ).fetchall()
        out = {"ingest": self.workers, "postgres": [int(r[0]) for r in rows]}
        if self.broker is not None:
            out["broker"] = [self.broker]
        return out

    def sample(self) -> dict[str, float]:
        """Cumulative CPU seconds per role (processes that vanished count as 0)."""
        return cpu_seconds_by_role(self._pids())


def enrol(dsn: str, n: int) -> list[tuple[int, str, str, uuid.UUID]]:
    """``n`` patients, each with a gateway and a pulse oximeter; returns (index, gateway id, address, patient id)."""
    out = []
    with psycopg.connect(dsn) as conn:
        for i in range(n):
            pid = uuid.uuid4()
            gw = f"bench-gw-{i:04d}"
            conn.execute("insert into patients (id, display_name) values (%s, %s)", (pid, f"Bench {i}"))
            conn.execute("insert into gateways (id, patient_id) values (%s, %s)", (gw, pid))
            conn.execute(
                "insert into devices (gateway_id, patient_id, address, model, kind)"
                " values (%s, %s, %s, 'SIM-1', 'plx')",
                (gw, pid, f"AA:00:00:00:{i // 256:02X}:{i % 256:02X}"),
            )
            conn.execute(  # no decision on file is no consent: the bench patients consent to monitoring
                "insert into consents (patient_id, purpose, granted, note)"
                " values (%s, 'remote_monitoring', true, 'bench')",
                (pid,),
            )
            out.append((i, gw, f"AA:00:00:00:{i // 256:02X}:{i % 256:02X}", pid))
    return out


def start_workers(
    dsn: str, mqtt_url: str, share: str, ports: list[int], batch: int, receipts: str
) -> list[subprocess.Popen[bytes]]:
    """``tbib ingest`` processes on one shared subscription, each serving its metrics; waits until subscribed."""
    workers = [
        subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "teleconsult.cli.main", "ingest", "--dsn", dsn, "--mqtt-url", mqtt_url,
             "--client-id", f"{share}-w{i}", "--topic", f"$share/{share}/tbib/v1/gw/+/readings",
             "--metrics-port", str(port), "--batch", str(batch), "--receipts", receipts],
            cwd=REPO,
        )
        for i, port in enumerate(ports)
    ]  # fmt: skip
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if all(scrape(p).get("tbib_ingest_mqtt_reconnects_total", 0) >= 1 for p in ports):
                break
        except OSError:
            pass
        time.sleep(0.2)
    time.sleep(0.5)
    return workers


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM (a worker drains and acknowledges what it holds), then wait."""
    for w in workers:
        w.terminate()
    for w in workers:
        w.wait(30)
