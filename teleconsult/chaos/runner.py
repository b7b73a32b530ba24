"""One chaos run: set up the engines, run the fleet, inject the seeded faults, drain, and give the verdict.

Phases: (1) a private PostgreSQL (initdb) with the schema, a private Mosquitto, ``workers`` ``tbib ingest`` processes,
``gateways`` real gateways over simulated devices; (2) wait until readings flow; (3) the faults of
:func:`teleconsult.chaos.schedule.plan`; (4) everything resumed and restarted, each gateway stopped cleanly (it waits
until its outbox is receipted), restarted briefly if anything is left; (5) :func:`teleconsult.chaos.fleet.verify`.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from teleconsult.chaos.fleet import Fleet, SimGateway, captured, stored, verify
from teleconsult.chaos.processes import Broker, ChaosError, Child, Postgres, tail
from teleconsult.chaos.schedule import Fault, Kind, plan


@dataclass(frozen=True, slots=True)
class ChaosConfig:
    """Settings of one run."""

    faults: int = 50
    seed: int = 1
    gateways: int = 4
    workers: int = 2
    interval_s: float = 6.0
    """Mean time between two faults."""
    pause_s: tuple[float, float] = (10.0, 40.0)
    receipt_timeout_s: float = 5.0
    receipts: bool = True
    """False: gateways in PUBACK mode (the control run: what a broker kill -9 costs without receipts)."""
    keep_dir: Path | None = None
    """Keep the run's files (logs, outboxes) here instead of a temporary directory."""


@dataclass
class _State:
    paused: dict[str, float] = field(default_factory=dict)
    """target -> monotonic time to resume it"""
    injected: Counter[str] = field(default_factory=Counter)
    broker_in_flight: list[int] = field(default_factory=list)


