"""Calls started from the dashboard, on real engines: PostgreSQL, Mosquitto, uvicorn (the whole app), an in-process
gateway (simulated BLE heart-rate strap, MQTT publisher, CallRunner) and aiortc peers.

click (POST .../call) -> signed command over MQTT -> the gateway's agent joins -> the doctor admits and calls -> first
decoded frame and a reading of the gateway's own strap on the vitals channel; every state reaches the doctor's
/ws/v1/patients feed. Then: a gateway without the server's key refuses the command and the doctor is told why; a
stopped gateway is reported offline without sending anything.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from websockets.asyncio.client import connect

from gateway_agent.agent import Gateway
from gateway_agent.config import load_config
from gateway_agent.simulate import simulate
from teleconsult.api.app import create_app
from teleconsult.bench.call_doctor import AiortcDoctor
from teleconsult.calls.command import CommandSigner
from teleconsult.store.migrate import upgrade
from tests.teleconsult.api.helpers import PASSWORD, LiveServer, Seeded, login, make_settings, seed

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tsdb_dsn: str, mqtt_url: str) -> Iterator[tuple[LiveServer, Seeded]]:
    upgrade(tsdb_dsn)
    seeded = seed(tsdb_dsn, prefix="c")
    with psycopg.connect(tsdb_dsn, autocommit=True) as conn:
        conn.execute("insert into consents (patient_id, purpose, granted) values (%s, 'teleconsultation', true)",
                     (seeded.p1,))  # fmt: skip
    settings = make_settings(seeded.dsn, mqtt_url=mqtt_url, cookie_secure=False, ext={"calls": {"ack_timeout_s": 4}})
    with LiveServer(create_app(settings)) as server:
        service = server.config.app.state.calls
        deadline = time.monotonic() + 10
        while not service.subscribed.is_set():
            assert time.monotonic() < deadline, "call service never subscribed"
            time.sleep(0.05)
        yield server, seeded


def enrol_gateway(seeded: Seeded) -> str:
    gw = f"gw-call-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(seeded.dsn, autocommit=True) as conn:
        conn.execute("insert into gateways (id, patient_id, last_seen_at) values (%s, %s, now())", (gw, seeded.p1))
    return gw


def make_gateway(tmp_path: Path, mqtt_url: str, gw: str, keys: list[str]) -> Gateway:
    sim = simulate(1, kinds=["heart_rate"])
    settings = load_config(None, overrides={
        "gateway_id": gw, "broker_url": mqtt_url, "status_file": None,
        "outbox": {"path": str(tmp_path / f"{gw}.sqlite3")}, "receipts": {"enabled": False},
        "devices": [d.model_dump() for d in sim.devices],
        "commands": {"server_keys": keys, "camera": None, "state_file": str(tmp_path / f"{gw}.seen.json")},
    })  # fmt: skip
    return Gateway(settings, scanner_kwargs=sim.scanner_kwargs, client_kwargs=sim.client_kwargs, clock=sim.clock,
                   status_interval=0.2, spot_recheck_s=0.5)  # fmt: skip


class Feed:
    """The doctor's /ws/v1/patients feed: every call frame, in order."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    async def until(self, call_id: str, state: str, wait_s: float = 20.0) -> dict[str, Any]:
        async with asyncio.timeout(wait_s):
            while True:
                for f in self.calls:
                    if f["call_id"] == call_id and f["state"] == state:
                        return f
                self.changed.clear()
                await self.changed.wait()


async def _read(ws: Any, feed: Feed) -> None:
    async for raw in ws:
        frame = json.loads(raw)
        if frame.get("type") == "call":
            feed.calls.append(frame)
            feed.changed.set()


async def open_feed(url: str, token: str) -> AsyncIterator[Feed]:
    feed = Feed()
    async with connect(f"{url.replace('http', 'ws', 1)}/ws/v1/patients?token={token}") as ws:
        assert json.loads(await ws.recv())["type"] == "hello"
        task = asyncio.create_task(_read(ws, feed))
        try:
            yield feed
        finally:
            task.cancel()


async def start(gateway: Gateway) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop))
    async with asyncio.timeout(10):
        await gateway.publisher.wait_connected()
    return stop, task


async def consultation(http: httpx.AsyncClient, base: str, headers: dict[str, str]) -> tuple[str, str]:
    r = await http.post(f"{base}/consultations", json={"reason": "call test"}, headers=headers)
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    r = await http.post(f"{base}/consultations/{cid}/join-token", json={"role": "doctor"}, headers=headers)
    assert r.status_code == 200, r.text
    return cid, r.json()["token"]


async def wait_online(server: LiveServer, gw: str, state: str = "online") -> None:
    async with asyncio.timeout(10):
        while server.config.app.state.calls.presence.get(gw) != state:  # noqa: ASYNC110 (another thread sets it)
            await asyncio.sleep(0.02)


