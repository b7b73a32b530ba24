"""Through the real app (create_app, migrations, care team, consent): open a consultation, get join tokens, run the
room, and find the consultation record and audit events in PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from websockets.asyncio.client import connect

from teleconsult.api.app import create_app
from teleconsult.store.migrate import upgrade
from tests.teleconsult.api.helpers import LiveServer, Seeded, login, make_settings, seed


@pytest.fixture(scope="module")
def app_server(tsdb_dsn: str) -> Iterator[tuple[LiveServer, Seeded]]:
    upgrade(tsdb_dsn)
    seeded = seed(tsdb_dsn)
    with LiveServer(create_app(make_settings(seeded.dsn))) as server:
        yield server, seeded


async def frames_until(ws: Any, kind: str) -> dict[str, Any]:
    while True:
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if frame["type"] == kind:
            return frame


async def test_consultation_lifecycle_is_recorded(app_server: tuple[LiveServer, Seeded]) -> None:
    server, seeded = app_server
    doctor = {"Authorization": f"Bearer {login(server.url, 'm-doctor')}"}
    patient = {"Authorization": f"Bearer {login(server.url, 'm-patient')}"}
    nurse = {"Authorization": f"Bearer {login(server.url, 'm-nurse')}"}
    base = f"{server.url}/api/v1/patients/{seeded.p1}"
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{base}/consultations", json={}, headers=doctor)
        assert r.status_code == 403  # no teleconsultation consent yet
        r = await http.post(f"{base}/consents", json={"purpose": "teleconsultation", "granted": True}, headers=patient)
        assert r.status_code == 201
        r = await http.post(f"{base}/consultations", json={"reason": "BP follow-up"}, headers=doctor)
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
        tokens = {}
        for who, headers, role in (
            ("doctor", doctor, "doctor"),
            ("agent", doctor, "agent"),
            ("patient", patient, "patient"),
        ):
            r = await http.post(f"{base}/consultations/{cid}/join-token", json={"role": role}, headers=headers)
            assert r.status_code == 200, r.text
            tokens[who] = r.json()
        assert tokens["patient"]["page_path"].startswith("/consult/patient#token=")
        r = await http.post(f"{base}/consultations/{cid}/join-token", json={"role": "doctor"}, headers=nurse)
        assert r.status_code == 403
        r = await http.post(f"{base}/consultations/{cid}/join-token", json={"role": "doctor"}, headers=patient)
        assert r.status_code == 403

    ws_url = server.url.replace("http://", "ws://") + "/ws/v1/signaling"
    async with connect(ws_url) as d, connect(ws_url) as a:
        await d.send(json.dumps({"v": 1, "seq": 1, "type": "join", "token": tokens["doctor"]["token"]}))
        joined = await frames_until(d, "joined")
        assert joined["consultation"] == cid
        await a.send(json.dumps({"v": 1, "seq": 1, "type": "join", "token": tokens["agent"]["token"]}))
        await frames_until(a, "lobby")
        await frames_until(d, "lobby")
        await d.send(json.dumps({"v": 1, "seq": 2, "type": "admit", "seat": "patient"}))
        assert (await frames_until(a, "joined"))["role"] == "agent"
        await d.send(json.dumps({"v": 1, "seq": 3, "type": "bye", "end": True, "reason": "done"}))
        assert (await frames_until(a, "bye"))["end"] is True

    kinds: list[str] = []
    for _ in range(100):
        with psycopg.connect(seeded.dsn) as conn:
            rows = conn.execute(
                "select kind, seat, by_subject from consultation_events where consultation_id = %s order by id", (cid,)
            ).fetchall()
            stamps = conn.execute("select started_at, ended_at from consultations where id = %s", (cid,)).fetchone()
            audits = conn.execute(
                "select count(*) from audit_events where detail->>'consultation_id' = %s", (cid,)
            ).fetchone()
        kinds = [r[0] for r in rows]
        if "ended" in kinds:
            break
        await asyncio.sleep(0.05)
    assert kinds == ["started", "joined", "waiting", "admitted", "ended"]
    admitted = rows[3]
    assert admitted[1] == "patient"
    assert admitted[2] == str(seeded.users["doctor"])
    assert stamps is not None
    assert stamps[0] is not None
    assert stamps[1] is not None
    assert audits is not None
    assert audits[0] == 5
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{base}/consultations/{cid}/join-token", json={"role": "doctor"}, headers=doctor)
        assert r.status_code == 403  # ended


@pytest.mark.browser
async def test_patient_page_works_under_the_app_csp(app_server: tuple[LiveServer, Seeded], browser: Any) -> None:
    server, seeded = app_server
    doctor = {"Authorization": f"Bearer {login(server.url, 'm-doctor')}"}
    patient = {"Authorization": f"Bearer {login(server.url, 'm-patient')}"}
    base = f"{server.url}/api/v1/patients/{seeded.p1}"
    async with httpx.AsyncClient() as http:
        await http.post(f"{base}/consents", json={"purpose": "teleconsultation", "granted": True}, headers=patient)
        cid = (await http.post(f"{base}/consultations", json={}, headers=doctor)).json()["id"]
        r = await http.post(f"{base}/consultations/{cid}/join-token", json={"role": "patient"}, headers=patient)
        page_path = r.json()["page_path"]
        head = await http.get(f"{server.url}/consult/patient")
    assert "default-src 'self'" in head.headers["content-security-policy"]
    page = await browser.new_page()
    violations: list[str] = []
    page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
    await page.goto(f"{server.url}{page_path}")
    status = ""
    for _ in range(300):  # poll with evaluate: wait_for_function would need 'unsafe-eval', which the CSP forbids
        status = await page.evaluate("() => window.tbib ? window.tbib.state.status : ''")
        if status.startswith("waiting"):
            break
        await asyncio.sleep(0.05)
    assert status.startswith("waiting")
    assert violations == []
    await page.close()
