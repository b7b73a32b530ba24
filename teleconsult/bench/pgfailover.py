"""``tbib bench pgfailover``: kill -9 the Patroni leader under a gateway load (issue 20 item 2, docs/scale-out.md).

The run, on a Patroni + etcd + HAProxy pair of its own (``scripts/pgcluster.sh`` in a state dir of the run's, or one
the caller brought up):
1. a single-node PostgreSQL of the run's (``teleconsult.chaos.processes.Postgres``, fsync on like the pair's nodes):
   probe throughput, the baseline of the same run;
2. on the pair: the schema through HAProxy, a private Mosquitto, a ``tbib ingest`` worker writing through HAProxy
   (or the multi-host DSN), real gateways over simulated devices whose capture logs are the expected set, the alert
   engine leader (advisory lock) on the HAProxy DSN; probe throughput *before*;
3. two write probes, one through HAProxy and one through the libpq multi-host DSN (``target_session_attrs=
   read-write``), each committing one row every ~50 ms on its own connection (reconnecting after an error);
4. kill -9 of the leader's Patroni *and* its postmaster (the node is lost: the replica is promoted after the leader
   key's TTL) or of its postmaster only (``--kill postgres``: Patroni restarts it, no failover);
5. failover time = the longest gap between two successful probe commits around the kill, per probe; the alert leader's
   time to lead again; probe throughput *after* (the new leader has no standby until the lost node rejoins);
6. gateways stopped cleanly (they wait for their receipts), then lost/duplicated counted from the capture logs against
   ``readings`` (:func:`teleconsult.chaos.fleet.verify`); the killed node restarted (``up``: it rejoins as a replica).

Probe throughput: committed rows/s of 100-row idempotent batches (``insert ... on conflict do nothing``) for a few
seconds; with the pair's synchronous mode every commit waits for the standby.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import psycopg

from teleconsult.chaos.fleet import Fleet, captured, stored, verify
from teleconsult.chaos.processes import REPO, Broker, ChaosError, Postgres, tail

SCRIPT: Final = REPO / "scripts" / "pgcluster.sh"
PROBE_DDL: Final = "create table if not exists pgfailover_probe (id uuid primary key, at timestamptz not null)"


def cluster_cmd(action: str, state: Path, timeout: float = 300.0) -> float:
    """``scripts/pgcluster.sh ACTION`` with its state under ``state``; the seconds it took."""
    t0 = time.monotonic()
    env = {**os.environ, "TBIB_CACHE_DIR": str(state)}
    done = subprocess.run([str(SCRIPT), action], capture_output=True, text=True, timeout=timeout, env=env)  # noqa: S603
    if done.returncode != 0:
        raise ChaosError(f"pgcluster.sh {action} failed: {done.stderr.strip()[-2000:]}")
    return time.monotonic() - t0


def cluster_info(state: Path) -> dict[str, Any]:
    """The pair's ``pgcluster.json`` (DSNs, ports, pid files)."""
    info: dict[str, Any] = json.loads((state / "services" / "pgcluster" / "pgcluster.json").read_text())
    return info


def leader(info: dict[str, Any]) -> dict[str, Any] | None:
    """The node whose Patroni REST API says it is the primary."""
    for node in info["nodes"]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{node['rest']}/primary", timeout=2) as r:
                if r.status == 200:
                    return dict(node)
        except OSError:
            continue
    return None


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def kill_leader(info: dict[str, Any], what: str) -> str:
    """kill -9 the leader's PostgreSQL: its postmaster and every backend (``postgres``; Patroni restarts it), or the
    whole node: Patroni too (``node``; the replica is promoted); the node's name."""
    node = leader(info)
    if node is None:
        raise ChaosError("no leader to kill")
    postmaster = _pid(Path(node["data_dir"]) / "postmaster.pid")
    patroni = _pid(Path(node["patroni_pid_file"]))
    targets = [] if postmaster is None else [postmaster, *_children(postmaster)]
    if what == "node" and patroni is not None:
        targets.insert(0, patroni)
    for pid in targets:  # a backend outlives its killed postmaster: kill them all, as a machine crash would
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return str(node["name"])


