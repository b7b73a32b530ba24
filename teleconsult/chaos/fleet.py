"""The system under test of a chaos run: a database with enrolled simulated gateways, ``tbib ingest`` workers and
real gateways (``python -m gateway_agent.cli gateway run --simulate 1``) over the simulated BLE devices.

Each gateway appends the id of every reading it captured (after the outbox commit) to its own capture log
(``outbox.capture_log``); :func:`verify` compares the union of those logs with ``readings``: the expected set comes from
the devices' side of the gateway, never from what the gateway says it sent.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import psycopg

from teleconsult.chaos.netem import Link
from teleconsult.chaos.processes import Child, python_argv

KINDS: Final = ("heart_rate", "pulse_oximeter")


@dataclass
class SimGateway:
    """One simulated home gateway process and its files."""

    gateway_id: str
    seed: int
    dir: Path
    child: Child
    patients: list[uuid.UUID] = field(default_factory=list)
    link: Link | None = None
    """The emulated link the gateway runs behind, if any."""

    @property
    def capture_log(self) -> Path:
        return self.dir / "captured.txt"

    @property
    def outbox(self) -> Path:
        return self.dir / "outbox.sqlite3"


@dataclass
class Fleet:
    """Gateways and ingest workers sharing one broker and one database."""

    dsn: str
    mqtt_url: str
    dir: Path
    share: str = field(default_factory=lambda: f"chaos-{uuid.uuid4().hex[:6]}")
    gateways: list[SimGateway] = field(default_factory=list)
    workers: list[Child] = field(default_factory=list)

    def add_worker(self, index: int) -> Child:
        argv = python_argv(
            "-m", "teleconsult.cli.main", "ingest", "--dsn", self.dsn, "--mqtt-url", self.mqtt_url,
            "--client-id", f"{self.share}-ingest-{index}", "--topic", f"$share/{self.share}/tbib/v1/gw/+/readings",
            "--linger-ms", "20",
        )  # fmt: skip
        child = Child(f"ingest-{index}", argv, _env(), self.dir / f"ingest-{index}.log")
        self.workers.append(child)
        return child

    def add_gateway(
        self,
        index: int,
        *,
        receipt_timeout_s: float = 5.0,
        fallback_after: int = 0,
        receipts: bool = True,
        patients: int = 1,
        link: Link | None = None,
        scenario: tuple[str, float, float] | None = None,
    ) -> SimGateway:
        """A gateway with ``patients`` simulated patients (a kit each); behind ``link`` when given (run in its
        network namespace, the broker reached at the link's host-side address); ``scenario``: (name, onset s, full
        effect s) of a deterioration of its one patient (``--simulate-scenario``; the devices are the same)."""
        gw = f"{self.share}-gw-{index:02d}"
        seed = 1000 + index
        d = self.dir / gw
        d.mkdir(parents=True, exist_ok=True)
        pids = enrol(self.dsn, gw, seed, patients)
        broker = self.mqtt_url if link is None else self.mqtt_url.replace("127.0.0.1", link.host_ip)
        if scenario is None:
            sim = ["--simulate", str(patients)]
        elif patients == 1:
            name, onset, full = scenario
            sim = ["--simulate-scenario", name, "--sim-onset", str(onset), "--sim-full-effect", str(full)]
        else:
            raise ValueError("a deterioration scenario runs one patient per gateway")
        argv = python_argv(
            "-m", "gateway_agent.cli", "-v", "gateway", "run", *sim,
            "--sim-kinds", ",".join(KINDS), "--sim-seed", str(seed), "--broker", broker, "--gateway-id", gw,
            "--outbox", str(d / "outbox.sqlite3"), "--status-file", str(d / "status.json"),
        )  # fmt: skip
        if link is not None:
            argv = link.exec_argv(argv)
        env = _env(
            TBIB_GATEWAY_OUTBOX__CAPTURE_LOG=str(d / "captured.txt"),
            TBIB_GATEWAY_RECEIPTS__TIMEOUT_S=str(receipt_timeout_s),
            TBIB_GATEWAY_RECEIPTS__FALLBACK_AFTER=str(fallback_after),
            TBIB_GATEWAY_RECEIPTS__ENABLED="true" if receipts else "false",
            TBIB_GATEWAY_STOP_FLUSH_S="120",
            TBIB_GATEWAY_KEEPALIVE_S="10",
        )
        g = SimGateway(gw, seed, d, Child(gw, argv, env, d / "gateway.log"), pids, link)
        self.gateways.append(g)
        return g


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TBIB_GATEWAY_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def enrol(dsn: str, gateway_id: str, seed: int, patients: int = 1) -> list[uuid.UUID]:
    """``patients`` patients, the gateway (registered to the first) and their simulated devices (addresses from
    :mod:`devices.sim`, same seed as the gateway's simulation); the patient ids."""
    from devices.sim import SimWorld

    world = SimWorld.create(patients, "stable", seed=seed, kinds=KINDS, start=datetime.now(UTC))
    pids = [uuid.uuid4() for _ in world.patients]
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        for i, pid in enumerate(pids):
            conn.execute("insert into patients (id, display_name) values (%s, %s)", (pid, f"Chaos {gateway_id} {i}"))
            conn.execute(  # no decision on file is no consent: the chaos patients consent to monitoring
                "insert into consents (patient_id, purpose, granted, note) values (%s, 'remote_monitoring', true,"
                " 'chaos')",
                (pid,),
            )
        conn.execute("insert into gateways (id, patient_id) values (%s, %s)", (gateway_id, pids[0]))
        for pid, sim in zip(pids, world.patients, strict=True):
            for kind, dev in sim.devices.items():
                conn.execute(
                    "insert into devices (gateway_id, patient_id, address, model, serial, kind)"
                    " values (%s, %s, %s, %s, %s, %s)",
                    (gateway_id, pid, dev.address, dev.model, dev.serial, kind),
                )
    return pids


def captured(gateways: list[SimGateway]) -> list[str]:
    """Every reading id the gateways captured (their capture logs, in order; a partial last line is ignored)."""
    out: list[str] = []
    for g in gateways:
        try:
            text = g.capture_log.read_text()
        except FileNotFoundError:
            continue
        lines = text.split("\n")
        out.extend(line for line in lines[:-1] if len(line) == 36)
    return out


def stored(dsn: str, gateway_ids: list[str]) -> Counter[str]:
    """Reading id -> number of rows in ``readings`` for these gateways."""
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        rows = conn.execute(
            "select r.reading_id::text from readings r join devices d on d.id = r.device_id"
            " where d.gateway_id = any(%s)",
            (gateway_ids,),
        ).fetchall()
    return Counter(r[0] for r in rows)


def outbox_depth(path: Path) -> int:
    """Rows left in a gateway's outbox file (0 when there is no file)."""
    if not path.exists():
        return 0
    db = sqlite3.connect(path)
    try:
        return int(db.execute("select count(*) from readings").fetchone()[0])
    finally:
        db.close()


@dataclass(frozen=True, slots=True)
class Verdict:
    """Exactly once, counted from the capture logs."""

    expected: int
    lost: list[str]
    duplicated: int
    unexpected: int
    outbox_left: int

    def to_json(self) -> dict[str, Any]:
        return {
            "readings_expected": self.expected,
            "lost": len(self.lost),
            "duplicated": self.duplicated,
            "unexpected": self.unexpected,
            "outbox_left": self.outbox_left,
        }


def verify(fleet: Fleet) -> Verdict:
    """Compare every captured id with the database; count what is left in the outboxes."""
    ids = captured(fleet.gateways)
    rows = stored(fleet.dsn, [g.gateway_id for g in fleet.gateways])
    expected = set(ids)
    lost = sorted(i for i in expected if i not in rows)
    duplicated = sum(n - 1 for n in rows.values() if n > 1)
    unexpected = sum(1 for i in rows if i not in expected)
    left = sum(outbox_depth(g.outbox) for g in fleet.gateways)
    return Verdict(len(expected), lost, duplicated, unexpected, left)
