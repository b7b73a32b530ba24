"""`tbib bench alerts`: latency from a reading's MQTT publish to the alert frame on doctors' websockets.

Path measured (every part a real process): probe publish (paho, QoS 1) -> private Mosquitto -> `tbib ingest` (COPY,
commit) -> trigger NOTIFY on ``latest_readings`` -> alert engine leader in `tbib server` -> alert store (commit +
NOTIFY) -> hub -> ``/ws/v1/alerts`` frame received by the benchmark's websocket clients.

Two phases in the same run: a *baseline* (no background load, one dashboard) and the *loaded* phase (simulated
gateways publishing ``--rate`` readings/s through the same broker and ingest, and ``--dashboards`` websockets of doctors
all on the probe patient's care team, so each probe alert fans out to every one of them). A probe is a systolic
pressure of 230 mmHg (raises ``systolic_bp`` at once), followed by 120 mmHg to clear it before the next probe.
Latency = frame arrival time - publish time, on every dashboard socket. The last stdout line is the JSON result.

Hops (``hops`` in the JSON, p50/p99/max ms, same host clock): publish -> start of ingest's transaction
(``readings.ingested_at``) -> its commit (the probe's ``tbib_readings`` notification at the benchmark's own listener)
-> engine (``alerts.raised_at``) -> start of the store transaction (``alert_events.created_at``) -> its commit (the
event's ``tbib_alert_events`` notification at the benchmark's listener) -> the server's hub taking the notification
(the hub's delivery trace, ``[ext.alerts] trace_file``) -> the first and the last socket write returning in the server
-> arrival on the clients. The background's alert transitions (events of its patients) are counted too: a realistic
load raises few (``background_alert_events_per_s``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

from teleconsult.alerts.service import LEADER_LOCK
from teleconsult.bench.ingest import REPO, Broker, enrol, free_port, project_dsn
from teleconsult.bench.loadgen import Job, cpu_seconds_by_role, publisher_process
from teleconsult.security import tokens
from teleconsult.security.models import Role
from teleconsult.store.migrate import upgrade

SECRET = "bench-secret-key-0123456789-abcdefghijklmnopqrstu"  # noqa: S105 - throwaway database of the benchmark
PROBE_GW = "bench-probe-gw"
PROBE_ADDR = "PR:0B:E0:00:00:01"


def log(msg: str) -> None:
    """Progress on stderr (stdout carries the result)."""
    print(f"bench alerts: {msg}", file=sys.stderr, flush=True)


def quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def setup_people(dsn: str, dashboards: int) -> tuple[uuid.UUID, list[str]]:
    """The probe patient (gateway + cuff) and ``dashboards`` doctors on its care team; returns their access tokens."""
    now = datetime.now(UTC)
    out: list[str] = []
    with psycopg.connect(dsn) as conn:
        row = conn.execute("insert into patients (display_name) values ('Probe') returning id").fetchone()
        assert row is not None
        patient = uuid.UUID(str(row[0]))
        conn.execute("insert into gateways (id, patient_id) values (%s, %s)", (PROBE_GW, patient))
        conn.execute(
            "insert into devices (gateway_id, patient_id, address, model, kind) values (%s, %s, %s, 'SIM-BP', 'bp')",
            (PROBE_GW, patient, PROBE_ADDR),
        )
        conn.execute(
            "insert into consents (patient_id, purpose, granted, note) values (%s, 'remote_monitoring', true, 'bench')",
            (patient,),
        )
        for i in range(dashboards):
            urow = conn.execute(
                "insert into users (username, role, password_hash) values (%s, 'doctor', 'x') returning id",
                (f"bench-dr-{i:04d}",),
            ).fetchone()
            assert urow is not None
            user = uuid.UUID(str(urow[0]))
            conn.execute(
                "insert into care_team (clinician_id, patient_id, valid_from) values (%s, %s, %s)",
                (user, patient, now - timedelta(days=1, seconds=-i)),
            )
            session = uuid.uuid4()
            conn.execute(
                "insert into auth_sessions (id, user_id, refresh_hash, created_at, last_used_at, expires_at)"
                " values (%s, %s, %s, %s, %s, %s)",
                (session, user, b"\0" * 32, now, now, now + timedelta(hours=2)),
            )
            out.append(
                tokens.issue_access_token(
                    secret=SECRET,
                    issuer="tbib",
                    user_id=user,
                    session_id=session,
                    role=Role.DOCTOR,
                    now=now,
                    ttl_s=7200,
                )
            )
    return patient, out


def probe_payload(value: float, at: datetime) -> bytes:
    """One payload v1 batch with one systolic reading of the probe cuff."""
    t = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    reading = {
        "id": str(uuid.uuid4()),
        "device": {"address": PROBE_ADDR, "model": "SIM-BP", "serial": "P1"},
        "metric": "systolic_bp",
        "value": value,
        "unit": "mm[Hg]",
        "measured_at": t,
        "device_time": None,
        "received_at": t,
        "group": None,
        "flags": None,
    }
    return json.dumps({"v": 1, "gateway_id": PROBE_GW, "sent_at": t, "readings": [reading]}).encode()


class Dashboards:
    """``n`` websocket clients of /ws/v1/alerts; records the arrival time of each probe's "raised" frame."""

    def __init__(self) -> None:
        self.arrivals: dict[str, list[float]] = {}
        self.cleared: dict[str, int] = {}
        self.raised_at: dict[str, float] = {}
        """probe key -> when the engine raised it (server clock, same host)."""
        self.stored_at: dict[str, float] = {}
        """probe key -> ``created_at`` of its alert event (start of the store transaction)."""
        self.event_ids: dict[str, int] = {}
        """probe key -> id of its "raised" event."""
        self.sockets: list[Any] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.changed = asyncio.Event()
        self.n_raised = self.n_cleared = 0
        self._raw: list[tuple[float, str]] = []

    async def wait_until(self, done: Any, seconds: float) -> None:
        """Wait until ``done()`` is true (re-checked on each received frame) or ``seconds`` passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not done() and (left := deadline - loop.time()) > 0:
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                return

    async def open(self, url: str, tokens_: list[str]) -> None:
        from websockets.asyncio.client import connect

        for token in tokens_:
            ws = await connect(f"{url}/ws/v1/alerts?token={token}", max_queue=None)
            hello = json.loads(await ws.recv())
            assert hello["type"] == "hello", hello
            self.sockets.append(ws)
            self.tasks.append(asyncio.create_task(self._read(ws)))

    async def _read(self, ws: Any) -> None:
        # Only a timestamp and two substring tests per frame here: the JSON is parsed later (settle), so that the
        # 200 sockets of this one client process do not queue behind each other's parsing.
        async for raw in ws:
            now = time.time()
            if '"rule":"systolic_bp"' not in raw:
                continue
            self._raw.append((now, raw))
            if '"event":"raised"' in raw:
                self.n_raised += 1
            elif '"event":"cleared"' in raw:
                self.n_cleared += 1
            self.changed.set()

    def settle(self) -> None:
        """Parse the frames received so far."""
        raw, self._raw = self._raw, []
        for now, text in raw:
            frame = json.loads(text)
            details = frame["alert"]["details"]
            if frame["event"] == "raised":
                key = str(details.get("measured_at"))
                self.arrivals.setdefault(key, []).append(now)
                self.raised_at[key] = datetime.fromisoformat(frame["alert"]["raised_at"]).timestamp()
                self.stored_at[key] = datetime.fromisoformat(frame["at"]).timestamp()
                self.event_ids[key] = int(frame["id"])
            elif frame["event"] == "cleared":
                key = str(details.get("cleared", {}).get("measured_at"))
                self.cleared[key] = self.cleared.get(key, 0) + 1

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        for ws in self.sockets:
            await ws.close()


@dataclass
class Probes:
    """Times of every probe of a phase (epoch seconds): publish, engine, store, and each socket's arrival."""

    published: dict[str, float] = field(default_factory=dict)
    raised: dict[str, float] = field(default_factory=dict)
    stored: dict[str, float] = field(default_factory=dict)
    arrivals: dict[str, list[float]] = field(default_factory=dict)
    ingested: dict[str, float] = field(default_factory=dict)
    """probe key -> ``readings.ingested_at`` (start of ingest's transaction), read after the phase."""
    committed: dict[str, float] = field(default_factory=dict)
    """probe key -> arrival of its ``tbib_readings`` notification at the benchmark's own listener (ingest commit)."""
    event_ids: dict[str, int] = field(default_factory=dict)
    store_committed: dict[str, float] = field(default_factory=dict)
    """probe key -> arrival of its "raised" ``tbib_alert_events`` notification at the benchmark's listener."""
    hub: dict[str, float] = field(default_factory=dict)
    """probe key -> the server's hub took the notification (delivery trace)."""
    first_send: dict[str, float] = field(default_factory=dict)
    last_send: dict[str, float] = field(default_factory=dict)
    """probe key -> the first / last socket write of the event returned in the server (delivery trace)."""


