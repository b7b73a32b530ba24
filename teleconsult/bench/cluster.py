"""`tbib bench cluster`: two `tbib server` nodes behind HAProxy under gateway load; kill -9 an API node, then the
alert leader's node (docs/scale-out.md, "API nodes").

Every part is a real process: a private Mosquitto, a real `tbib ingest`, load-generator processes publishing as
gateways (QoS 1, deterministic reading ids), alert probes (:mod:`teleconsult.bench.cluster_load`), ``--dashboards``
clients of ``/ws/v1/patients`` that reconnect and replay like live.js (:mod:`teleconsult.bench.dash_clients`), and a
private HAProxy (:mod:`teleconsult.bench.api_nodes`). One run, in order:

1. ``single``: one node behind the balancer: committed readings/s, alert latency (probe PUBACK -> frame on every
   dashboard), vitals frames/s, ``GET /api/v1/patients`` requests/s;
2. ``cluster``: the second node started, the dashboards spread over both; the same figures;
3. ``api_node``: kill -9 of the node that is *not* the alert leader, with readings, probes and HTTP in flight;
4. ``alert_leader``: the killed node restarted, dashboards spread again, kill -9 of the leader's node: the leader
   lock's handover time (``pg_locks``) and the probes' raise delay.
For each kill: websocket reconnect (close seen -> ``hello``) and reconnect + replay (-> every event the new node had)
times of the dashboards that lost their socket. At the end: every alert event in the store delivered exactly once to
every dashboard (``missing``, ``duplicated``), every probe raised, every acknowledged reading stored once
(``lost``, ``duplicated``). The last stdout line is the JSON result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

from teleconsult.bench.api_nodes import ApiNode, Haproxy, leader_node, server_env
from teleconsult.bench.cluster_load import SECRET, Probes, http_rate, publisher_until, setup_people, setup_probes
from teleconsult.bench.cluster_report import alert_check, latency, probe_events, reconnect_stats, stored_count
from teleconsult.bench.dash_clients import Fleet
from teleconsult.bench.ingest_baselines import verify
from teleconsult.bench.ingest_rig import REPO, Broker, enrol, project_dsn
from teleconsult.bench.loadgen import Job
from teleconsult.store.migrate import upgrade

TAG = 0xC1


def log(msg: str) -> None:
    """Progress on stderr (stdout carries the result)."""
    print(f"bench cluster: {msg}", file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="tbib bench cluster", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dashboards", type=int, default=50, help="dashboard websockets (default 50)")
    ap.add_argument("--rate", type=float, default=1000, help="gateway readings per second (default 1000)")
    ap.add_argument("--gateways", type=int, default=20, help="simulated gateways (default 20)")
    ap.add_argument("--publishers", type=int, default=1, help="load-generator processes (default 1)")
    ap.add_argument("--probe-patients", type=int, default=4, help="probe patients (default 4)")
    ap.add_argument("--probe-gap", type=float, default=1.0, help="seconds between probes (default 1)")
    ap.add_argument("--probe-hold", type=float, default=3.0, help="seconds a probe stays high (default 3)")
    ap.add_argument("--phase", type=float, default=10.0, help="seconds of each measured phase (default 10)")
    ap.add_argument("--after-kill", type=float, default=10.0, help="seconds of load after each kill (default 10)")
    ap.add_argument("--http-concurrency", type=int, default=8, help="HTTP clients of the rate phases (default 8)")
    ap.add_argument("--dsn", help="server DSN to create the benchmark database in (default: project services)")
    ap.add_argument("--keep-db", action="store_true", help="do not drop the benchmark database")
    ap.add_argument("--json", action="store_true", help="print only the JSON result on stdout")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; the last stdout line is the JSON result."""
    args = parse_args(argv)
    result = run(args)
    if not args.json:
        log(json.dumps(result, indent=2))
    print(json.dumps(result, separators=(",", ":")))
    return 0 if result["ok"] else 1


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole run (see the module docstring); every process it starts is stopped, also on failure."""
    server_dsn = args.dsn or project_dsn()
    name = f"tbib_bench_cluster_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    dsn = urlsplit(server_dsn)._replace(path="/" + name).geturl()
    logs = Path(tempfile.mkdtemp(prefix="tbib-bench-cluster-"))
    broker = Broker()
    nodes: list[ApiNode] = []
    lb: Haproxy | None = None
    ingest = None
    try:
        upgrade(dsn, timescaledb=True)
        gateways = enrol(dsn, args.gateways)
        probe_patients = setup_probes(dsn, args.probe_patients)
        doctor_tokens = setup_people(dsn, args.dashboards + 1, [g[3] for g in gateways] + probe_patients)
        share = f"bcl-{uuid.uuid4().hex[:6]}"
        with (logs / "ingest.log").open("wb") as out:
            ingest = subprocess.Popen(  # noqa: S603 - our own CLI
                [sys.executable, "-m", "teleconsult.cli.main", "ingest", "--dsn", dsn, "--mqtt-url", broker.url,
                 "--client-id", f"{share}-w0", "--topic", f"$share/{share}/tbib/v1/gw/+/readings", "--linger-ms", "10"],
                cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        env = server_env(SECRET, broker.url, {"alerts": {"heartbeat_s": 5.0}})
        nodes = [ApiNode(f"tbib-api-{i + 1}", dsn, env, logs) for i in range(2)]
        lb = Haproxy([(n.name, n.port) for n in nodes])
        nodes[0].start()
        return asyncio.run(_drive(args, dsn, broker.url, nodes, lb, gateways, probe_patients, doctor_tokens))
    finally:
        for n in nodes:
            n.stop()
        if lb is not None:
            lb.close()
        if ingest is not None:
            ingest.terminate()
            try:
                ingest.wait(15)
            except subprocess.TimeoutExpired:
                ingest.kill()
        broker.close()
        shutil.rmtree(logs, ignore_errors=True)  # the nodes' logs (their tails are in any start error)
        if not args.keep_db:
            with psycopg.connect(server_dsn, autocommit=True) as conn:
                conn.execute(f'drop database if exists "{name}" with (force)')


async def _wait_leader(dsn: str, not_on: str | None, within_s: float) -> tuple[str | None, float]:
    """The leader's node once it is not ``not_on``, and the seconds it took (polled every 50 ms)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < within_s:
        holder = await asyncio.to_thread(leader_node, dsn)
        if holder is not None and holder != not_on:
            return holder, time.monotonic() - t0
        await asyncio.sleep(0.05)
    return None, within_s


