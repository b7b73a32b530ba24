"""Two real server processes (``tbib server``) on one database: an alert raised by the engine leader on node A
reaches a websocket on node B (PostgreSQL LISTEN/NOTIFY); after kill -9 of A, B takes the lead and keeps alerting."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from websockets.asyncio.client import connect

from teleconsult.alerts.service import LEADER_LOCK
from teleconsult.store.migrate import upgrade
from tests.teleconsult.alerts.helpers import ingest, recv_alerts, recv_json
from tests.teleconsult.api.helpers import SECRET, login, seed

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_node(dsn: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "TBIB_ENV": "test",
        "TBIB_DATABASE_URL": dsn,
        "TBIB_SECRET_KEY": SECRET,
        "TBIB_EXT": json.dumps({"alerts": {"heartbeat_s": 1.0, "gateway_status": False}}),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "teleconsult.cli.main", "server", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            assert proc.poll() is None, "server exited"
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
    return proc, url


def leader_pid(dsn: str) -> int | None:
    """Backend pid holding the engine leader lock (bigint key: classid = high 32 bits, objid = low 32 bits)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "select pid from pg_locks where locktype = 'advisory' and granted and classid = %s and objid = %s",
            (LEADER_LOCK >> 32, LEADER_LOCK & 0xFFFFFFFF),
        ).fetchone()
    return None if row is None else int(row[0])


def wait_leader(dsn: str, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while (pid := leader_pid(dsn)) is None:
        assert time.monotonic() < deadline, "no engine leader"
        time.sleep(0.1)
    return pid


@pytest.fixture(scope="module")
def cluster_dsn(tsdb_dsn: str) -> str:
    upgrade(tsdb_dsn)
    return tsdb_dsn


@pytest.fixture
def nodes(cluster_dsn: str) -> Iterator[list[tuple[subprocess.Popen[bytes], str]]]:
    started: list[tuple[subprocess.Popen[bytes], str]] = []
    try:
        started.append(start_node(cluster_dsn))
        wait_leader(cluster_dsn)  # node A leads: it started first
        started.append(start_node(cluster_dsn))
        yield started
    finally:
        for proc, _ in started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in started:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def test_alert_from_leader_a_reaches_socket_on_b_then_failover(
    cluster_dsn: str, nodes: list[tuple[subprocess.Popen[bytes], str]]
) -> None:
    seeded = seed(cluster_dsn, prefix="mn")
    (proc_a, _url_a), (_proc_b, url_b) = nodes
    leader_before = wait_leader(cluster_dsn)
    token = login(url_b, "mn-doctor")
    ws_b = url_b.replace("http", "ws", 1)
    async with connect(f"{ws_b}/ws/v1/alerts?token={token}") as ws:  # the client offers permessage-deflate
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers  # tbib server declines it (cli/server.py)
        assert (await recv_json(ws))["type"] == "hello"
        await ingest(cluster_dsn, [(seeded.p1, "systolic_bp", 232.0, "mm[Hg]", datetime.now(UTC))])
        frames = await recv_alerts(ws, 2)
        assert {f["alert"]["rule"] for f in frames} == {"systolic_bp", "news2"}
        assert all(f["event"] == "raised" for f in frames)
        # kill -9 node A (the leader): PostgreSQL drops its session lock, node B takes over and rebuilds
        proc_a.kill()
        proc_a.wait()
        deadline = time.monotonic() + 30
        while leader_pid(cluster_dsn) in (None, leader_before):
            assert time.monotonic() < deadline, "node B did not take over"
            await asyncio.sleep(0.2)
        # B rebuilt the engine from the store: the open systolic alert is not raised twice, the next one is new
        await ingest(cluster_dsn, [(seeded.p1, "body_temperature", 40.1, "Cel", datetime.now(UTC))])
        frames = await recv_alerts(ws, 2, wait=20)
        events = {(f["event"], f["alert"]["rule"]) for f in frames}
        assert ("raised", "body_temperature") in events
        assert ("raised", "systolic_bp") not in events
    with psycopg.connect(cluster_dsn) as conn:
        n = conn.execute(
            "select count(*) from alerts where patient_id = %s and rule = 'systolic_bp'", (seeded.p1,)
        ).fetchone()
    assert n == (1,)