async def run_probes(mqtt: Any, dash: Dashboards, n: int, gap_s: float) -> Probes:
    """Publish ``n`` probes (each raised then cleared) and collect their times."""
    out = Probes()
    expect = len(dash.sockets)
    for _ in range(n):
        now = datetime.now(UTC)
        at = now.replace(microsecond=now.microsecond // 1000 * 1000)
        key = at.isoformat()
        target = dash.n_raised + expect
        t0 = time.time()
        mqtt.publish(f"tbib/v1/gw/{PROBE_GW}/readings", probe_payload(230.0, at), qos=1)
        await dash.wait_until(lambda n=target: dash.n_raised >= n, 10.0)
        dash.settle()
        out.published[key] = t0
        out.arrivals[key] = list(dash.arrivals.get(key, []))
        if key in dash.raised_at:
            out.raised[key], out.stored[key] = dash.raised_at[key], dash.stored_at[key]
            out.event_ids[key] = dash.event_ids[key]
        clear_at = at + timedelta(milliseconds=1)
        mqtt.publish(f"tbib/v1/gw/{PROBE_GW}/readings", probe_payload(120.0, clear_at), qos=1)
        target = dash.n_cleared + expect
        await dash.wait_until(lambda n=target: dash.n_cleared >= n, 10.0)
        dash.settle()
        await asyncio.sleep(gap_s)
    return out


def read_ingested(dsn: str, probes: Probes) -> None:
    """``ingested_at`` of each probe reading (the 230 mmHg ones) from the store."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "select r.measured_at, r.ingested_at from readings r join gateways g on g.patient_id = r.patient_id"
            " where g.id = %s and r.metric = 'systolic_bp' and r.value = 230",
            (PROBE_GW,),
        ).fetchall()
    for measured_at, ingested_at in rows:
        key = measured_at.astimezone(UTC).isoformat()
        if key in probes.published:
            probes.ingested[key] = ingested_at.timestamp()


def read_trace(path: Path, probes: Probes) -> None:
    """The server hub's delivery trace of each probe's "raised" event (:mod:`teleconsult.alerts.trace`)."""
    if not path.exists():
        return
    by_id = {v: k for k, v in probes.event_ids.items()}
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        key = by_id.get(int(entry["id"]))
        if key is None:
            continue
        probes.hub[key] = float(entry["hub_at"])
        if entry["first_send_at"] is not None:
            probes.first_send[key] = float(entry["first_send_at"])
            probes.last_send[key] = float(entry["last_send_at"])


async def listen_commits(dsn: str, patient: str, out: dict[str, float], alerts_out: dict[str, float]) -> None:
    """Timestamp each committed probe reading (230 mmHg) as its ``tbib_readings`` notification arrives, and each
    probe's "raised" event as its ``tbib_alert_events`` notification arrives (only substring tests per notification:
    this process also hosts the dashboards)."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("listen tbib_readings")
        await conn.execute("listen tbib_alert_events")
        async for n in conn.notifies():
            now = time.time()
            if patient not in n.payload:
                continue
            if n.channel == "tbib_alert_events":
                if '"event":"raised"' in n.payload and '"rule":"systolic_bp"' in n.payload:
                    at = json.loads(n.payload)["alert"]["details"].get("measured_at")
                    alerts_out[str(at)] = now
                continue
            for row in json.loads(n.payload):
                if row[0] == patient and row[1] == "systolic_bp" and float(row[2]) == 230.0:
                    out[datetime.fromisoformat(row[4]).astimezone(UTC).isoformat()] = now