@dataclass
class Probe:
    """Commits one row every ``interval_s`` through ``dsn`` on its own thread; remembers when commits succeeded."""

    name: str
    dsn: str
    interval_s: float = 0.05
    ok_at: list[float] = field(default_factory=list)
    err_at: list[float] = field(default_factory=list)
    errors: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"probe-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=2)
                conn.execute("insert into pgfailover_probe values (%s, now())", (uuid.uuid4(),))
                self.ok_at.append(time.monotonic())
            except psycopg.Error:
                self.errors += 1
                self.err_at.append(time.monotonic())
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        conn.close()
                conn = None
                self._stop.wait(0.1)
                continue
            self._stop.wait(self.interval_s)
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def gap_around(self, t_kill: float) -> float | None:
        """The write outage: the longest time between two successful commits from the last one before ``t_kill`` on
        (None: no commit before, or none after)."""
        ok = list(self.ok_at)
        before = [t for t in ok if t <= t_kill]
        if not before or ok[-1] <= t_kill:
            return None
        times = [before[-1], *(t for t in ok if t > t_kill)]
        return max(b - a for a, b in itertools.pairwise(times))

    def recovered_after(self, t_kill: float, quiet_s: float = 5.0) -> bool:
        """Commits succeed again: one after the last error since ``t_kill`` (or no error at all for ``quiet_s``)."""
        errs = [t for t in self.err_at if t > t_kill]
        ok = list(self.ok_at)
        if not errs:
            return time.monotonic() - t_kill > quiet_s and bool(ok) and ok[-1] > t_kill
        return bool(ok) and ok[-1] > errs[-1] and time.monotonic() - errs[-1] > 1.0


def probe_throughput(dsn: str, seconds: float, batch: int = 100) -> float:
    """Committed rows/s of ``batch``-row idempotent insert transactions for ``seconds``."""
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        conn.execute(PROBE_DDL)
        conn.commit()
        n = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            with conn.cursor() as cur:
                cur.executemany(
                    "insert into pgfailover_probe values (%s, now()) on conflict do nothing",
                    [(uuid.uuid4(),) for _ in range(batch)],
                )
            conn.commit()
            n += batch
        return n / (time.monotonic() - t0)


@dataclass(frozen=True, slots=True)
class PgFailoverConfig:
    """Settings of one run."""

    gateways: int = 3
    patients: int = 1
    """Simulated patients per gateway (2 readings/s each)."""
    kill: str = "node"
    """``node``: kill -9 Patroni and the postmaster of the leader; ``postgres``: the postmaster only."""
    ingest_via: str = "haproxy"
    """DSN of the ``tbib ingest`` worker: ``haproxy`` or ``multihost``."""
    load_s: float = 8.0
    """Gateway load before the kill (and again after recovery)."""
    throughput_s: float = 4.0
    recover_timeout_s: float = 90.0
    alerts: bool = True
    """Run the alert engine leader on the HAProxy DSN and time its return."""
    state: Path | None = None
    """A pair already up in this state dir (the caller owns it); None: bring one up in a temporary dir and down."""
    keep_dir: Path | None = None


def _setup_schema(dsn: str) -> None:
    from teleconsult.store.migrate import upgrade

    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute("create extension if not exists timescaledb")
        conn.execute(PROBE_DDL)
    upgrade(dsn)