async def _drive(
    args: argparse.Namespace,
    dsn: str,
    mqtt_url: str,
    nodes: list[ApiNode],
    lb: Haproxy,
    gateways: list[tuple[int, str, str, uuid.UUID]],
    probe_patients: list[uuid.UUID],
    doctor_tokens: list[str],
) -> dict[str, Any]:
    leader, _ = await _wait_leader(dsn, None, 60.0)
    with psycopg.connect(dsn) as conn:
        row = conn.execute("select coalesce(max(id), 0) from alert_events").fetchone()
    start_id = int(row[0]) if row else 0
    fleet = Fleet(lb.ws_url, doctor_tokens[: args.dashboards], start_id)
    http_token = doctor_tokens[-1]
    url = urlsplit(mqtt_url)
    ctx = mp.get_context("spawn")
    go, stop, results = ctx.Event(), ctx.Event(), ctx.Queue()
    start_epoch = (datetime.now(UTC) - timedelta(days=1)).timestamp()
    procs = []
    for k in range(args.publishers):
        mine = [(i, gw, addr) for i, gw, addr, _ in gateways[k :: args.publishers]]
        job = Job(url.hostname or "127.0.0.1", url.port or 1883, mine, TAG, 10, 0.0, args.rate / 10 / args.publishers,
                  start_epoch)  # fmt: skip
        p = ctx.Process(target=publisher_until, args=(job, go, stop, results), daemon=True)
        p.start()
        procs.append(p)
    probes = Probes(mqtt_url, len(probe_patients), args.probe_gap, args.probe_hold)
    phases: dict[str, Any] = {}
    windows: dict[str, tuple[float, float]] = {}
    probe_task: asyncio.Task[None] | None = None
    try:
        await fleet.start()
        await asyncio.sleep(2.0)  # spawned publishers import and connect
        go.set()
        probe_task = asyncio.create_task(probes.run())
        await asyncio.sleep(3.0)  # steady state

        async def measure(phase: str) -> None:
            t0, n0 = time.time(), await asyncio.to_thread(stored_count, dsn)
            v0 = sum(c.vitals_frames for c in fleet.clients)
            http = await http_rate(lb.http_url, http_token, min(5.0, args.phase), args.http_concurrency)
            await asyncio.sleep(max(0.0, args.phase - (time.time() - t0)))
            t1, n1 = time.time(), await asyncio.to_thread(stored_count, dsn)
            windows[phase] = (t0, t1)
            phases[phase] = {
                "nodes_up": sum(n.pid is not None for n in nodes),
                "committed_readings_per_s": round((n1 - n0) / (t1 - t0)),
                "vitals_frames_per_s": round((sum(c.vitals_frames for c in fleet.clients) - v0) / (t1 - t0), 1),
                "http": http,
            }
            log(f"{phase}: {phases[phase]}")

        await measure("single")
        phases["second_node_start_s"] = round(nodes[1].start(), 2)
        await asyncio.sleep(0.5)  # a health check or two
        await fleet.respread()
        await measure("cluster")

        async def kill(phase: str, victim: ApiNode) -> None:
            for c in fleet.clients:
                c.reconnects.clear()
            http_task = asyncio.create_task(http_rate(lb.http_url, http_token, args.after_kill, 2))
            t_kill_wall, t_kill = time.time(), time.monotonic()
            victim.kill9()
            out: dict[str, Any] = {"killed": victim.name}
            if phase == "alert_leader":
                holder, took = await _wait_leader(dsn, victim.name, 60.0)
                out["new_leader"], out["leader_handover_s"] = holder, round(took, 3)
            reconnected = await fleet.wait_connected(60.0)
            await asyncio.sleep(max(0.0, args.after_kill - (time.monotonic() - t_kill)))
            out["http_during_kill"] = await http_task
            out["all_reconnected"] = reconnected
            out.update(reconnect_stats(fleet.clients, t_kill))
            windows[phase] = (t_kill_wall, time.time())
            phases[phase] = out
            log(f"{phase}: {out}")
            out["restart_s"] = round(victim.start(), 2)

        non_leader = next(n for n in nodes if n.name != leader)
        await kill("api_node", non_leader)
        await asyncio.sleep(0.5)
        await fleet.respread()
        leader, _ = await _wait_leader(dsn, None, 30.0)
        await kill("alert_leader", next(n for n in nodes if n.name == leader))
    finally:
        probes.stop()
        if probe_task is not None:
            await probe_task
        probes.close()
        stop.set()
        sent: dict[int, int] = {}
        for _ in procs:
            with_sent = await asyncio.to_thread(results.get, True, 60)
            sent.update(with_sent["sent"])
        for p in procs:
            p.join(10)
        await asyncio.sleep(args.probe_hold + 2.0)  # the last clears reach the dashboards
        await fleet.stop()
    # ingest's last batches
    last, stable_since = -1, time.monotonic()
    while time.monotonic() - stable_since < 3.0:
        n = await asyncio.to_thread(stored_count, dsn)
        if n != last:
            last, stable_since = n, time.monotonic()
        await asyncio.sleep(0.5)
    lost, duplicated, unexpected = verify(dsn, [{"tag": TAG, "per_message": 10, "sent": sent}])
    raised = probe_events(dsn, probes.published, probe_patients)
    alerts = alert_check(dsn, fleet.clients, start_id, raised, len(probes.published))
    for phase in ("single", "cluster"):
        phases[phase]["alert_latency"] = latency(fleet.clients, raised, *windows[phase])
    for phase in ("api_node", "alert_leader"):  # probes published during the kill: PUBACK -> first dashboard
        t0, t1 = windows[phase]
        late = [min(c.alert_arrivals.get(e, float("inf")) for c in fleet.clients) - at
                for e, at in raised.items() if t0 <= at <= t1]  # fmt: skip
        phases[phase]["probe_alert_delay_s_max"] = round(max(late), 3) if late else None
    readings = {"sent": sum(sent.values()) * 10, "lost": lost, "duplicated": duplicated, "unexpected": unexpected}
    kills = [phases[k] for k in ("api_node", "alert_leader")]
    replay = [k["reconnect_replay_s"]["max"] for k in kills if k["reconnect_replay_s"]["max"] is not None]
    ok = (lost == 0 and duplicated == 0 and alerts["missing"] == 0 and alerts["duplicated"] == 0
          and alerts["probes_not_raised"] == 0 and all(k["all_reconnected"] for k in kills)
          and bool(replay) and max(replay) < 5.0)  # fmt: skip
    return {
        "ok": ok,
        "lost": lost,
        "duplicated": duplicated,
        "readings": readings,
        "alerts": alerts,
        "phases": phases,
        "reconnect_replay_s_max": max(replay) if replay else None,
        "leader_handover_s": phases["alert_leader"].get("leader_handover_s"),
        "throughput": {p: {k: phases[p][k] for k in ("committed_readings_per_s", "vitals_frames_per_s")}
                       | {"http_requests_per_s": phases[p]["http"]["requests_per_s"]} for p in ("single", "cluster")},
        "dashboards": args.dashboards,
        "rate": args.rate,
        "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
    }  # fmt: skip