def _pcts(values: list[float]) -> dict[str, float | None]:
    return {
        "p50_ms": None if not values else round(statistics.median(values), 1),
        "p99_ms": None if (q := quantile(values, 0.99)) is None else round(q, 1),
        "max_ms": None if not values else round(max(values), 1),
    }


def hops(probes: Probes) -> dict[str, dict[str, float | None]]:
    """Per-hop percentiles (ms), in path order (see the module docstring), then the fan-out figures: from the hub to
    the first and the last socket write, from each write to its client (first write to first arrival, last write to
    last arrival), and the spread between the first and the last socket of each probe."""
    keys = list(probes.published)
    ms = 1000.0

    def part(a: dict[str, float], b: dict[str, float]) -> list[float]:
        return [(b[k] - a[k]) * ms for k in keys if k in a and k in b]

    def arrivals(pick: Any) -> dict[str, float]:
        return {k: pick(v) for k in keys if (v := probes.arrivals.get(k))}

    to_socket = [(t - probes.stored[k]) * ms for k in keys if k in probes.stored for t in probes.arrivals[k]]
    spread = [(max(v) - min(v)) * ms for k in keys if (v := probes.arrivals[k])]
    return {
        "publish_to_ingest_tx": _pcts(part(probes.published, probes.ingested)),
        "ingest_tx_to_commit_notified": _pcts(part(probes.ingested, probes.committed)),
        "commit_notified_to_engine": _pcts(part(probes.committed, probes.raised)),
        "engine_to_store_tx": _pcts(part(probes.raised, probes.stored)),
        "store_tx_to_store_notified": _pcts(part(probes.stored, probes.store_committed)),
        "store_notified_to_hub": _pcts(part(probes.store_committed, probes.hub)),
        "hub_to_first_send": _pcts(part(probes.hub, probes.first_send)),
        "hub_to_last_send": _pcts(part(probes.hub, probes.last_send)),
        "first_send_to_client": _pcts(part(probes.first_send, arrivals(min))),
        "last_send_to_client": _pcts(part(probes.last_send, arrivals(max))),
        "store_tx_to_socket": _pcts(to_socket),
        "fanout_first_to_last_socket": _pcts(spread),
    }