async def test_click_to_first_frame_and_gateway_vitals(stack: tuple[LiveServer, Seeded], tmp_path: Path,
                                                       mqtt_url: str) -> None:  # fmt: skip
    server, seeded = stack
    token = login(server.url, "c-doctor")
    headers = {"Authorization": f"Bearer {token}"}
    base = f"{server.url}/api/v1/patients/{seeded.p1}"
    async with httpx.AsyncClient() as http:
        key = (await http.get(f"{server.url}/api/v1/calls/command-key")).json()
        assert key["public_key"] == CommandSigner.from_secret(make_settings("x").secret_key.get_secret_value()
                                                              ).public_key_text  # fmt: skip
        gw = enrol_gateway(seeded)
        gateway = make_gateway(tmp_path, mqtt_url, gw, [key["public_key"]])
        stop, task = await start(gateway)
        await wait_online(server, gw)
        cid, doctor_token = await consultation(http, base, headers)
        ws_url = server.url.replace("http://", "ws://") + "/ws/v1/signaling"
        async for feed in open_feed(server.url, token):
            async with AiortcDoctor(ws_url, doctor_token) as doctor:
                clicked = time.perf_counter()
                r = await http.post(f"{base}/consultations/{cid}/call", headers=headers)
                assert r.status_code == 200, r.text
                out = r.json()
                assert (out["state"], out["gateway_id"]) == ("ringing", gw)
                await asyncio.wait_for(doctor.peer_joined.wait(), 20)
                joined_ms = (time.perf_counter() - clicked) * 1000
                await feed.until(out["call_id"], "joined")
                m = await doctor.call("patient")
                await asyncio.wait_for(m.first_frame_event.wait(), 15)
                await asyncio.wait_for(m.first_vitals_event.wait(), 15)
                await feed.until(out["call_id"], "connected")
                states = [f["state"] for f in feed.calls if f["call_id"] == out["call_id"]]
                assert states[0] == "ringing", states
                order = [states.index(s) for s in ("joining", "waiting", "joined", "connected")]
                assert order == sorted(order), states
                assert joined_ms < 3000, joined_ms
                assert "heart_rate" in {v.get("metric") for v in m.vitals}  # the gateway's own strap
                await doctor.hangup()
            assert gateway.calls is not None
            assert gateway.calls.stats.accepted == 1
            stop.set()
            await asyncio.wait_for(task, 20)
            ended = await feed.until(out["call_id"], "ended")
            assert ended["gateway_id"] == gw


async def test_refused_command_and_offline_gateway(stack: tuple[LiveServer, Seeded], tmp_path: Path,
                                                   mqtt_url: str) -> None:  # fmt: skip
    server, seeded = stack
    token = login(server.url, "c-doctor")
    headers = {"Authorization": f"Bearer {token}"}
    base = f"{server.url}/api/v1/patients/{seeded.p1}"
    other_key = CommandSigner(b"\x07" * 32).public_key_text  # not the server's key
    async with httpx.AsyncClient() as http:
        gw = enrol_gateway(seeded)
        gateway = make_gateway(tmp_path, mqtt_url, gw, [other_key])
        stop, task = await start(gateway)
        await wait_online(server, gw)
        cid, _ = await consultation(http, base, headers)
        async for feed in open_feed(server.url, token):
            out = (await http.post(f"{base}/consultations/{cid}/call", headers=headers)).json()
            assert out["state"] == "ringing"
            failed = await feed.until(out["call_id"], "failed")
            assert failed["reason"] == "command refused: unknown-key"
            assert gateway.calls is not None
            assert gateway.calls.verifier.rejected == {"unknown-key": 1}
            assert gateway.calls.stats.started == 0
            stop.set()
            await asyncio.wait_for(task, 20)  # clean stop: retained "offline"
            await wait_online(server, gw, "offline")
            out = (await http.post(f"{base}/consultations/{cid}/call", headers=headers)).json()
            assert (out["state"], out["reason"]) == ("offline", "gateway-offline")
            assert (await feed.until(out["call_id"], "offline"))["reason"] == "gateway-offline"


@pytest.mark.browser
async def test_appeler_button_shows_the_states_in_french_and_english(
    stack: tuple[LiveServer, Seeded], tmp_path: Path, mqtt_url: str, browser: Any
) -> None:
    server, seeded = stack
    async with httpx.AsyncClient() as http:
        key = (await http.get(f"{server.url}/api/v1/calls/command-key")).json()["public_key"]
    gw = enrol_gateway(seeded)
    gateway = make_gateway(tmp_path, mqtt_url, gw, [key])
    stop, task = await start(gateway)
    await wait_online(server, gw)
    page = await (await browser.new_context(locale="fr-FR")).new_page()
    await page.goto(f"{server.url}/")
    await page.fill("#username", "c-doctor")
    await page.fill("#password", PASSWORD)
    await page.press("#password", "Enter")
    await page.wait_for_selector("table.patients tbody tr")
    await page.goto(f"{server.url}/#/patient/{seeded.p1}")  # "Appeler" on the patient page opens the call and rings
    ring = page.locator("#call-patient:not([disabled])")
    await ring.wait_for(timeout=20_000)
    assert await ring.text_content() == "Appeler"
    await ring.click()
    await page.wait_for_selector("#gateway-call[data-state=connected]", timeout=20_000)
    assert await page.text_content("#call-btn") == "Appeler"
    assert await page.text_content("#gateway-call") == "Connecté"
    history = await page.evaluate("window.tbib.view.gwCall.history")
    states = [h["state"] for h in history]
    assert states[:2] == ["sending", "ringing"], states
    assert "joined" in states, states
    await page.wait_for_function("window.tbib.view.metrics.firstFrameMs !== null", timeout=20_000)
    shown = await page.evaluate("window.tbib.view.gwCall.history.map(h => h.state)")
    assert shown.index("joined") < shown.index("connected")
    stop.set()
    await asyncio.wait_for(task, 20)
    await wait_online(server, gw, "offline")
    # English, and the gateway is offline now
    await page.goto(f"{server.url}/#/patients")
    await page.select_option("#lang", "en")
    await page.goto(f"{server.url}/#/consult/{seeded.p1}")
    button = page.locator("#call-btn:not([disabled])")
    await button.wait_for(timeout=20_000)
    assert await button.text_content() == "Call"
    await button.click()
    await page.wait_for_selector("#gateway-call[data-state=offline]", timeout=10_000)
    assert await page.text_content("#gateway-call") == "The gateway is offline (not connected right now)"
    await page.select_option("#lang", "fr")