def _wait(pred: Callable[[], bool], timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def _single_node_throughput(seconds: float) -> float:
    pg = Postgres()
    try:
        with (pg.data / "postgresql.conf").open("a") as f:
            f.write("fsync = on\n")  # the chaos cluster's fsync=off would flatter the baseline
        pg.start()
        return probe_throughput(pg.dsn, seconds)
    finally:
        pg.destroy()


class _AlertLeader:
    """The alert engine service on its own thread (:class:`teleconsult.alerts.service.EngineThread`)."""

    def __init__(self, dsn: str) -> None:
        from teleconsult.alerts.service import EngineService, EngineThread

        self.service = EngineService(dsn, retry_s=1.0)
        self.thread = EngineThread(self.service)

    def leading(self) -> bool:
        return self.service.leader.is_set()


def run(config: PgFailoverConfig, log: Callable[[str], None]) -> dict[str, Any]:
    """One run; the JSON summary (see the module docstring)."""
    t_start = time.monotonic()
    own_state = config.state is None
    tmp = None
    if config.state is None:
        # the postgres user must reach the pair's data dirs: not under pytest's or root's private temp dirs
        state = Path(tempfile.mkdtemp(prefix="tbib-pgfailover-"))
        state.chmod(0o755)
    else:
        state = config.state
    if config.keep_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="tbib-pgfailover-run-")
        base = Path(tmp.name)
    else:
        base = config.keep_dir
        base.mkdir(parents=True, exist_ok=True)
    broker = Broker(base / "broker")
    fleet: Fleet | None = None
    probes: list[Probe] = []
    alerts: _AlertLeader | None = None
    out: dict[str, Any] = {"kill": config.kill, "ingest_via": config.ingest_via, "gateways": config.gateways}
    try:
        log("single-node PostgreSQL baseline")
        out["single_node_probe_rows_s"] = round(_single_node_throughput(config.throughput_s))
        if own_state:
            log("pgcluster up (etcd, 2 Patroni nodes, HAProxy)")
            out["cluster_up_s"] = round(cluster_cmd("up", state), 1)
        info = cluster_info(state)
        haproxy, multihost = str(info["haproxy_dsn"]), str(info["multihost_dsn"])
        _setup_schema(haproxy)
        out["cluster_probe_rows_s_before"] = round(probe_throughput(haproxy, config.throughput_s))
        broker.start()
        ingest_dsn = haproxy if config.ingest_via == "haproxy" else multihost
        fleet = Fleet(ingest_dsn, broker.url, base)
        fleet.add_worker(0).start()
        for i in range(config.gateways):
            fleet.add_gateway(i, patients=config.patients).child.start()
        gw_ids = [g.gateway_id for g in fleet.gateways]
        if not _wait(lambda: sum(stored(haproxy, gw_ids).values()) > 0, 90):
            raise ChaosError("no reading reached the database: " + tail(fleet.workers[0].log_path, 10))
        if config.alerts:
            alerts = _AlertLeader(haproxy)
            alerts.thread.start()
            if not _wait(alerts.leading, 30):
                raise ChaosError("the alert engine did not become leader")
        probes = [Probe("haproxy", haproxy), Probe("multihost", multihost)]
        for p in probes:
            p.start()
        log(f"gateway load for {config.load_s:.0f} s")
        time.sleep(config.load_s)
        n_before = sum(stored(haproxy, gw_ids).values())
        out["killed"] = kill_leader(info, config.kill)
        t_kill = time.monotonic()
        log(f"kill -9 ({config.kill}) of the leader {out['killed']}")
        if config.alerts and alerts is not None:
            _wait(lambda: not alerts.leading(), 30, 0.05)  # the engine noticed its database is gone
        recovered = _wait(lambda: all(p.recovered_after(t_kill) for p in probes), config.recover_timeout_s, 0.1)
        for p in probes:
            gap = p.gap_around(t_kill)
            out[f"failover_s_{p.name}"] = None if gap is None else round(gap, 2)
            out[f"probe_errors_{p.name}"] = p.errors
        out["recovered"] = recovered
        if alerts is not None:
            lead_again = _wait(alerts.leading, config.recover_timeout_s, 0.1)
            out["alert_leader_back_s"] = round(time.monotonic() - t_kill, 2) if lead_again else None
            out["alert_events_retried"] = alerts.service.retried_events
        new = leader(info)
        out["leader_after"] = None if new is None else new["name"]
        for p in probes:
            p.stop()
        out["cluster_probe_rows_s_after"] = round(probe_throughput(haproxy, config.throughput_s))
        log(f"gateway load for {config.load_s:.0f} s after the failover")
        time.sleep(config.load_s)
        log("stopping the gateways (they wait for their receipts)")
        for g in fleet.gateways:
            g.child.stop(120)
        _wait(lambda: set(captured(fleet.gateways)) <= set(stored(haproxy, gw_ids)), 60)
        fleet.workers[0].stop(60)
        verdict = verify(fleet)
        out.update(verdict.to_json())
        out["readings_stored_before_kill"] = n_before
        out["failover_s"] = max(
            (v for k, v in out.items() if k.startswith("failover_s_") and v is not None), default=None
        )
        single = out["single_node_probe_rows_s"]
        out["throughput_ratio_before"] = round(out["cluster_probe_rows_s_before"] / single, 2) if single else None
        out["throughput_ratio_after"] = round(out["cluster_probe_rows_s_after"] / single, 2) if single else None
        t_rejoin = time.monotonic()
        cluster_cmd("up", state)  # the killed node rejoins as a replica
        out["rejoin_s"] = round(time.monotonic() - t_rejoin, 1)
        out["lost_ids"] = verdict.lost[:20]
        out["ok"] = bool(recovered and not verdict.lost and verdict.duplicated == 0 and verdict.outbox_left == 0)
        return out
    finally:
        for p in probes:
            p.stop()
        if alerts is not None:
            alerts.thread.stop()
        if fleet is not None:
            for c in [*fleet.workers, *(g.child for g in fleet.gateways)]:
                c.kill9()
        broker.stop()
        if own_state:
            with contextlib.suppress(ChaosError, subprocess.TimeoutExpired):
                cluster_cmd("down", state, 120)
            subprocess.run(["rm", "-rf", str(state)], check=False)  # noqa: S603, S607 - files of user postgres
        out["wall_s"] = round(time.monotonic() - t_start, 1)
        if tmp is not None:
            tmp.cleanup()


