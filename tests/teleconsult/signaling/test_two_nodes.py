"""Two signaling server processes sharing rooms through PostgreSQL (rows in ``signaling_rooms``, frames between nodes by
NOTIFY): the doctor on node A, the agent on node B, and the call connects (video both ways, vitals); a room created on
node A is served by node B after A restarted."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from gateway_agent.consult import ConsultAgent, ConsultConfig, VitalReading
from teleconsult.bench.call_doctor import AiortcDoctor
from teleconsult.signaling.pgbus import Reassembler, encode_chunks
from teleconsult.signaling.tokens import Role, issue_token


def test_large_inputs_are_chunked_and_reassembled() -> None:
    big = {"k": "receive", "r": secrets.token_hex(40_000)}  # 80 KB of hex: compresses to ~45 KB, still > 7900 bytes
    payloads = encode_chunks(big)
    assert len(payloads) > 5
    assert all(len(p.encode()) <= 7900 for p in payloads)
    r = Reassembler()
    results = [r.feed(p) for p in payloads]
    assert results[:-1] == [None] * (len(payloads) - 1)
    assert results[-1] == big
    small = {"k": "connect", "c": 1}
    assert Reassembler().feed(encode_chunks(small)[0]) == small


async def start_node(key: bytes, dsn: str) -> tuple[asyncio.subprocess.Process, str]:
    env = {**os.environ, "TBIB_SIGNALING_KEY": key.hex(), "TBIB_SIGNALING_PG_DSN": dsn}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "teleconsult.signaling.standalone", env=env, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().split()
    assert line[0] == "SIGNALING"
    return proc, line[1].replace("http://", "ws://") + "/ws/v1/signaling"


@pytest.fixture
async def two_nodes(plain_dsn: str) -> AsyncIterator[tuple[bytes, str, str]]:
    key = secrets.token_bytes(32)
    (a, url_a), (b, url_b) = await asyncio.gather(start_node(key, plain_dsn), start_node(key, plain_dsn))
    try:
        yield key, url_a, url_b
    finally:
        for p in (a, b):
            p.terminate()
            await asyncio.wait_for(p.wait(), 10)


async def test_doctor_on_node_a_agent_on_node_b(two_nodes: tuple[bytes, str, str]) -> None:
    key, url_a, url_b = two_nodes
    now = datetime.now(UTC)

    def tok(role: Role, sub: str) -> str:
        return issue_token(key=key, consultation_id="two-nodes", role=role, subject=sub, now=now)

    queue: asyncio.Queue[VitalReading] = asyncio.Queue()

    async def readings() -> AsyncIterator[VitalReading]:
        while True:
            yield await queue.get()

    agent = ConsultAgent(
        ConsultConfig(server=url_b, token=tok(Role.AGENT, "gw-1"), camera=None, ice_servers=[]), readings()
    )
    run = asyncio.create_task(agent.run())
    async with AiortcDoctor(url_a, tok(Role.DOCTOR, "dr-1")) as doctor:
        await asyncio.wait_for(doctor.peer_joined.wait(), 10)  # lobby on A shows the agent connected to B; admitted
        metrics = await doctor.call("patient")
        await asyncio.wait_for(metrics.first_frame_event.wait(), 10)
        await queue.put(VitalReading("body_temperature", 37.2, "Cel", datetime.now(UTC)))
        await asyncio.wait_for(metrics.first_vitals_event.wait(), 10)
        for _ in range(200):
            if agent.stats.remote_video_frames > 0:
                break
            await asyncio.sleep(0.02)
    assert metrics.vitals[0]["value"] == 37.2
    assert agent.stats.remote_video_frames > 0
    assert doctor.errors == []
    await agent.stop()
    assert await asyncio.wait_for(run, 10) == "stopped"


async def test_room_created_on_node_a_is_served_by_node_b_after_a_restarts(plain_dsn: str) -> None:
    """Room state is in the database: node A creates the room and restarts; the agent joins on node B, the doctor
    comes back on the restarted A and reclaims their seat, admits the agent, and the call connects."""
    import json

    import psycopg
    from websockets.asyncio.client import connect

    key = secrets.token_bytes(32)
    now = datetime.now(UTC)
    cid = f"restart-{secrets.token_hex(4)}"

    def tok(role: Role, sub: str) -> str:
        return issue_token(key=key, consultation_id=cid, role=role, subject=sub, now=now)

    (a, url_a), (b, url_b) = await asyncio.gather(start_node(key, plain_dsn), start_node(key, plain_dsn))
    procs = [a, b]
    try:
        async with connect(url_a) as ws:
            assert json.loads(await ws.recv())["type"] == "hello"
            await ws.send(json.dumps({"v": 1, "seq": 1, "type": "join", "token": tok(Role.DOCTOR, "dr-1")}))
            assert json.loads(await ws.recv())["type"] == "joined"
        a.terminate()
        await asyncio.wait_for(a.wait(), 10)
        with psycopg.connect(plain_dsn) as conn:
            row = conn.execute("select state from signaling_rooms where consultation_id = %s", (cid,)).fetchone()
        assert row is not None
        assert [s["seat"] for s in row[0]["seats"]] == ["doctor"]
        a2, url_a2 = await start_node(key, plain_dsn)
        procs.append(a2)
        agent = ConsultAgent(
            ConsultConfig(server=url_b, token=tok(Role.AGENT, "gw-1"), camera=None, ice_servers=[]), None
        )
        run = asyncio.create_task(agent.run())
        async with AiortcDoctor(url_a2, tok(Role.DOCTOR, "dr-1")) as doctor:
            await asyncio.wait_for(doctor.peer_joined.wait(), 10)
            assert doctor.joined is not None
            metrics = await doctor.call("patient")
            await asyncio.wait_for(metrics.first_frame_event.wait(), 10)
        assert doctor.errors == []
        await agent.stop()
        assert await asyncio.wait_for(run, 10) == "stopped"
    finally:
        for p in procs:
            if p.returncode is None:
                p.terminate()
                await asyncio.wait_for(p.wait(), 10)
