"""Push over real uvicorn + PostgreSQL: readings committed by ingest -> engine leader -> store -> hub -> websocket.

Also: care-team filtering, reconnect replay, acknowledge/resolve over HTTP (audited), escalation, vitals socket.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from teleconsult.alerts import store
from teleconsult.api.app import create_app
from teleconsult.api.extensions.alerts import extension as alerts_extension
from teleconsult.store.migrate import upgrade
from tests.teleconsult.alerts.helpers import get, ingest, post, quiet, recv_alerts, recv_json
from tests.teleconsult.api.helpers import LiveServer, Seeded, login, make_settings, seed


@dataclass
class Live:
    dsn: str
    url: str
    ws: str
    app: Any
    seeded: Seeded
    doctor: str
    nurse: str
    outsider: str


@pytest.fixture(scope="module")
def live(tsdb_dsn: str) -> Iterator[Live]:
    upgrade(tsdb_dsn)
    seeded = seed(tsdb_dsn, prefix="a")
    outsider = seeded.add_user("a-outsider", "doctor")  # a doctor on nobody's care team
    assert outsider
    ext = {"alerts": {"heartbeat_s": 0.5, "gateway_status": False, "escalate_high_s": 3.0, "refresh_s": 1.0}}
    settings = make_settings(tsdb_dsn, ext=ext, db_pool_max_size=10)
    app = create_app(settings, extensions=[alerts_extension])
    with LiveServer(app) as server:
        deadline = time.monotonic() + 20
        while not (app.state.alert_engine and app.state.alert_engine.leader.is_set()):
            assert time.monotonic() < deadline, "engine did not become leader"
            time.sleep(0.05)
        yield Live(
            tsdb_dsn,
            server.url,
            server.url.replace("http", "ws", 1),
            app,
            seeded,
            login(server.url, "a-doctor"),
            login(server.url, "a-nurse"),
            login(server.url, "a-outsider"),
        )


def now() -> datetime:
    return datetime.now(UTC)


async def test_alert_reaches_assigned_doctor_not_outsider(live: Live) -> None:
    p1 = live.seeded.p1
    async with (
        connect(f"{live.ws}/ws/v1/alerts?token={live.doctor}") as doctor,
        connect(f"{live.ws}/ws/v1/alerts?token={live.outsider}") as outsider,
    ):
        hello = await recv_json(doctor)
        assert hello["type"] == "hello"
        assert hello["patients"] == 1
        assert (await recv_json(outsider))["patients"] == 0
        await ingest(live.dsn, [(p1, "systolic_bp", 231.0, "mm[Hg]", now())])
        frames = await recv_alerts(doctor, 2)
        by_rule = {f["alert"]["rule"]: f for f in frames}
        assert set(by_rule) == {"systolic_bp", "news2"}
        assert by_rule["systolic_bp"]["event"] == "raised"
        assert by_rule["systolic_bp"]["alert"]["severity"] == "high"
        assert by_rule["systolic_bp"]["alert"]["patient_id"] == str(p1)
        assert by_rule["news2"]["alert"]["details"]["partial"] is True
        assert frames[0]["id"] < frames[1]["id"]
        assert await quiet(outsider, 1.0) == []
        # escalation: high, not acknowledged within 3 s -> escalated to the second clinician of the care team
        escalated = [f for f in await recv_alerts(doctor, 1, wait=10) if f["event"] == "escalated"]
        assert escalated
        assert escalated[0]["alert"]["rule"] == "systolic_bp"
        assert escalated[0]["alert"]["escalated_to"] == str(live.seeded.users["nurse"])
        # cleanup: a normal pressure clears it
        await ingest(live.dsn, [(p1, "systolic_bp", 120.0, "mm[Hg]", now())])
        cleared = await recv_alerts(doctor, 2)
        assert {(f["event"], f["alert"]["rule"]) for f in cleared} == {("cleared", "systolic_bp"), ("cleared", "news2")}


async def test_reconnect_replays_exactly_the_missed_events(live: Live) -> None:
    p1 = live.seeded.p1
    async with connect(f"{live.ws}/ws/v1/alerts?token={live.doctor}") as ws:
        await recv_json(ws)
        await ingest(live.dsn, [(p1, "body_temperature", 39.8, "Cel", now())])
        first = await recv_alerts(ws, 2)  # body_temperature high + news2
        last_id = first[-1]["id"]
    # while disconnected: more events, including an acknowledgement over HTTP
    await ingest(live.dsn, [(p1, "pulse_rate", 150.0, "/min", now() - timedelta(minutes=5))])
    await ingest(live.dsn, [(p1, "pulse_rate", 152.0, "/min", now())])  # min duration 60 s of device time: raised
    temp_alert = next(f["alert"]["id"] for f in first if f["alert"]["rule"] == "body_temperature")
    r = await post(f"{live.url}/api/v1/alerts/{temp_alert}/acknowledge", live.nurse, {"note": "phoned"})
    assert r.status_code == 200, r.text
    assert r.json()["alert"]["state"] == "acknowledged"
    await asyncio.sleep(1.0)
    async with await psycopg.AsyncConnection.connect(live.dsn) as conn:
        missed = await store.events_since(conn, last_id, patient_ids=[p1])
    assert len(missed) >= 3
    assert missed[-1].type == "acknowledged"
    async with connect(f"{live.ws}/ws/v1/alerts?token={live.doctor}&last_event_id={last_id}") as ws:
        assert (await recv_json(ws))["type"] == "hello"
        replayed = await recv_alerts(ws, len(missed))
        assert [f["id"] for f in replayed] == [e.id for e in missed]
        assert [f["event"] for f in replayed] == [e.type for e in missed]
        assert await quiet(ws, 1.0) == []  # nothing twice
        # then live: resolve over HTTP arrives on the same socket
        r = await post(f"{live.url}/api/v1/alerts/{temp_alert}/resolve", live.doctor)
        assert r.status_code == 200, r.text
        live_frames = await recv_alerts(ws, 1)
        assert live_frames[0]["event"] == "resolved"
        assert live_frames[0]["id"] > replayed[-1]["id"]


async def test_http_lifecycle_is_authorized_and_audited(live: Live) -> None:
    p1 = live.seeded.p1
    async with connect(f"{live.ws}/ws/v1/alerts?token={live.doctor}") as ws:
        await recv_json(ws)
        await ingest(live.dsn, [(p1, "glucose", 40.0, "mg/dL", now())])
        frames = await recv_alerts(ws, 1)
    alert_id = frames[0]["alert"]["id"]
    base = f"{live.url}/api/v1/alerts"
    assert (await post(f"{base}/{alert_id}/acknowledge", live.outsider)).status_code == 403
    r = await get(f"{base}/{alert_id}", live.doctor)
    assert r.status_code == 200
    assert r.json()["rule"] == "glucose"
    assert (await post(f"{base}/{10**12}/acknowledge", live.outsider)).status_code == 404
    assert (await post(f"{base}/{alert_id}/acknowledge", None)).status_code == 401
    assert (await post(f"{base}/{alert_id}/resolve", live.doctor)).status_code == 200
    assert (await post(f"{base}/{alert_id}/resolve", live.doctor)).status_code == 409
    with psycopg.connect(live.dsn) as conn:
        rows = conn.execute(
            "select actor_username, outcome, resource from audit_events where detail->>'alert_id' = %s order by id",
            (str(alert_id),),
        ).fetchall()
    outcomes = {(user, outcome, res.split(" ")[0], res.rsplit("/", 1)[-1]) for user, outcome, res in rows}
    assert ("a-outsider", "denied", "POST", "acknowledge") in outcomes
    assert ("a-doctor", "allowed", "POST", "resolve") in outcomes


async def test_unauthenticated_alert_socket_is_refused(live: Live) -> None:
    with pytest.raises((InvalidStatus, ConnectionClosed)):
        async with connect(f"{live.ws}/ws/v1/alerts?token=forged") as ws:
            await recv_json(ws)


async def test_vitals_socket_live_and_since(live: Live) -> None:
    p1, p2 = live.seeded.p1, live.seeded.p2
    t = now()
    await ingest(live.dsn, [(p1, "heart_rate", 71.0, "/min", t - timedelta(seconds=30))])
    async with connect(f"{live.ws}/ws/v1/vitals?patient={p1}&token={live.doctor}") as ws:
        assert (await recv_json(ws))["type"] == "hello"
        await ingest(live.dsn, [(p1, "heart_rate", 72.0, "/min", t), (p2, "heart_rate", 99.0, "/min", t)])
        frame = await recv_json(ws)
        while frame["type"] == "heartbeat":
            frame = await recv_json(ws)
        assert frame["type"] == "reading"
        assert (frame["metric"], frame["value"], frame["patient_id"]) == ("heart_rate", 72.0, str(p1))
        assert frame["id"] == 1
        assert await quiet(ws, 0.8) == []  # p2's reading is not sent here
    since = quote((t - timedelta(minutes=1)).isoformat())
    async with connect(f"{live.ws}/ws/v1/vitals?patient={p1}&token={live.doctor}&since={since}") as ws:
        await recv_json(ws)
        frames = []
        while (frame := await recv_json(ws))["type"] != "heartbeat":  # the replay comes first, then heartbeats
            frames.append(frame)
        values = [f["value"] for f in frames if f.get("metric") == "heart_rate"]
        assert values[:2] == [71.0, 72.0]
        assert all(f.get("replay") for f in frames if f["type"] == "reading")
    # not on p2's care team: refused (and audited as denied)
    with pytest.raises((InvalidStatus, ConnectionClosed)):
        async with connect(f"{live.ws}/ws/v1/vitals?patient={p2}&token={live.doctor}") as ws:
            await recv_json(ws)
    assert uuid.UUID(str(p2))


async def test_disconnect_unsubscribes_at_once_and_client_frames_are_ignored(live: Live) -> None:
    hub = live.app.state.alert_hub
    before = hub.subscribers
    async with connect(f"{live.ws}/ws/v1/alerts?token={live.doctor}") as ws:
        await recv_json(ws)
        assert hub.subscribers == before + 1
        await ws.send(b"\x00binary")  # anything the client sends is ignored
        await ws.send('{"type": "pong"}')
        assert (await recv_json(ws))["type"] == "heartbeat"
    for _ in range(20):  # well under one heartbeat (0.5 s)
        if hub.subscribers == before:
            break
        await asyncio.sleep(0.01)
    assert hub.subscribers == before


async def test_replay_longer_than_the_limit_is_a_resync(live: Live) -> None:
    ext = live.app.state.alerts_ext
    live.app.state.alerts_ext = ext.model_copy(update={"replay_limit": 1})
    try:
        async with connect(f"{live.ws}/ws/v1/alerts?token={live.doctor}&last_event_id=0") as ws:
            assert (await recv_json(ws))["type"] == "hello"
            frame = await recv_json(ws)
            assert frame["type"] == "resync"
            assert frame["last_event_id"] == 0
            with pytest.raises(ConnectionClosed) as info:
                await recv_json(ws)
            assert info.value.rcvd is not None
            assert info.value.rcvd.code == 1013
    finally:
        live.app.state.alerts_ext = ext


async def test_alert_profile_put(live: Live) -> None:
    import httpx

    url = f"{live.url}/api/v1/patients/{live.seeded.p1}/alert-profile"
    body = {"spo2_scale": 2, "heart_failure": True, "expected_intervals_s": {"body_weight": 86400}}
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {live.doctor}"}) as client:
        r = await client.put(url, json=body)
        assert r.status_code == 200, r.text
        assert (await client.put(url, json={"expected_intervals_s": {"body_weight": 1}})).status_code == 422
        assert (await client.put(url, json={"spo2_scale": 3})).status_code == 422
        # keys are metric names of the vocabulary (the OpenAPI fuzzer once sent "\u0000" keys, a 500 from jsonb)
        bad_key = await client.put(url, json={"expected_intervals_s": {"x\u0000y": 3600}})
        assert bad_key.status_code == 422
        assert "unknown metric" in bad_key.text
    with psycopg.connect(live.dsn) as conn:
        row = conn.execute("select config from alert_profiles where patient_id = %s", (live.seeded.p1,)).fetchone()
    assert row is not None
    assert row[0]["spo2_scale"] == 2
    assert row[0]["expected_intervals_s"] == {"body_weight": 86400.0}