class Run:
    """The engines and fleet of one run, and the fault injector."""

    def __init__(self, config: ChaosConfig, base: Path, log: Callable[[str], None]) -> None:
        self.config = config
        self.base = base
        self.log = log
        self.pg = Postgres()
        self.broker = Broker(base / "broker")
        self.fleet: Fleet | None = None
        self.state = _State()

    # -- set-up ----------------------------------------------------------------------------------------------------
    def setup(self) -> Fleet:
        from teleconsult.store.migrate import upgrade

        self.pg.start()
        if self.pg.timescaledb:
            with psycopg.connect(self.pg.dsn, autocommit=True) as conn:
                conn.execute("create extension if not exists timescaledb")
        upgrade(self.pg.dsn)
        self.broker.start()
        fleet = Fleet(self.pg.dsn, self.broker.url, self.base)
        for i in range(self.config.workers):
            fleet.add_worker(i).start()
        for i in range(self.config.gateways):
            g = fleet.add_gateway(i, receipt_timeout_s=self.config.receipt_timeout_s, receipts=self.config.receipts)
            g.child.start()
        self.fleet = fleet
        return fleet

    def target(self, name: str) -> Child | None:
        assert self.fleet is not None
        kind, _, index = name.partition(":")
        if kind == "gateway":
            return self.fleet.gateways[int(index)].child
        if kind == "ingest":
            return self.fleet.workers[int(index)]
        if kind == "broker":
            return self.broker.child
        return None

    # -- faults ----------------------------------------------------------------------------------------------------
    def service(self, until: float) -> None:
        """Resume what is due until ``until`` (monotonic)."""
        while True:
            now = time.monotonic()
            for name, due in list(self.state.paused.items()):
                if due <= now:
                    self._signal(name, resume=True)
                    del self.state.paused[name]
            nxt = min([until, *self.state.paused.values()])
            if nxt <= now and until <= now:
                return
            time.sleep(max(0.0, min(nxt - now, 0.2)))

    def _signal(self, name: str, *, resume: bool) -> None:
        if name == "postgres":
            self.pg.signal_all(signal.SIGCONT if resume else signal.SIGSTOP)
            return
        child = self.target(name)
        if child is not None:
            child.resume() if resume else child.pause()

    def inject(self, f: Fault) -> None:
        while f.target in self.state.paused:  # a paused target is resumed first
            self.service(time.monotonic() + 0.2)
        assert self.fleet is not None
        if f.kind is Kind.PAUSE:
            self._signal(f.target, resume=False)
            self.state.paused[f.target] = time.monotonic() + f.duration
        elif f.kind is Kind.POSTGRES_CRASH:
            self.pg.crash()
            self.service(time.monotonic() + f.duration)
            self.pg.start()
        elif f.kind is Kind.BROKER_KILL9:
            held = [w for i, w in enumerate(self.fleet.workers) if f"ingest:{i}" not in self.state.paused]
            for w in held:
                w.pause()
            self.service(time.monotonic() + f.hold)
            self.state.broker_in_flight.append(self._in_flight())
            self.broker.kill9()
            for w in held:
                w.resume()
            self.service(time.monotonic() + f.duration)
            self.broker.start()
        else:
            child = self.target(f.target)
            assert child is not None
            child.kill9()
            self.service(time.monotonic() + f.duration)
            child.start()
        self.state.injected[f.kind.value] += 1

    def _in_flight(self) -> int:
        """Readings acknowledged by the broker and not committed: the outboxes' ``sent`` rows (receipt mode), or
        captured minus stored (PUBACK mode: the outbox forgot them at PUBACK)."""
        assert self.fleet is not None
        if self.config.receipts:
            return sum(_sent_rows(g) for g in self.fleet.gateways)
        waiting = sum(_depth(g) for g in self.fleet.gateways)
        missing = len(set(captured(self.fleet.gateways)) - set(stored(self.pg.dsn, self._ids())))
        return max(0, missing - waiting)

    # -- end -------------------------------------------------------------------------------------------------------
    def finish(self, timeout: float = 180.0) -> int:
        """Resume everything, stop each gateway cleanly (it flushes its outbox); returns the extra restarts needed."""
        fleet = self.fleet
        assert fleet is not None
        for name in list(self.state.paused):
            self._signal(name, resume=True)
        self.state.paused.clear()
        deadline = time.monotonic() + timeout
        _wait(lambda: all(_connected(g) for g in fleet.gateways if g.child.alive()), 60)
        restarts = 0
        for g in fleet.gateways:
            g.child.stop(120)
        for _ in range(3):
            left = [g for g in fleet.gateways if _depth(g)]
            if not left or time.monotonic() > deadline:
                break
            for g in left:  # what a real gateway does at its next start: send what is left
                restarts += 1
                g.child.start()
            _wait(lambda left=left: all(_connected(g) for g in left), 60)  # type: ignore[misc]
            time.sleep(2.0)
            for g in left:
                g.child.stop(120)
        _wait(lambda: set(captured(fleet.gateways)) <= set(stored(self.pg.dsn, self._ids())), 30)
        for w in fleet.workers:
            w.stop(60)
        return restarts

    def _ids(self) -> list[str]:
        assert self.fleet is not None
        return [g.gateway_id for g in self.fleet.gateways]

    def teardown(self) -> None:
        if self.fleet is not None:
            for c in [*self.fleet.workers, *(g.child for g in self.fleet.gateways)]:
                c.kill9()
        self.broker.stop()
        self.pg.destroy()


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def _status(g: SimGateway) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json.loads((g.dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}
    return doc


def _connected(g: SimGateway) -> bool:
    return bool(_status(g).get("link", {}).get("state") == "connected")


def _depth(g: SimGateway) -> int:
    from teleconsult.chaos.fleet import outbox_depth

    return outbox_depth(g.outbox)


def _sent_rows(g: SimGateway) -> int:
    """Rows acknowledged by the broker and not yet receipted (read from the gateway's outbox, WAL reader)."""
    if not g.outbox.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{g.outbox}?mode=ro", uri=True, timeout=2)
        try:
            return int(db.execute("select count(*) from readings where sent = 1").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def run(config: ChaosConfig, log: Callable[[str], None]) -> dict[str, Any]:
    """One whole run; the JSON summary."""
    t_start = time.monotonic()
    tmp = None
    if config.keep_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="tbib-chaos-")
        base = Path(tmp.name)
    else:
        base = config.keep_dir
        base.mkdir(parents=True, exist_ok=True)
    r = Run(config, base, log)
    try:
        log(f"seed {config.seed}: set-up (private PostgreSQL, Mosquitto, {config.workers} workers, "
            f"{config.gateways} gateways)")  # fmt: skip
        fleet = r.setup()
        if not _wait(lambda: sum(stored(fleet.dsn, r._ids()).values()) > 0, 90):
            raise ChaosError("no reading reached the database: " + tail(fleet.workers[0].log_path, 5))
        faults = plan(
            config.faults, seed=config.seed, gateways=config.gateways, workers=config.workers,
            interval=config.interval_s, pause=config.pause_s,
        )  # fmt: skip
        t0 = time.monotonic()
        for i, f in enumerate(faults, 1):
            r.service(t0 + f.at)
            log(f"[{time.monotonic() - t0:6.1f} s] fault {i}/{len(faults)}: {f.kind.value} {f.target} "
                f"{f.duration:.1f} s")  # fmt: skip
            r.inject(f)
        fault_phase = time.monotonic() - t0
        log("faults done: resuming everything, stopping the gateways (they flush their outboxes)")
        restarts = r.finish()
        verdict = verify(fleet)
        stats = Counter[str]()
        for g in fleet.gateways:
            for k in ("batches_resent", "fallbacks", "readings_rejected"):
                stats[k] += int(_status(g).get("link", {}).get(k, 0))
        ok = not verdict.lost and verdict.duplicated == 0 and verdict.outbox_left == 0
        summary: dict[str, Any] = {
            "ok": ok,
            "seed": config.seed,
            "receipts": config.receipts,
            **verdict.to_json(),
            "faults_injected": sum(r.state.injected.values()),
            "faults_by_kind": dict(sorted(r.state.injected.items())),
            "broker_kill9_with_readings_in_flight": sum(1 for n in r.state.broker_in_flight if n > 0),
            "broker_in_flight_readings": r.state.broker_in_flight,
            "gateways": config.gateways,
            "workers": config.workers,
            "batches_resent": stats["batches_resent"],
            "receipt_fallbacks": stats["fallbacks"],
            "readings_rejected": stats["readings_rejected"],
            "final_gateway_restarts": restarts,
            "alerts_missed": None,
            "alerts_duplicated": None,
            "alerts": "not measured (the alert engine is not part of this run)",
            "fault_phase_s": round(fault_phase, 1),
            "wall_s": round(time.monotonic() - t_start, 1),
        }
        if not ok:
            summary["missing_ids"] = verdict.lost[:100]
            log(f"FAILED with seed {config.seed}: {len(verdict.lost)} lost, first: {verdict.lost[:20]}")
        return summary
    finally:
        r.teardown()
        if tmp is not None:
            tmp.cleanup()
