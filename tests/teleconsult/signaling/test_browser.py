"""Real browser: headless Debian Chromium (fake camera) as the doctor, the aiortc agent or a browser as the patient."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway_agent.consult import ConsultAgent, ConsultConfig, VitalReading
from teleconsult.signaling.tokens import Role

from .conftest import Server

pytestmark = pytest.mark.browser


async def wait_for(page: Any, expression: str, timeout_ms: int = 15_000) -> Any:
    handle = await page.wait_for_function(expression, timeout=timeout_ms)
    return await handle.json_value()


async def test_browser_doctor_sees_agent_video_and_vitals(signaling_server: Server, browser: Any) -> None:
    queue: asyncio.Queue[VitalReading] = asyncio.Queue()

    async def readings() -> AsyncIterator[VitalReading]:
        while True:
            yield await queue.get()

    agent = ConsultAgent(
        ConsultConfig(server=signaling_server.ws, token=signaling_server.token(Role.AGENT, "gw-1"), camera=None),
        readings(),
    )
    run = asyncio.create_task(agent.run())
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    token = signaling_server.token(Role.DOCTOR, "dr-1")
    await page.goto(f"{signaling_server.base}/consult/doctor#token={token}&autoadmit=1")
    await wait_for(page, "window.tbib && window.tbib.state.peers.patient && window.tbib.state.peers.patient.role")
    await page.evaluate("window.tbib.startCall('patient')")
    first_frame_ms = await wait_for(page, "window.tbib.state.calls[0].firstFrameMs")
    await wait_for(page, "window.tbib.state.calls[0].connectedMs")
    await wait_for(page, "window.tbib.state.calls[0].vitalsOpenAt")
    await queue.put(VitalReading("spo2", 96.0, "%", datetime.now(UTC)))
    vitals = await wait_for(page, "window.tbib.state.calls[0].firstVitals")
    assert (vitals["metric"], vitals["value"], vitals["unit"]) == ("spo2", 96, "%")
    assert 0 <= vitals["latencyMs"] < 2000
    assert 0 < first_frame_ms < 10_000
    for _ in range(100):  # the agent decodes the browser's fake camera too
        if agent.stats.remote_video_frames > 0:
            break
        await asyncio.sleep(0.05)
    assert agent.stats.remote_video_frames > 0
    state = await page.evaluate("window.tbib.state")
    assert state["errors"] == []
    assert errors == []
    await page.close()
    await agent.stop()
    assert await asyncio.wait_for(run, 10) == "stopped"


async def test_patient_browser_waits_is_admitted_and_talks_to_the_doctor_browser(
    signaling_server: Server, browser: Any
) -> None:
    ctx_doctor = await browser.new_context()
    ctx_patient = await browser.new_context()
    doctor = await ctx_doctor.new_page()
    patient = await ctx_patient.new_page()
    p_token = signaling_server.token(Role.PATIENT, "pat-1", cid="c-browser")
    d_token = signaling_server.token(Role.DOCTOR, "dr-1", cid="c-browser")
    await patient.goto(f"{signaling_server.base}/consult/patient#token={p_token}")
    await wait_for(patient, "window.tbib && window.tbib.state.status.startsWith('waiting')")
    await doctor.goto(f"{signaling_server.base}/consult/doctor#token={d_token}")
    await wait_for(doctor, "window.tbib.state.waiting.length === 1")
    await doctor.click("text=Admit patient")
    await wait_for(patient, "window.tbib.state.status.startsWith('connected')")
    await wait_for(doctor, "window.tbib.state.peers.patient")
    await doctor.evaluate("window.tbib.startCall('patient')")
    first_frame_ms = await wait_for(doctor, "window.tbib.state.calls[0].firstFrameMs")
    assert first_frame_ms > 0
    await wait_for(patient, "window.tbib.state.remoteTracks >= 1 && window.tbib.state.connection === 'connected'")
    assert await patient.evaluate("window.tbib.state.errors") == []
    assert await doctor.evaluate("window.tbib.state.errors") == []
    await ctx_doctor.close()
    await ctx_patient.close()


async def test_agent_renegotiate_request_gets_a_fresh_call_from_the_browser(
    signaling_server: Server, browser: Any
) -> None:
    agent = ConsultAgent(
        ConsultConfig(
            server=signaling_server.ws, token=signaling_server.token(Role.AGENT, "gw-1", cid="c-reneg"), camera=None
        )
    )
    run = asyncio.create_task(agent.run())
    page = await browser.new_page()
    token = signaling_server.token(Role.DOCTOR, "dr-1", cid="c-reneg")
    await page.goto(f"{signaling_server.base}/consult/doctor#token={token}&autoadmit=1&autocall=1&media=none")
    await wait_for(page, "window.tbib.state.calls.length === 1 && window.tbib.state.calls[0].firstFrameMs")
    await agent._send("renegotiate-request", reason="test")  # what the agent sends after a reconnect or ICE failure
    second = await wait_for(page, "window.tbib.state.calls.length === 2 && window.tbib.state.calls[1].firstFrameMs")
    assert second > 0
    assert agent.stats.offers == 2
    await page.close()
    await agent.stop()
    assert await asyncio.wait_for(run, 10) == "stopped"


async def test_doctor_socket_drop_rejoins_within_grace_and_calls_again(signaling_server: Server, browser: Any) -> None:
    agent_token = signaling_server.token(Role.AGENT, "gw-1", cid="c-drop")
    agent = ConsultAgent(ConsultConfig(server=signaling_server.ws, token=agent_token, camera=None))
    run = asyncio.create_task(agent.run())
    page = await browser.new_page()
    token = signaling_server.token(Role.DOCTOR, "dr-1", cid="c-drop")
    await page.goto(f"{signaling_server.base}/consult/doctor#token={token}&autoadmit=1&autocall=1&media=none")
    await wait_for(page, "window.tbib.state.calls.length === 1 && window.tbib.state.calls[0].firstFrameMs")
    await page.evaluate("window.tbib.signaling.ws.close(4999, 'network glitch')")  # not a final close code
    await wait_for(page, "window.tbib.state.resumed === 1")
    second = await wait_for(page, "window.tbib.state.calls.length === 2 && window.tbib.state.calls[1].firstFrameMs")
    assert second > 0
    assert await page.evaluate("window.tbib.state.errors") == []
    await page.close()
    await agent.stop()
    assert await asyncio.wait_for(run, 10) == "stopped"
