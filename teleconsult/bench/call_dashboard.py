"""``dashboard_call_to_agent_join``: the doctor clicks "Appeler" -> the patient's gateway agent has joined the room.

Real engines on loopback: the whole server (uvicorn in a thread, on a fresh database of ``--pg-dsn``), Mosquitto
(``--mqtt-url``), a gateway (this process: simulated heart-rate strap, MQTT publisher, CallRunner, aiortc agent) and
an aiortc doctor (this process: joins as the doctor, admits the agent from the waiting room as the dashboard page
does). Per call, a new consultation: the click is ``POST .../call``; "joined" is the doctor's ``peer-joined`` (the
agent admitted and in the room); then the doctor calls and the first decoded frame is timed from the same click.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

from teleconsult.bench.call_doctor import AiortcDoctor
from teleconsult.bench.dashboard import PASSWORD, Server, make_database
from teleconsult.security.passwords import hash_password
from teleconsult.settings import Settings


def _seed(dsn: str, gateway_id: str) -> uuid.UUID:
    now = datetime.now(UTC)
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        doctor = conn.execute(
            "insert into users (username, display_name, role, password_hash) values ('bench-caller', 'Dr Bench',"
            " 'doctor', %s) returning id",
            (hash_password(PASSWORD),),
        ).fetchone()
        patient = conn.execute("insert into patients (display_name) values ('Patient Bench') returning id").fetchone()
        assert doctor is not None
        assert patient is not None
        conn.execute("insert into care_team (clinician_id, patient_id, valid_from) values (%s, %s, %s)",
                     (doctor[0], patient[0], now - timedelta(days=1)))  # fmt: skip
        conn.execute("insert into consents (patient_id, purpose, granted) values (%s, 'teleconsultation', true)",
                     (patient[0],))  # fmt: skip
        conn.execute("insert into gateways (id, patient_id, last_seen_at) values (%s, %s, now())",
                     (gateway_id, patient[0]))  # fmt: skip
    return uuid.UUID(str(patient[0]))


async def _calls(url: str, patient: uuid.UUID, calls: int) -> dict[str, list[float]]:
    joined: list[float] = []
    first: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=20) as http:
        r = await http.post("/api/v1/auth/login", json={"username": "bench-caller", "password": PASSWORD})
        r.raise_for_status()
        headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
        base = f"/api/v1/patients/{patient}/consultations"
        ws_url = url.replace("http://", "ws://") + "/ws/v1/signaling"
        for _ in range(calls):
            r = await http.post(base, json={"reason": "bench"}, headers=headers)
            r.raise_for_status()
            cid = r.json()["id"]
            r = await http.post(f"{base}/{cid}/join-token", json={"role": "doctor"}, headers=headers)
            r.raise_for_status()
            async with AiortcDoctor(ws_url, r.json()["token"]) as doctor:
                clicked = time.perf_counter()
                r = await http.post(f"{base}/{cid}/call", headers=headers)
                r.raise_for_status()
                if r.json()["state"] != "ringing":
                    raise RuntimeError(f"the gateway did not ring: {r.json()}")
                await asyncio.wait_for(doctor.peer_joined.wait(), 20)
                joined.append((time.perf_counter() - clicked) * 1000)
                m = await doctor.call("patient")
                await asyncio.wait_for(m.first_frame_event.wait(), 15)
                first.append(((m.first_frame_at or clicked) - clicked) * 1000)
                await doctor.hangup()
            await asyncio.sleep(0.3)
    return {"joined": joined, "first": first}


async def dashboard_calls(pg_dsn: str, mqtt_url: str, calls: int) -> dict[str, list[float]]:
    """Click -> agent joined and click -> first frame, ``calls`` times (see the module docstring)."""
    from gateway_agent.agent import Gateway
    from gateway_agent.config import load_config
    from gateway_agent.simulate import simulate
    from teleconsult.calls.command import CommandSigner

    dsn, name = make_database(pg_dsn)
    secret = secrets.token_urlsafe(48)
    gateway_id = f"gw-bench-{uuid.uuid4().hex[:8]}"
    try:
        patient = _seed(dsn, gateway_id)
        settings = Settings(env="test", database_url=dsn, secret_key=secret, mqtt_url=mqtt_url, cookie_secure=False,
                            ext={"alerts": {"enabled": False}})  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="tbib-bench-call-") as tmp, Server(settings) as server:
            sim = simulate(1, kinds=["heart_rate"])
            gw_settings = load_config(None, overrides={
                "gateway_id": gateway_id, "broker_url": mqtt_url, "status_file": None,
                "outbox": {"path": str(Path(tmp) / "outbox.sqlite3")}, "receipts": {"enabled": False},
                "devices": [d.model_dump() for d in sim.devices],
                "commands": {"server_keys": [CommandSigner.from_secret(secret).public_key_text], "camera": None},
            })  # fmt: skip
            gateway = Gateway(gw_settings, scanner_kwargs=sim.scanner_kwargs, client_kwargs=sim.client_kwargs,
                              clock=sim.clock, status_interval=1.0)  # fmt: skip
            stop = asyncio.Event()
            task = asyncio.create_task(gateway.run(stop))
            try:
                await asyncio.wait_for(gateway.publisher.wait_connected(), 10)
                app: Any = server.server.config.app
                service = app.state.calls
                deadline = time.monotonic() + 10
                while service.presence.get(gateway_id) != "online":
                    if time.monotonic() > deadline:
                        raise RuntimeError("the server never saw the gateway online")
                    await asyncio.sleep(0.05)
                return await _calls(server.url, patient, calls)
            finally:
                stop.set()
                await asyncio.wait_for(task, 30)
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')