def summary(probes: Probes, sockets: int) -> dict[str, Any]:
    """p50/p99/max, the publish-to-engine and engine-to-socket parts, per-hop figures, and delivery completeness."""
    keys = list(probes.published)
    latencies = [(t - probes.published[k]) * 1000 for k in keys for t in probes.arrivals[k]]
    to_engine = [(probes.raised[k] - probes.published[k]) * 1000 for k in keys if k in probes.raised]
    from_engine = [(t - probes.raised[k]) * 1000 for k in keys if k in probes.raised for t in probes.arrivals[k]]
    return {
        "from_engine_p50_ms": None if not from_engine else round(statistics.median(from_engine), 1),
        "from_engine_p99_ms": None if (f := quantile(from_engine, 0.99)) is None else round(f, 1),
        "to_engine_p50_ms": None if not to_engine else round(statistics.median(to_engine), 1),
        "to_engine_p99_ms": None if (e := quantile(to_engine, 0.99)) is None else round(e, 1),
        "p50_ms": None if not latencies else round(statistics.median(latencies), 1),
        "p99_ms": None if (q := quantile(latencies, 0.99)) is None else round(q, 1),
        "max_ms": None if not latencies else round(max(latencies), 1),
        "frames": len(latencies),
        "expected_frames": len(keys) * sockets,
        "hops": hops(probes),
    }


