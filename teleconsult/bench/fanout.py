"""`tbib bench fanout`: one server node, 1 000 dashboard websockets on different patients, alert and vitals delivery.

Every part is real: `tbib server` (uvicorn on loopback, the dashboard's ``/ws/v1/patients`` feed and its per-process
``LiveHub``), PostgreSQL (LISTEN/NOTIFY), care-team authorization (each doctor has an access token and is on the care
team of one patient; ``--patients`` patients, so each patient's events go to ``sockets / patients`` sockets). The
client sockets run in a **separate process** (their CPU is not the server's). The server has no engine (``[ext.alerts]
engine = false``): this benchmark publishes the events itself, exactly as the engine leader does.

- Alerts: ``--alert-rate`` events/s through :func:`teleconsult.alerts.store.record_engine_events` (one transaction and
  one NOTIFY per event, as the engine does), each for the next patient in turn; the event carries its publish time in
  ``details.t``. Latency = arrival on a socket - publish call (same host clock). Every expected frame must arrive.
- Vitals: every ``--vitals-interval`` s one upsert of ``latest_readings`` (what ingest writes in its transaction) with a
  heart rate for every patient, ``measured_at`` = publish time; its trigger NOTIFYs ``tbib_readings``. The feed sends
  vitals at most once per ``live_interval_s`` per socket, coalesced (newest wins): latency includes that pacing, and
  ``vitals_final_ok`` counts the sockets whose last value is the newest published for their patient.
- Baseline in the same run: one socket, the alerts of its patient only.

The last stdout line is the JSON result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import psycopg

from teleconsult.alerts import store
from teleconsult.alerts.model import AlertEvent, AlertKey, EventKind, Severity
from teleconsult.bench.alerts import SECRET, quantile, wait_port
from teleconsult.bench.ingest import REPO, free_port, project_dsn
from teleconsult.bench.loadgen import cpu_seconds_by_role
from teleconsult.security import tokens
from teleconsult.security.models import Role
from teleconsult.store.migrate import upgrade

RULE = "fanout_probe"


def log(msg: str) -> None:
    """Progress on stderr (stdout carries the result)."""
    print(f"bench fanout: {msg}", file=sys.stderr, flush=True)


def raise_fd_limit(need: int) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE towards ``need`` (up to the hard limit); returns (soft, hard) after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def setup(dsn: str, patients: int, sockets: int) -> tuple[list[uuid.UUID], list[tuple[str, uuid.UUID]]]:
    """``patients`` patients and ``sockets`` doctors, doctor i on the care team of patient i % patients."""
    now = datetime.now(UTC)
    pids: list[uuid.UUID] = []
    out: list[tuple[str, uuid.UUID]] = []
    with psycopg.connect(dsn) as conn:
        for i in range(patients):
            row = conn.execute("insert into patients (display_name) values (%s) returning id", (f"F{i}",)).fetchone()
            assert row is not None
            pids.append(uuid.UUID(str(row[0])))
        for i in range(sockets):
            urow = conn.execute(
                "insert into users (username, role, password_hash) values (%s, 'doctor', 'x') returning id",
                (f"bench-fan-{i:05d}",),
            ).fetchone()
            assert urow is not None
            user, patient = uuid.UUID(str(urow[0])), pids[i % patients]
            conn.execute(
                "insert into care_team (clinician_id, patient_id, valid_from) values (%s, %s, %s)",
                (user, patient, now - timedelta(days=1)),
            )
            session = uuid.uuid4()
            conn.execute(
                "insert into auth_sessions (id, user_id, refresh_hash, created_at, last_used_at, expires_at)"
                " values (%s, %s, %s, %s, %s, %s)",
                (session, user, b"\0" * 32, now, now, now + timedelta(hours=2)),
            )
            token = tokens.issue_access_token(
                secret=SECRET, issuer="tbib", user_id=user, session_id=session, role=Role.DOCTOR, now=now, ttl_s=7200
            )
            out.append((token, patient))
    return pids, out


# ---------------------------------------------------------------------------------------------- client process
def clients_process(url: str, tokens_: list[str], need_fds: int, ready: Any, stop: Any, results: Any) -> None:
    """Entry of the client process: open every socket, report ready, record arrivals until ``stop``, report."""
    raise_fd_limit(need_fds)
    results.put(asyncio.run(_clients(url, tokens_, ready, stop)))


async def _clients(url: str, tokens_: list[str], ready: Any, stop: Any) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    alert_ms: list[float] = []
    alert_ids: list[int] = []
    vitals_ms: list[float] = []
    last_value: list[float | None] = [None] * len(tokens_)
    resyncs = 0
    gate = asyncio.Semaphore(50)
    sockets: list[Any] = []
    received: list[list[tuple[float, str | bytes]]] = [[] for _ in tokens_]

    async def one(i: int, token: str) -> None:
        async with gate:
            ws = await connect(f"{url}/ws/v1/patients?token={token}", max_queue=None, open_timeout=60)
            hello = json.loads(await ws.recv())
            assert hello["type"] == "hello", hello
            sockets.append(ws)
        if len(sockets) == len(tokens_):
            opened.set()
        async for raw in ws:  # only a timestamp here: parsing comes after the run (1 000 sockets, one process)
            received[i].append((time.time(), raw))

    opened = asyncio.Event()
    t0 = time.monotonic()
    tasks = [asyncio.create_task(one(i, t)) for i, t in enumerate(tokens_)]
    waiter = asyncio.create_task(opened.wait())
    await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    failed = [t for t in tasks if t.done() and t.exception() is not None]
    if failed:
        raise RuntimeError(f"a dashboard socket failed: {failed[0].exception()!r}")
    connect_s = time.monotonic() - t0
    ready.set()
    await asyncio.to_thread(stop.wait)
    await asyncio.sleep(0.5)  # frames already on the wire
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for ws in sockets:
        await ws.close()
    for i, frames in enumerate(received):
        for now, raw in frames:
            frame = json.loads(raw)
            kind = frame.get("type")
            if kind == "alert" and frame["alert"]["rule"] == RULE:
                alert_ms.append((now - float(frame["alert"]["details"]["t"])) * 1000)
                alert_ids.append(int(frame["id"]))
            elif kind == "vitals":
                for _pid, _metric, value, _unit, measured_at in frame["items"]:
                    vitals_ms.append((now - datetime.fromisoformat(measured_at).timestamp()) * 1000)
                    last_value[i] = float(value)
            elif kind == "resync":
                resyncs += 1
    return {
        "alert_ms": alert_ms,
        "alert_ids": alert_ids,
        "vitals_ms": vitals_ms,
        "last_value": last_value,
        "resyncs": resyncs,
        "connect_s": connect_s,
    }


# ---------------------------------------------------------------------------------------------- publisher
async def publish(
    dsn: str, patients: list[uuid.UUID], seconds: float, alert_rate: float, vitals_interval: float
) -> tuple[dict[uuid.UUID, int], dict[uuid.UUID, float]]:
    """Publish alerts round-robin over ``patients`` and vitals for all of them; returns (alerts per patient, newest
    vitals value per patient)."""
    sent: dict[uuid.UUID, int] = dict.fromkeys(patients, 0)
    newest: dict[uuid.UUID, float] = {}
    async with (
        await psycopg.AsyncConnection.connect(dsn) as alerts_conn,
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as vitals_conn,
    ):

        async def alerts() -> None:
            start = time.monotonic()
            k = 0
            while (due := start + k / alert_rate) < start + seconds:
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                p = patients[k % len(patients)]
                t0 = time.time()
                ev = AlertEvent(EventKind.RAISED, AlertKey(str(p), RULE), Severity.HIGH, datetime.now(UTC),
                                {"t": t0, "k": k})  # fmt: skip
                await store.record_engine_events(alerts_conn, [ev])
                sent[p] += 1
                k += 1

        async def vitals() -> None:
            start = time.monotonic()
            k = 0
            while (due := start + k * vitals_interval) < start + seconds:
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                at = datetime.now(UTC)
                value = 60.0 + k % 40
                await vitals_conn.execute(
                    "insert into latest_readings (patient_id, metric, value, unit, measured_at, reading_id)"
                    " select p, 'heart_rate', %s, '/min', %s, gen_random_uuid() from unnest(%s::uuid[]) as p"
                    " on conflict (patient_id, metric) do update set value = excluded.value,"
                    " measured_at = excluded.measured_at, reading_id = excluded.reading_id, updated_at = now()",
                    (value, at, patients),
                )
                for p in patients:
                    newest[p] = value
                k += 1

        tasks = [alerts()] + ([vitals()] if vitals_interval > 0 else [])
        await asyncio.gather(*tasks)
    return sent, newest


def pcts(values: list[float]) -> dict[str, float | None]:
    """p50/p99/max in ms."""
    return {
        "p50_ms": None if not values else round(statistics.median(values), 1),
        "p99_ms": None if (q := quantile(values, 0.99)) is None else round(q, 1),
        "max_ms": None if not values else round(max(values), 1),
    }


def phase(
    ws_url: str,
    dsn: str,
    people: list[tuple[str, uuid.UUID]],
    args: argparse.Namespace,
    pids: dict[str, int],
    vitals_interval: float,
) -> dict[str, Any]:
    """Open ``people``'s sockets in a client process, publish for their patients, collect the figures."""
    ctx = mp.get_context("spawn")
    ready, stop, results = ctx.Event(), ctx.Event(), ctx.Queue()
    need = len(people) + 256
    proc = ctx.Process(target=clients_process, args=(ws_url, [t for t, _ in people], need, ready, stop, results))
    proc.start()
    if not ready.wait(300):
        proc.terminate()
        raise RuntimeError("the dashboard sockets did not open")
    patients = list(dict.fromkeys(p for _, p in people))
    roles = {**{r: [p] for r, p in pids.items()}, "clients": [proc.pid or 0]}
    cpu0, t0 = cpu_seconds_by_role(roles), time.time()
    sent, newest = asyncio.run(publish(dsn, patients, args.seconds, args.alert_rate, vitals_interval))
    elapsed = time.time() - t0
    time.sleep(max(1.5, args.live_interval * 2))  # the last coalesced vitals go out
    cpu1 = cpu_seconds_by_role(roles)
    stop.set()
    got = results.get(timeout=120)
    proc.join(30)
    per_patient = {p: sum(1 for _, q in people if q == p) for p in patients}
    expected = sum(sent[p] * per_patient[p] for p in patients)
    finals = [newest.get(p) for _, p in people]
    return {
        "sockets": len(people),
        "patients": len(patients),
        "alerts_published": sum(sent.values()),
        "expected_frames": expected,
        "frames": len(got["alert_ms"]),
        "alerts": pcts(got["alert_ms"]),
        "vitals": {**pcts(got["vitals_ms"]), "items": len(got["vitals_ms"])},
        "vitals_final_ok": sum(1 for a, b in zip(got["last_value"], finals, strict=True) if b is None or a == b),
        "resyncs": got["resyncs"],
        "connect_s": round(got["connect_s"], 1),
        "cpu_cores_busy": {k: round((cpu1[k] - cpu0.get(k, 0.0)) / elapsed, 2) for k in cpu1},
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; the last stdout line is the JSON result."""
    ap = argparse.ArgumentParser(prog="tbib bench fanout", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sockets", type=int, default=1000, help="dashboard websockets (default 1000)")
    ap.add_argument("--patients", type=int, default=200, help="patients, one per doctor in turn (default 200)")
    ap.add_argument("--seconds", type=float, default=20.0, help="publishing time per phase (default 20)")
    ap.add_argument("--alert-rate", type=float, default=50.0, help="alert events per second (default 50)")
    ap.add_argument("--vitals-interval", type=float, default=1.0, help="s between vitals of every patient (1; 0: none)")
    ap.add_argument("--live-interval", type=float, default=1.0, help="the feed's vitals pacing live_interval_s (1.0)")
    ap.add_argument("--dsn", help="server DSN to create the benchmark database in (default: project services)")
    ap.add_argument("--keep-db", action="store_true", help="do not drop the benchmark database")
    ap.add_argument("--json", action="store_true", help="print only the JSON result on stdout")
    args = ap.parse_args(argv)
    fd_before = resource.getrlimit(resource.RLIMIT_NOFILE)
    fd_after = raise_fd_limit(args.sockets * 2 + 512)  # inherited by the server (its sockets + its connections)
    if fd_after[0] != resource.RLIM_INFINITY and fd_after[0] < args.sockets + 256:
        log(f"file-descriptor limit {fd_after[0]} is too low for {args.sockets} sockets")
        return 1
    server_dsn = args.dsn or project_dsn()
    name = f"tbib_bench_fanout_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    dsn = urlsplit(server_dsn)._replace(path="/" + name).geturl()
    proc: subprocess.Popen[bytes] | None = None
    try:
        upgrade(dsn, timescaledb=True)
        _patients, people = setup(dsn, args.patients, args.sockets)
        port = free_port()
        ext = {
            "alerts": {"engine": False, "gateway_status": False},
            "dashboard": {"live_interval_s": args.live_interval},
        }
        env = {**os.environ, "TBIB_ENV": "test", "TBIB_DATABASE_URL": dsn, "TBIB_SECRET_KEY": SECRET,
               "TBIB_DB_POOL_MAX_SIZE": "20", "TBIB_EXT": json.dumps(ext)}  # fmt: skip
        proc = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "teleconsult.cli.main", "server", "--port", str(port)],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_port(port, proc)
        ws_url = f"ws://127.0.0.1:{port}"
        pids = {"server": proc.pid, "bench": os.getpid()}
        first = people[0]
        baseline = phase(ws_url, dsn, [first], args, pids, 0.0)
        baseline_alerts = baseline["alerts"]
        log(f"baseline: {baseline}")
        loaded = phase(ws_url, dsn, people, args, pids, args.vitals_interval)
        log(f"loaded: {loaded}")
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if not args.keep_db:
            with psycopg.connect(server_dsn, autocommit=True) as conn:
                conn.execute(f'drop database if exists "{name}" with (force)')
    result = {
        "p50_ms": loaded["alerts"]["p50_ms"],
        "p99_ms": loaded["alerts"]["p99_ms"],
        "max_ms": loaded["alerts"]["max_ms"],
        "frames": loaded["frames"],
        "expected_frames": loaded["expected_frames"],
        "sockets": loaded["sockets"],
        "patients": loaded["patients"],
        "alerts_per_s": args.alert_rate,
        "vitals": loaded["vitals"],
        "vitals_final_ok": loaded["vitals_final_ok"],
        "resyncs": loaded["resyncs"],
        "connect_s": loaded["connect_s"],
        "baseline": baseline,
        "p99_ratio_vs_baseline": (
            None
            if not (baseline_alerts["p99_ms"] and loaded["alerts"]["p99_ms"])
            else round(loaded["alerts"]["p99_ms"] / baseline_alerts["p99_ms"], 2)
        ),
        "goal_p99_ms": 100,
        "fd_limit": {"before": list(fd_before), "after": list(fd_after)},
        "cpu_cores_busy": loaded["cpu_cores_busy"],
        "cpus": os.cpu_count(),
        "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
    }
    if not args.json:
        log(json.dumps(result, indent=2))
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
