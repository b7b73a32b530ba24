"""One chaos run: set up the engines, run the fleet, inject the seeded faults, drain, and give the verdict.

Phases: (1) a private PostgreSQL (initdb) with the schema, a private Mosquitto, ``workers`` ``tbib ingest`` processes,
``alert_nodes`` ``tbib server`` nodes contending for the alert engine (started first: the first leader's feed
position precedes every reading), ``gateways`` real gateways over simulated devices; (2) wait until readings flow;
(3) the faults of :func:`teleconsult.chaos.schedule.plan`; (4) everything resumed and restarted, each gateway stopped
cleanly (it waits until its outbox is receipted), restarted briefly if anything is left; the engine leader is waited
for until its saved feed position covers every committed batch; (5) :func:`teleconsult.chaos.fleet.verify`, and with
alert nodes :func:`teleconsult.chaos.alertcheck.compare` of the episodes an offline one-pass evaluation of the
captured readings expects with the ``raised`` events stored.
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from teleconsult.chaos import alertcheck
from teleconsult.chaos.api import ApiNodes, DashboardCheck, add_doctor, check_dashboard
from teleconsult.chaos.catchup import long_outage
from teleconsult.chaos.fleet import Fleet, SimGateway, captured, stored, verify
from teleconsult.chaos.netem import LinkEmulator, LinkProfile
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
    patients: int = 1
    """Simulated patients per gateway (2 readings/s each)."""
    link: LinkProfile | None = None
    """Run each gateway behind its own emulated link with this profile (:mod:`teleconsult.chaos.netem`)."""
    link_backend: str = "auto"
    link_outages: bool = False
    """Add ``link_outage`` faults (a black hole on one gateway's link) to the schedule (needs ``link``)."""
    link_outage_s: float = 60.0
    long_outage: int = 0
    """After the faults, black-hole every link until this many readings are queued, then time the catch-up."""
    alert_nodes: int = 0
    """``tbib server`` nodes running the alert engine (one leads); 2 or more add ``alert_leader_kill9`` faults."""
    alert_scenario: str | None = "hypoxia"
    """With alert nodes: each gateway's patient deteriorates under this scenario (None: stable, hardly any alert)."""
    alert_onset_s: float = 20.0
    """Gateway ``i``'s deterioration starts ``alert_onset_s * (i + 1)`` s after each (re)start of the gateway."""
    alert_full_effect_s: float = 120.0


@dataclass
class _State:
    paused: dict[str, float] = field(default_factory=dict)
    """target -> monotonic time to resume it"""
    injected: Counter[str] = field(default_factory=Counter)
    link_down: dict[str, float] = field(default_factory=dict)
    """link target -> monotonic time to restore it"""
    broker_in_flight: list[int] = field(default_factory=list)
    leader_kills: list[dict[str, Any]] = field(default_factory=list)
    """Per alert-leader kill: the node killed, the node that took over and after how many seconds."""
    leader_kills_skipped: int = 0
    """Leader kills not injected: no node held the lock within 30 s."""


class Run:
    """The engines and fleet of one run, and the fault injector."""

    def __init__(self, config: ChaosConfig, base: Path, log: Callable[[str], None]) -> None:
        self.config = config
        self.base = base
        self.log = log
        self.pg = Postgres()
        self.broker = Broker(base / "broker")
        self.fleet: Fleet | None = None
        self.links: LinkEmulator | None = None
        self.api: ApiNodes | None = None
        self.state = _State()

    # -- set-up ----------------------------------------------------------------------------------------------------
    def setup(self) -> Fleet:
        from teleconsult.store.migrate import upgrade

        self.pg.start()
        if self.pg.timescaledb:
            with psycopg.connect(self.pg.dsn, autocommit=True) as conn:
                conn.execute("create extension if not exists timescaledb")
        upgrade(self.pg.dsn)
        c = self.config
        if c.link is not None:
            self.links = LinkEmulator(c.link, seed=c.seed, backend=c.link_backend)
            for _ in range(c.gateways):
                self.broker.hosts.append(self.links.add().host_ip)
        self.broker.start()
        fleet = Fleet(self.pg.dsn, self.broker.url, self.base)
        for i in range(c.workers):
            fleet.add_worker(i).start()
        if c.alert_nodes:
            self.api = ApiNodes(self.pg.dsn, self.broker.url, self.base)
            for _ in range(c.alert_nodes):
                self.api.add(engine=True)
            self.api.start_all()
            if not _wait(lambda: self._leader() is not None, 60):
                raise ChaosError("no alert engine leader: " + tail(self.api.nodes[0].log_path, 5))
        for i in range(c.gateways):
            scenario = None
            if c.alert_nodes and c.alert_scenario is not None:
                scenario = (c.alert_scenario, c.alert_onset_s * (i + 1), c.alert_full_effect_s)
            g = fleet.add_gateway(
                i, receipt_timeout_s=c.receipt_timeout_s, receipts=c.receipts, patients=c.patients,
                link=self.links.links[i] if self.links is not None else None, scenario=scenario,
            )  # fmt: skip
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
        if kind == "api" and self.api is not None:
            return self.api.nodes[int(index)]
        return None

    def _leader(self) -> int | None:
        """The engine node holding the leader lock (None: none, or PostgreSQL unreachable now)."""
        assert self.api is not None
        try:
            return self.api.leader()
        except psycopg.Error:
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
            for name, due in list(self.state.link_down.items()):
                if due <= now:
                    self._link(name, down=False)
                    del self.state.link_down[name]
            nxt = min([until, *self.state.paused.values(), *self.state.link_down.values()])
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

    def _link(self, name: str, *, down: bool) -> None:
        assert self.links is not None
        self.links.set_outage(self.links.links[int(name.partition(":")[2])], down)

    def inject(self, f: Fault) -> None:
        while f.target in self.state.paused or f.target in self.state.link_down:  # a paused target is resumed first
            self.service(time.monotonic() + 0.2)
        assert self.fleet is not None
        if self.links is not None:
            self.links.check()  # the delay line thread is alive
        if f.kind is Kind.LINK_OUTAGE:
            self._link(f.target, down=True)
            self.state.link_down[f.target] = time.monotonic() + f.duration
        elif f.kind is Kind.PAUSE:
            self._signal(f.target, resume=False)
            self.state.paused[f.target] = time.monotonic() + f.duration
        elif f.kind is Kind.POSTGRES_CRASH:
            self.pg.crash()
            self.service(time.monotonic() + f.duration)
            self.pg.start()
        elif f.kind is Kind.ALERT_LEADER_KILL9:
            if not self._kill_leader(f):
                self.state.leader_kills_skipped += 1
                return
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

    def _kill_leader(self, f: Fault) -> bool:
        """kill -9 of the node holding the engine's leader lock; wait until another node holds it (at most 30 s,
        recorded), restart the killed one after ``f.duration``. False when no node led within 30 s."""
        assert self.api is not None
        while "postgres" in self.state.paused:  # pg_locks is read on the server: wait until it runs again
            self.service(self.state.paused["postgres"] + 0.1)
        deadline = time.monotonic() + 30.0
        leader = self._leader()
        while leader is None and time.monotonic() < deadline:
            self.service(time.monotonic() + 0.2)
            leader = self._leader()
        if leader is None:
            self.log("alert_leader_kill9: no node holds the leader lock, skipped")
            return False
        node = self.api.nodes[leader]
        node.kill9()
        killed_at = time.monotonic()
        successor = None
        while time.monotonic() < killed_at + 30.0:
            self.service(time.monotonic() + 0.1)
            successor = self._leader()
            if successor is not None and successor != leader:
                break
        took = time.monotonic() - killed_at
        self.state.leader_kills.append(
            {"killed": leader, "new_leader": successor, "takeover_s": round(took, 2) if successor is not None else None}
        )
        self.log(f"  alert leader api-{leader} killed; api-{successor} leads after {took:.1f} s")
        self.service(killed_at + f.duration)
        node.start()
        return True

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
        self.finish_faults()
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
        if self.api is not None:  # the leader has fed (and stored the events of) every committed batch
            if not _wait(lambda: self._leader() is not None and _feed_behind(self.pg.dsn) == 0, 120):
                self.log("alert engine: the leader did not catch up with the feed within 120 s")
            time.sleep(1.0)
            self.api.stop()
        return restarts

    def finish_faults(self) -> None:
        """Resume what is paused, restore what is black-holed."""
        for name in list(self.state.paused):
            self._signal(name, resume=True)
        self.state.paused.clear()
        for name in list(self.state.link_down):
            self._link(name, down=False)
        self.state.link_down.clear()

    def _ids(self) -> list[str]:
        assert self.fleet is not None
        return [g.gateway_id for g in self.fleet.gateways]

    def teardown(self) -> None:
        if self.fleet is not None:
            for c in [*self.fleet.workers, *(g.child for g in self.fleet.gateways)]:
                c.kill9()
        if self.api is not None:
            self.api.kill()
        if self.links is not None:
            self.links.close()
        self.broker.stop()
        self.pg.destroy()


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def _feed_behind(dsn: str) -> int | None:
    """Committed reading batches the engine's saved feed position does not cover (None: no position, or no answer)."""
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            row = conn.execute(
                "select count(*) from reading_batches b, alert_feed_position p"
                " where b.xid >= pg_snapshot_xmin(p.snapshot) and not pg_visible_in_snapshot(b.xid, p.snapshot)"
            ).fetchone()
            has = conn.execute("select count(*) from alert_feed_position").fetchone()
    except psycopg.Error:
        return None
    if row is None or has is None or not has[0]:
        return None
    return int(row[0])


def check_alerts(
    fleet: Fleet, until: datetime, dump: Path | None = None
) -> tuple[alertcheck.AlertVerdict, dict[str, Any]]:
    """The expected episodes (offline, one pass over the captured readings) against the stored ``raised`` events;
    ``dump``: write there the expected episodes, every alert event and the readings of the rules' metrics (to
    explain a difference after the run: the run's database is removed)."""
    ids = sorted(set(captured(fleet.gateways)))
    readings = alertcheck.captured_readings(fleet.dsn, ids)
    expected = alertcheck.reference(readings, until)
    patients = [p for g in fleet.gateways for p in g.patients]
    stored_eps, by_rule = alertcheck.stored_episodes(fleet.dsn, patients)
    verdict = alertcheck.compare(expected, stored_eps)
    if dump is not None:
        _dump_alerts(fleet.dsn, patients, expected, dump)
    info = {
        "alerts_readings_evaluated": len(readings),
        "alerts_expected_by_rule": dict(sorted(Counter(e.rule for e in expected).items())),
        "alerts_raised_events_by_rule": dict(sorted(by_rule.items())),
    }
    return verdict, info


def _dump_alerts(dsn: str, patients: list[Any], expected: list[alertcheck.Episode], path: Path) -> None:
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        events = conn.execute(
            "select id, type, patient_id::text, payload, created_at::text from alert_events where patient_id = any(%s)"
            " order by id",
            (patients,),
        ).fetchall()
        readings = conn.execute(
            "select patient_id::text, metric, value, measured_at::text, ingested_at::text, reading_id::text"
            " from readings where patient_id = any(%s) and metric in ('spo2', 'heart_rate', 'pulse_rate')"
            " order by patient_id, measured_at",
            (patients,),
        ).fetchall()
    doc = {
        "expected": [e.to_json() for e in expected],
        "events": [{"id": i, "type": t, "patient_id": p, "alert": a, "created_at": c} for i, t, p, a, c in events],
        "readings": [list(r) for r in readings],
    }
    path.write_text(json.dumps(doc, default=str))


def _alerts_json(
    config: ChaosConfig, state: _State, alerts: alertcheck.AlertVerdict | None, info: dict[str, Any]
) -> dict[str, Any]:
    if alerts is None:
        return {
            "alerts_missed": None,
            "alerts_duplicated": None,
            "alerts": "not measured (no alert engine in this run: --alert-nodes N)",
        }
    return {
        **alerts.to_json(),
        **info,
        "alert_nodes": config.alert_nodes,
        "alert_scenario": config.alert_scenario,
        "alert_leader_kills": len(state.leader_kills),
        "alert_leader_kills_skipped": state.leader_kills_skipped,
        "alert_leader_takeovers": state.leader_kills,
    }


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


def check_api(fleet: Fleet, base: Path, log: Callable[[str], None]) -> DashboardCheck:
    """Start a ``tbib server`` on the quiet database and compare what the dashboard's API shows with ``readings``."""
    patients = [p for g in fleet.gateways for p in g.patients]
    nodes = ApiNodes(fleet.dsn, fleet.mqtt_url, base)
    nodes.add(engine=False)
    try:
        nodes.start_all()
        token = add_doctor(fleet.dsn, nodes.secret, patients)
        check = check_dashboard(nodes.url, token, fleet.dsn, patients)
    finally:
        nodes.stop()
    log(f"dashboard API: latest = max(measured_at) for {check.latest_ok}/{check.series} series, history in order "
        f"for {check.history_ok}/{check.series}")  # fmt: skip
    return check


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
        extra: tuple[Kind, ...] = (Kind.LINK_OUTAGE,) if config.link is not None and config.link_outages else ()
        if config.alert_nodes >= 2:
            extra += (Kind.ALERT_LEADER_KILL9,)
        faults = plan(
            config.faults, seed=config.seed, gateways=config.gateways, workers=config.workers,
            interval=config.interval_s, pause=config.pause_s, extra=extra, outage=config.link_outage_s,
        )  # fmt: skip
        t0 = time.monotonic()
        for i, f in enumerate(faults, 1):
            r.service(t0 + f.at)
            log(f"[{time.monotonic() - t0:6.1f} s] fault {i}/{len(faults)}: {f.kind.value} {f.target} "
                f"{f.duration:.1f} s")  # fmt: skip
            r.inject(f)
        fault_phase = time.monotonic() - t0
        catch_up = None
        if config.long_outage and r.links is not None:
            r.service(time.monotonic())
            r.finish_faults()
            catch_up = long_outage(fleet, r.links, config.long_outage, log)
        log("faults done: resuming everything, stopping the gateways (they flush their outboxes)")
        restarts = r.finish()
        verdict = verify(fleet)
        alerts: alertcheck.AlertVerdict | None = None
        alerts_info: dict[str, Any] = {}
        if r.api is not None:
            dump = base / "alerts.json" if config.keep_dir is not None else None
            alerts, alerts_info = check_alerts(fleet, datetime.now(UTC), dump)
            log(f"alerts: {alerts.expected} expected, {len(alerts.missed)} missed, {len(alerts.duplicated)} duplicated,"
                f" {len(alerts.unexpected)} unexpected; leader kills {len(r.state.leader_kills)}")  # fmt: skip
        dashboard = check_api(fleet, base, log) if r.links is not None else None
        stats = Counter[str]()
        for g in fleet.gateways:
            for k in ("batches_resent", "fallbacks", "readings_rejected"):
                stats[k] += int(_status(g).get("link", {}).get(k, 0))
        ok = not verdict.lost and verdict.duplicated == 0 and verdict.outbox_left == 0
        ok = ok and (dashboard is None or dashboard.ok) and (alerts is None or alerts.ok)
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
            "patients_per_gateway": config.patients,
            "link": None if r.links is None else r.links.counters(),
            "catch_up": catch_up,
            "dashboard": None if dashboard is None else dashboard.to_json(),
            **_alerts_json(config, r.state, alerts, alerts_info),
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