def start_background(mqtt_url: str, gateways: list[tuple[int, str, str, uuid.UUID]], rate: float, seconds: float,
                     publishers: int) -> list[Any]:  # fmt: skip
    """Loadgen processes publishing ``rate`` readings/s (10 per message) for ``seconds``."""
    url = urlsplit(mqtt_url)
    ctx = mp.get_context("spawn")
    go, results = ctx.Event(), ctx.Queue()
    procs = []
    start_epoch = (datetime.now(UTC) - timedelta(days=1)).timestamp()
    for k in range(publishers):
        mine = [(i, gw, addr) for i, gw, addr, _ in gateways[k::publishers]]
        job = Job(url.hostname or "127.0.0.1", url.port or 1883, mine, 7, 10, seconds, rate / 10 / publishers,
                  start_epoch)  # fmt: skip
        p = ctx.Process(target=publisher_process, args=(job, go, results), daemon=True)
        p.start()
        procs.append(p)
    time.sleep(3.0)  # spawned children import and connect; keep ``go``/``results`` alive while they use them
    go.set()
    return [procs, results, go]


def cpu_hog(seconds: float) -> None:
    """Burn one core for ``seconds`` (``--cpu-hogs``: another tenant of the box)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def cpu_seconds(dsn: str, pids: dict[str, int]) -> dict[str, float]:
    """Cumulative CPU seconds of the run's processes and of its database's backends."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "select pid from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()"
        ).fetchall()
    return cpu_seconds_by_role({**{r: [p] for r, p in pids.items()}, "postgres": [int(r[0]) for r in rows]})


