"""TURN that works: Chromium (doctor page) and the aiortc agent may use relay candidates only, so the call can only
meet through our coturn; it connects over TURN/UDP and over TURN/TCP with the REST credentials the signaling server
issued, video and vitals flow, and the selected pair says so on both sides."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway_agent.consult import ConsultAgent, ConsultConfig, VitalReading
from teleconsult.signaling.core import SignalingConfig
from teleconsult.signaling.service import SignalingService
from teleconsult.signaling.standalone import running
from teleconsult.signaling.tokens import Role
from teleconsult.signaling.turn import IceConfig
from tests.conftest import TurnServer

from .conftest import SERVER_KEY, Server

pytestmark = pytest.mark.browser


@pytest.fixture
async def turn_signaling(turn_server: TurnServer) -> AsyncIterator[Server]:
    ice = IceConfig(turn_urls=tuple(turn_server.urls()), turn_secret=turn_server.secret.encode())
    service = SignalingService(SignalingConfig(token_key=SERVER_KEY, ice=ice))
    async with running(service) as base:
        yield Server(base, service)


async def wait_for(page: Any, expression: str, timeout_ms: int = 40_000) -> Any:
    handle = await page.wait_for_function(expression, timeout=timeout_ms)
    return await handle.json_value()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_browser_and_agent_meet_only_over_turn(turn_signaling: Server, browser: Any, transport: str) -> None:
    queue: asyncio.Queue[VitalReading] = asyncio.Queue()

    async def readings() -> AsyncIterator[VitalReading]:
        while True:
            yield await queue.get()

    cid = f"c-turn-{transport}"
    config = ConsultConfig(
        server=turn_signaling.ws, token=turn_signaling.token(Role.AGENT, "gw-1", cid), camera=None,
        ice_transport_policy="relay", turn_transport=transport,  # type: ignore[arg-type]
    )  # fmt: skip
    agent = ConsultAgent(config, readings())
    run = asyncio.create_task(agent.run())
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    token = turn_signaling.token(Role.DOCTOR, "dr-1", cid)
    await page.goto(f"{turn_signaling.base}/consult/doctor#token={token}&autoadmit=1&relay=1&turn={transport}")
    await wait_for(page, "window.tbib && window.tbib.state.peers.patient && window.tbib.state.peers.patient.role")
    await page.evaluate("window.tbib.startCall('patient')")
    first_frame_ms = await wait_for(page, "window.tbib.state.calls[0].firstFrameMs")
    route = await wait_for(page, "window.tbib.state.calls[0].route")
    assert route["local"] == "relay", route
    assert route["relayProtocol"] == transport, route  # how the browser reached coturn
    assert agent.stats.ice_route == f"relay/{transport}"
    # no direct candidate was ever offered by the browser
    sdp = await page.evaluate("window.tbib.session.pc.localDescription.sdp")
    candidates = [ln for ln in sdp.splitlines() if ln.startswith("a=candidate:")]
    assert all(" typ relay " in ln for ln in candidates), candidates
    await wait_for(page, "window.tbib.state.calls[0].vitalsOpenAt")
    await queue.put(VitalReading("heart_rate", 81.0, "/min", datetime.now(UTC)))
    vitals = await wait_for(page, "window.tbib.state.calls[0].firstVitals")
    assert (vitals["metric"], vitals["value"]) == ("heart_rate", 81)
    assert 0 < first_frame_ms < 10_000
    assert await page.evaluate("window.tbib.state.errors") == []
    assert errors == []
    await page.close()
    await agent.stop()
    assert await asyncio.wait_for(run, 10) == "stopped"


async def test_relay_only_browser_without_turn_cannot_connect(signaling_server: Server, browser: Any) -> None:
    """The control: with no TURN in ``joined`` a relay-only browser gathers nothing, so the passing test above really
    went through coturn."""
    page = await browser.new_page()
    token = signaling_server.token(Role.DOCTOR, "dr-1", "c-noturn")
    await page.goto(f"{signaling_server.base}/consult/doctor#token={token}&relay=1&media=none")
    await wait_for(page, "window.tbib && window.tbib.state.joined")
    sdp = await page.evaluate(
        """async () => {
            const iceServers = window.tbib.state.joined.iceServers;
            const pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: "relay" });
            pc.addTransceiver("video", { direction: "recvonly" });
            await pc.setLocalDescription();
            await new Promise((resolve) => {
                if (pc.iceGatheringState === "complete") resolve();
                pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === "complete") resolve(); };
            });
            const sdp = pc.localDescription.sdp;
            pc.close();
            return sdp;
        }"""
    )
    assert "a=candidate:" not in sdp
    await page.close()
