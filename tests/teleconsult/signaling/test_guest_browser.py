"""A guest of an invitation link, in Chromium through the real app: the doctor invites an interpreter, the guest page
redeems the link and waits in the lobby (the doctor sees the guest's name), the doctor admits them; the link then no
longer works in a new browser."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from teleconsult.api.app import create_app
from teleconsult.store.migrate import upgrade
from tests.teleconsult.api.helpers import LiveServer, Seeded, login, make_settings, seed

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def app_server(plain_dsn: str) -> Iterator[tuple[LiveServer, Seeded]]:
    upgrade(plain_dsn)
    seeded = seed(plain_dsn)
    with LiveServer(create_app(make_settings(seeded.dsn))) as server:
        yield server, seeded


async def frames_until(ws: Any, kind: str) -> dict[str, Any]:
    while True:
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 15))
        if frame["type"] == kind:
            return frame


async def status_of(page: Any, prefix: str) -> str:
    status = ""
    for _ in range(300):  # evaluate, not wait_for_function: the CSP forbids 'unsafe-eval'
        status = await page.evaluate("() => window.tbib ? window.tbib.state.status : ''")
        if status.startswith(prefix):
            break
        await asyncio.sleep(0.05)
    return str(status)


async def test_guest_redeems_waits_and_is_admitted(app_server: tuple[LiveServer, Seeded], browser: Any) -> None:
    server, seeded = app_server
    doctor = {"Authorization": f"Bearer {login(server.url, 'm-doctor')}"}
    patient = {"Authorization": f"Bearer {login(server.url, 'm-patient')}"}
    base = f"{server.url}/api/v1/patients/{seeded.p1}"
    async with httpx.AsyncClient() as http:
        await http.post(f"{base}/consents", json={"purpose": "teleconsultation", "granted": True}, headers=patient)
        cid = (await http.post(f"{base}/consultations", json={}, headers=doctor)).json()["id"]
        r = await http.post(f"{base}/consultations/{cid}/invites", json={"role": "interpreter", "name": "Youssef"},
                            headers=doctor)  # fmt: skip
        assert r.status_code == 201, r.text
        link = r.json()["link_path"]
        assert link.startswith("/consult/guest#invite=")
        tok = (
            await http.post(f"{base}/consultations/{cid}/join-token", json={"role": "doctor"}, headers=doctor)
        ).json()
    ws_url = server.url.replace("http://", "ws://") + "/ws/v1/signaling"
    async with connect(ws_url) as ws:
        await frames_until(ws, "hello")
        await ws.send(json.dumps({"v": 1, "seq": 1, "type": "join", "token": tok["token"]}))
        await frames_until(ws, "joined")
        page = await browser.new_page()
        await page.goto(f"{server.url}{link}")
        assert (await status_of(page, "en attente")).startswith("en attente")
        lobby = await frames_until(ws, "lobby")
        while not lobby["waiting"]:
            lobby = await frames_until(ws, "lobby")
        assert [(w["seat"], w["name"]) for w in lobby["waiting"]] == [("interpreter", "Youssef")]
        await ws.send(json.dumps({"v": 1, "seq": 2, "type": "admit", "seat": "interpreter"}))
        joined = await frames_until(ws, "peer-joined")
        assert (joined["seat"], joined["name"]) == ("interpreter", "Youssef")
        assert await status_of(page, "dans la consultation") == "dans la consultation"
        other = await browser.new_page()  # a second browser tab without the session storage: the link is used
        ctx = await browser.new_context()
        fresh = await ctx.new_page()
        await fresh.goto(f"{server.url}{link}")
        assert (await status_of(fresh, "lien déjà utilisé")).startswith("lien déjà utilisé")
        await ctx.close()
        await other.close()
        await page.close()
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{base}/consultations/{cid}/invites", headers=doctor)
    assert [i["status"] for i in r.json()] == ["used"]