def count_readings(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("select count(*) from readings").fetchone()
    return int(row[0]) if row else 0


def background_alert_events(dsn: str, probe_patient: uuid.UUID) -> dict[str, int]:
    """Alert events of the background patients (everyone but the probe patient), by rule."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "select payload->>'rule', count(*) from alert_events where patient_id <> %s group by 1",
            (probe_patient,),
        ).fetchall()
    return {str(rule): int(n) for rule, n in rows}


def wait_leader(dsn: str, seconds: float = 30) -> None:
    """Wait until an engine leader holds its lock in this run's database (not another run's or a test's)."""
    deadline = time.time() + seconds
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.time() < deadline:
            row = conn.execute(
                "select 1 from pg_locks where locktype = 'advisory' and granted and classid = %s and objid = %s"
                " and database = (select oid from pg_database where datname = current_database())",
                (LEADER_LOCK >> 32, LEADER_LOCK & 0xFFFFFFFF),
            ).fetchone()
            if row is not None:
                return
            time.sleep(0.1)
    raise RuntimeError("the alert engine did not start")


def wait_port(port: int, proc: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("tbib server exited") from None
            time.sleep(0.1)
    raise RuntimeError(f"tbib server did not listen within {seconds:.0f} s")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; the last stdout line is the JSON result."""
    ap = argparse.ArgumentParser(prog="tbib bench alerts", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=10_000, help="background readings per second (default 10000)")
    ap.add_argument("--dashboards", type=int, default=200, help="connected doctor websockets (default 200)")
    ap.add_argument("--probes", type=int, default=40, help="probe alerts per phase (default 40)")
    ap.add_argument("--gap", type=float, default=0.2, help="seconds between probes (default 0.2)")
    ap.add_argument("--gateways", type=int, default=50, help="simulated background gateways (default 50)")
    ap.add_argument("--publishers", type=int, default=2, help="background publisher processes (default 2)")
    ap.add_argument("--split", action="store_true", help="run the engine leader on a second server process")
    ap.add_argument("--ingest-batch", type=int, default=2000, help="ingest max readings per transaction (2000)")
    ap.add_argument("--dsn", help="server DSN to create the benchmark database in (default: project services)")
    ap.add_argument("--keep-db", action="store_true", help="do not drop the benchmark database")
    ap.add_argument(
        "--cpu-hogs",
        type=int,
        default=0,
        help="busy-loop processes competing for the CPU during the loaded phase (a busy box; default 0)",
    )
    ap.add_argument("--json", action="store_true", help="print only the JSON result on stdout")
    args = ap.parse_args(argv)
    server_dsn = args.dsn or project_dsn()
    name = f"tbib_bench_alerts_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    dsn = urlsplit(server_dsn)._replace(path="/" + name).geturl()
    broker = Broker()
    procs: list[subprocess.Popen[bytes]] = []
    trace_dir = tempfile.mkdtemp(prefix="tbib-bench-alerts-")
    traces: list[Path] = []
    try:
        upgrade(dsn, timescaledb=True)
        gateways = enrol(dsn, args.gateways)
        probe_patient, doctor_tokens = setup_people(dsn, args.dashboards)
        share = f"bench-{uuid.uuid4().hex[:6]}"
        procs.append(
            subprocess.Popen(  # noqa: S603 - our own CLI
                [sys.executable, "-m", "teleconsult.cli.main", "ingest", "--dsn", dsn, "--mqtt-url", broker.url,
                 "--client-id", f"{share}-w0", "--topic", f"$share/{share}/tbib/v1/gw/+/readings",
                 "--linger-ms", "10", "--batch", str(args.ingest_batch)],
                cwd=REPO,
            )
        )  # fmt: skip

        def server(engine: bool) -> tuple[subprocess.Popen[bytes], int]:
            port = free_port()
            trace = Path(trace_dir) / f"trace-{port}.jsonl"
            traces.append(trace)
            ext = {"alerts": {"heartbeat_s": 5.0, "queue_size": 10_000, "engine": engine, "trace_file": str(trace)}}
            env = {
                **os.environ,
                "TBIB_ENV": "test",
                "TBIB_DATABASE_URL": dsn,
                "TBIB_SECRET_KEY": SECRET,
                "TBIB_MQTT_URL": broker.url,
                "TBIB_DB_POOL_MAX_SIZE": "20",
                "TBIB_EXT": json.dumps(ext),
            }
            proc = subprocess.Popen(  # noqa: S603 - our own CLI
                [sys.executable, "-m", "teleconsult.cli.main", "server", "--port", str(port)],
                cwd=REPO,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            procs.append(proc)
            wait_port(port, proc)
            return proc, port

        pids = {"ingest": procs[0].pid, "broker": broker.proc.pid, "bench": os.getpid()}
        if args.split:  # the engine leader on its own node; the dashboards on an API node without engine
            pids["engine_node"] = server(True)[0].pid
            wait_leader(dsn)
            api, port = server(False)
        else:
            api, port = server(True)
            wait_leader(dsn)
        pids["server"] = api.pid
        ws_url = f"ws://127.0.0.1:{port}"
        result = asyncio.run(
            _measure(args, dsn, broker.url, ws_url, gateways, doctor_tokens, pids, probe_patient, traces[-1])
        )
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        broker.close()
        shutil.rmtree(trace_dir, ignore_errors=True)
        if not args.keep_db:
            with psycopg.connect(server_dsn, autocommit=True) as conn:
                conn.execute(f'drop database if exists "{name}" with (force)')
    if not args.json:
        log(json.dumps(result, indent=2))
    print(json.dumps(result, separators=(",", ":")))
    return 0


async def _measure(
    args: argparse.Namespace,
    dsn: str,
    mqtt_url: str,
    ws_url: str,
    gateways: list[tuple[int, str, str, uuid.UUID]],
    doctor_tokens: list[str],
    pids: dict[str, int],
    probe_patient: uuid.UUID,
    trace: Path,
) -> dict[str, Any]:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    url = urlsplit(mqtt_url)
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="bench-alerts-probe",
                         protocol=MQTTProtocolVersion.MQTTv5)  # fmt: skip
    client.connect(url.hostname or "127.0.0.1", url.port or 1883)
    client.loop_start()
    try:
        committed: dict[str, float] = {}
        store_committed: dict[str, float] = {}
        listener = asyncio.create_task(listen_commits(dsn, str(probe_patient), committed, store_committed))
        await asyncio.sleep(2.0)  # ingest subscribed, hub listening
        base = Dashboards()
        await base.open(ws_url, doctor_tokens[:1])
        await run_probes(client, base, 3, args.gap)  # warm-up
        base.arrivals.clear()
        base_probes = await run_probes(client, base, args.probes, args.gap)
        read_ingested(dsn, base_probes)
        base_probes.committed, base_probes.store_committed = committed, store_committed
        await asyncio.sleep(3.5)  # the server's delivery trace writes entries 2 s old, every second
        read_trace(trace, base_probes)
        baseline = summary(base_probes, 1)
        await base.close()
        log(f"baseline: {baseline}")

        dash = Dashboards()
        await dash.open(ws_url, doctor_tokens)
        duration = args.probes * (args.gap + 0.3) + 15
        before = count_readings(dsn)
        events0 = background_alert_events(dsn, probe_patient)
        cpu0 = cpu_seconds(dsn, pids)
        procs, results, _go = start_background(mqtt_url, gateways, args.rate, duration, args.publishers)
        hogs = [mp.get_context("spawn").Process(target=cpu_hog, args=(duration,), daemon=True)
                for _ in range(args.cpu_hogs)]  # fmt: skip
        for h in hogs:
            h.start()
        began = time.time()
        await asyncio.sleep(4.0)  # steady state
        loaded_probes = await run_probes(client, dash, args.probes, args.gap)
        reports = [await asyncio.to_thread(results.get, True, duration + 60) for _ in procs]
        published = sum(sum(r["sent"].values()) for r in reports) * 10
        publish_s = max(r["last_publish"] for r in reports) - min(r["began"] for r in reports)
        for p in procs:
            p.join(10)
        for h in hogs:
            h.terminate()
        elapsed = time.time() - began
        cpu1 = cpu_seconds(dsn, pids)
        events1 = background_alert_events(dsn, probe_patient)
        await asyncio.sleep(3.5)  # ingest's last batches; the delivery trace (see above)
        stored = count_readings(dsn) - before
        read_ingested(dsn, loaded_probes)
        read_trace(trace, loaded_probes)
        loaded_probes.committed, loaded_probes.store_committed = committed, store_committed
        listener.cancel()
        loaded = summary(loaded_probes, len(dash.sockets))
        await dash.close()
        log(f"loaded: {loaded}; background stored {stored} readings in {elapsed:.1f} s")
    finally:
        client.loop_stop()
        client.disconnect()
    return {
        "p50_ms": loaded["p50_ms"],
        "p99_ms": loaded["p99_ms"],
        "max_ms": loaded["max_ms"],
        "background_readings_per_s": round(stored / elapsed),
        "background_committed_per_s": round(stored / elapsed),
        "background_alert_events_per_s": round((sum(events1.values()) - sum(events0.values())) / elapsed, 2),
        "background_alert_events_by_rule": {
            r: n - events0.get(r, 0) for r, n in events1.items() if n > events0.get(r, 0)
        },
        "background_target_per_s": args.rate,
        "background_published_per_s": round(published / publish_s),
        "dashboards": len(doctor_tokens),
        "probes": args.probes,
        "frames": loaded["frames"],
        "expected_frames": loaded["expected_frames"],
        "to_engine_p50_ms": loaded["to_engine_p50_ms"],
        "to_engine_p99_ms": loaded["to_engine_p99_ms"],
        "from_engine_p50_ms": loaded["from_engine_p50_ms"],
        "from_engine_p99_ms": loaded["from_engine_p99_ms"],
        "hops": loaded["hops"],
        "baseline": baseline,
        "p99_ratio_loaded_vs_baseline": (
            None if not (baseline["p99_ms"] and loaded["p99_ms"]) else round(loaded["p99_ms"] / baseline["p99_ms"], 2)
        ),
        "goal_p99_ms": 100,
        "split_engine_node": args.split,
        "cpu_hogs": args.cpu_hogs,
        "cpus": os.cpu_count(),
        "cpu_cores_busy_loaded": {k: round((cpu1[k] - cpu0.get(k, 0.0)) / elapsed, 2) for k in cpu1},
        "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
    }


if __name__ == "__main__":
    sys.exit(main())