def main(argv: list[str]) -> int:
    """``tbib bench pgfailover [--json] [--kill node|postgres] [--runs N] ...``; exit 1 if a run lost or duplicated."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="tbib bench pgfailover", description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="one JSON object on the last stdout line")
    ap.add_argument("--kill", choices=["node", "postgres"], default="node")
    ap.add_argument("--ingest-via", choices=["haproxy", "multihost"], default="haproxy")
    ap.add_argument("--gateways", type=int, default=3)
    ap.add_argument("--patients", type=int, default=1, help="simulated patients per gateway (2 readings/s each)")
    ap.add_argument("--load-s", type=float, default=8.0)
    ap.add_argument("--runs", type=int, default=1, help="runs, each on a fresh pair")
    ap.add_argument("--no-alerts", action="store_true", help="leave the alert engine leader out")
    args = ap.parse_args(argv)

    def say(line: str) -> None:
        print(f"pgfailover: {line}", file=sys.stderr, flush=True)

    runs = []
    for i in range(args.runs):
        say(f"run {i + 1}/{args.runs}")
        cfg = PgFailoverConfig(
            gateways=args.gateways, patients=args.patients, kill=args.kill, ingest_via=args.ingest_via,
            load_s=args.load_s, alerts=not args.no_alerts,
        )  # fmt: skip
        res = run(cfg, say)
        runs.append(res)
        say(json.dumps(res))
    summary: dict[str, Any] = {
        "benchmark": "pgfailover",
        "runs": runs,
        "lost": sum(int(r.get("lost", 0)) for r in runs),
        "duplicated": sum(int(r.get("duplicated", 0)) for r in runs),
        "failover_s": max((r["failover_s"] for r in runs if r.get("failover_s") is not None), default=None),
        "ok": all(r.get("ok") for r in runs),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        for r in runs:
            print(
                f"kill {r['kill']} of {r.get('killed')}: failover {r.get('failover_s_haproxy')} s (HAProxy), "
                f"{r.get('failover_s_multihost')} s (multi-host); alert leader back {r.get('alert_leader_back_s')} s; "
                f"lost {r.get('lost')}, duplicated {r.get('duplicated')} of {r.get('readings_expected')}; probe rows/s "
                f"single {r.get('single_node_probe_rows_s')}, pair before {r.get('cluster_probe_rows_s_before')}, "
                f"after {r.get('cluster_probe_rows_s_after')}"
            )
    return 0 if summary["ok"] else 1
