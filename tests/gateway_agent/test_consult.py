"""The consult agent (aiortc) against an aiortc doctor through the real signaling server on uvicorn."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from aiortc import RTCPeerConnection

from gateway_agent.consult import (
    ConsultAgent,
    ConsultConfig,
    VitalReading,
    ice_route,
    prefer_turn_transport,
    rtc_configuration,
)
from gateway_agent.consult_media import ClockPatternTrack
from gateway_agent.errors import ConsultError
from teleconsult.bench.call_doctor import AiortcDoctor
from teleconsult.signaling.core import SignalingConfig
from teleconsult.signaling.service import SignalingService
from teleconsult.signaling.standalone import running
from teleconsult.signaling.tokens import Role, issue_token
from teleconsult.signaling.turn import IceConfig
from tests.conftest import TurnServer

KEY = b"consult-test-key-0123456789abcdef"


def tok(role: Role, sub: str, cid: str = "c-agent") -> str:
    return issue_token(key=KEY, consultation_id=cid, role=role, subject=sub, now=datetime.now(UTC))


@pytest.fixture
async def server() -> AsyncIterator[str]:
    async with running(SignalingService(SignalingConfig(token_key=KEY))) as base:
        yield base.replace("http://", "ws://") + "/ws/v1/signaling"


async def readings(queue: asyncio.Queue[VitalReading]) -> AsyncIterator[VitalReading]:
    while True:
        yield await queue.get()


async def test_agent_and_doctor_see_video_and_vitals(server: str) -> None:
    queue: asyncio.Queue[VitalReading] = asyncio.Queue()
    agent = ConsultAgent(
        ConsultConfig(server=server, token=tok(Role.AGENT, "gw-1"), camera=None, ice_servers=[]), readings(queue)
    )
    run = asyncio.create_task(agent.run())
    async with AiortcDoctor(server, tok(Role.DOCTOR, "dr-1")) as doctor:
        await asyncio.wait_for(doctor.peer_joined.wait(), 10)
        assert doctor.peers == {"patient": "agent"}
        metrics = await doctor.call("patient")
        await asyncio.wait_for(metrics.first_frame_event.wait(), 10)
        await queue.put(VitalReading("heart_rate", 72.0, "/min", datetime.now(UTC)))
        await queue.put(VitalReading("spo2", 97.0, "%", datetime.now(UTC)))
        await asyncio.wait_for(metrics.first_vitals_event.wait(), 10)
        for _ in range(500):
            if len(metrics.vitals) >= 2:
                break
            await asyncio.sleep(0.01)
        for _ in range(200):
            if agent.stats.remote_video_frames >= 3 and metrics.frames >= 3:
                break
            await asyncio.sleep(0.02)
    assert metrics.frames >= 3
    assert agent.stats.remote_video_frames >= 3  # the doctor's video decoded by the agent
    assert [(v["metric"], v["value"], v["unit"]) for v in metrics.vitals] == [
        ("heart_rate", 72.0, "/min"),
        ("spo2", 97.0, "%"),
    ]
    assert all(set(v) >= {"measured_at", "sent_at"} for v in metrics.vitals)
    assert all(0 <= ms < 2000 for ms in metrics.vitals_latency_ms)
    for _ in range(100):  # the doctor left (peer-left): the agent drops its peer connection and waits for a new call
        if agent.pc is None:
            break
        await asyncio.sleep(0.02)
    assert agent.pc is None
    await agent.stop()
    assert await asyncio.wait_for(run, 10) == "stopped"


async def test_second_offer_gets_a_fresh_connection(server: str) -> None:
    agent = ConsultAgent(ConsultConfig(server=server, token=tok(Role.AGENT, "gw-1", "c2"), camera=None, ice_servers=[]))
    run = asyncio.create_task(agent.run())
    async with AiortcDoctor(server, tok(Role.DOCTOR, "dr-1", "c2")) as doctor:
        await asyncio.wait_for(doctor.peer_joined.wait(), 10)
        for _ in range(2):
            metrics = await doctor.call("patient")
            await asyncio.wait_for(metrics.first_frame_event.wait(), 10)
        assert agent.stats.offers == 2
        await agent.stop()
    assert await asyncio.wait_for(run, 10) == "stopped"


async def test_denied_agent_raises_and_frees_media(server: str) -> None:
    agent = ConsultAgent(ConsultConfig(server=server, token=tok(Role.AGENT, "gw-1", "c3"), camera=None, ice_servers=[]))
    async with AiortcDoctor(server, tok(Role.DOCTOR, "dr-1", "c3"), auto_admit=False) as doctor:
        run = asyncio.create_task(agent.run())
        for _ in range(100):
            if agent._media is not None:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        await doctor._send("deny", seat="patient", reason="not now")
        with pytest.raises(ConsultError) as info:
            await asyncio.wait_for(run, 10)
    assert info.value.code == "denied"
    assert agent._media is not None
    assert agent._media.video is not None
    assert agent._media.video.readyState == "ended"


async def test_bad_token_is_a_consult_error(server: str) -> None:
    agent = ConsultAgent(ConsultConfig(server=server, token="forged", camera=None, ice_servers=[]))
    with pytest.raises(ConsultError) as info:
        await asyncio.wait_for(agent.run(), 10)
    assert info.value.code == "bad-token"


def test_test_pattern_draws_the_clock() -> None:
    track = ClockPatternTrack()
    a = track.draw(datetime(2026, 1, 1, 10, 0, 0, tzinfo=UTC), 0)
    b = track.draw(datetime(2026, 1, 1, 10, 0, 1, tzinfo=UTC), 0)
    assert a.shape == (720, 640)
    assert (a != b).any()
    assert (a[400:480] == 235).any()


async def test_signaling_drop_reclaims_the_seat_and_media_keeps_flowing(server: str) -> None:
    agent = ConsultAgent(ConsultConfig(server=server, token=tok(Role.AGENT, "gw-1", "c5"), camera=None, ice_servers=[]))
    run = asyncio.create_task(agent.run())
    async with AiortcDoctor(server, tok(Role.DOCTOR, "dr-1", "c5")) as doctor:
        await asyncio.wait_for(doctor.peer_joined.wait(), 10)
        metrics = await doctor.call("patient")
        await asyncio.wait_for(metrics.first_frame_event.wait(), 10)
        assert agent._ws is not None
        await agent._ws.close(code=4999, reason="network glitch")  # the signaling link drops, not the media
        for _ in range(200):
            if agent.stats.resumed:
                break
            await asyncio.sleep(0.02)
        assert agent.stats.resumed == 1
        assert agent.stats.joins == 2
        frames = metrics.frames
        await asyncio.sleep(0.5)
        assert metrics.frames > frames  # peer to peer: the call never stopped
        assert agent.stats.offers == 1  # connected: no renegotiation was needed
        await agent.stop()
    assert await asyncio.wait_for(run, 10) == "stopped"


async def test_refused_rejoin_keeps_a_connected_call(server: str) -> None:
    from datetime import timedelta

    short = issue_token(
        key=KEY, consultation_id="c6", role=Role.AGENT, subject="gw-1", now=datetime.now(UTC), ttl=timedelta(seconds=2)
    )
    agent = ConsultAgent(ConsultConfig(server=server, token=short, camera=None, ice_servers=[]))
    run = asyncio.create_task(agent.run())
    async with AiortcDoctor(server, tok(Role.DOCTOR, "dr-1", "c6")) as doctor:
        await asyncio.wait_for(doctor.peer_joined.wait(), 10)
        metrics = await doctor.call("patient")
        await asyncio.wait_for(metrics.first_frame_event.wait(), 10)
        await asyncio.sleep(2.1)  # the join token has expired
        assert agent._ws is not None
        await agent._ws.close(code=4999)
        for _ in range(100):
            if "token-expired" in agent.stats.errors:
                break
            await asyncio.sleep(0.02)
        frames = metrics.frames
        await asyncio.sleep(0.5)
        assert metrics.frames > frames  # still streaming without signaling
        assert not run.done()
        await doctor.hangup()  # the call ends: the agent ends too
        assert (await asyncio.wait_for(run, 30)).startswith("signaling lost")


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_call_over_turn_relay_only(turn_server: TurnServer, transport: str) -> None:
    """Both peers may use relay candidates only: the call connects through our coturn, with the credentials the
    signaling server issued in ``joined`` (REST API, the same shared secret), over TURN/UDP and over TURN/TCP."""
    ice = IceConfig(turn_urls=tuple(turn_server.urls()), turn_secret=turn_server.secret.encode())
    async with running(SignalingService(SignalingConfig(token_key=KEY, ice=ice))) as base:
        url = base.replace("http://", "ws://") + "/ws/v1/signaling"
        queue: asyncio.Queue[VitalReading] = asyncio.Queue()
        config = ConsultConfig(
            server=url, token=tok(Role.AGENT, "gw-1", f"c-turn-{transport}"), camera=None,
            ice_transport_policy="relay", turn_transport=transport,  # type: ignore[arg-type]
        )  # fmt: skip
        agent = ConsultAgent(config, readings(queue))
        run = asyncio.create_task(agent.run())
        async with AiortcDoctor(url, tok(Role.DOCTOR, "dr-1", f"c-turn-{transport}"), relay_only=True) as doctor:
            assert doctor.joined is not None
            servers = doctor.joined["iceServers"]
            assert servers[0]["urls"] == turn_server.urls()
            assert servers[0]["username"].endswith(":dr-1")
            doctor.ice_servers = prefer_turn_transport(servers, transport)
            await asyncio.wait_for(doctor.peer_joined.wait(), 10)
            metrics = await doctor.call("patient")
            await asyncio.wait_for(metrics.first_frame_event.wait(), 30)  # generous: CI boxes run loaded
            await queue.put(VitalReading("spo2", 95.0, "%", datetime.now(UTC)))
            await asyncio.wait_for(metrics.first_vitals_event.wait(), 30)
            assert doctor.pc is not None
            assert ice_route(doctor.pc) == f"relay/{transport}"
            assert agent.stats.ice_route == f"relay/{transport}"
            offer_lines = [ln for ln in (doctor.pc.localDescription.sdp or "").splitlines() if "candidate:" in ln]
            assert offer_lines
            assert all(" typ relay " in ln for ln in offer_lines)  # no host candidate offered at all
        await agent.stop()
        assert await asyncio.wait_for(run, 10) == "stopped"


async def test_wrong_turn_secret_gathers_no_relay_candidate(turn_server: TurnServer) -> None:
    """coturn checks the REST credentials: with another secret the allocation is refused and, relay-only, nothing
    is gathered (the doctor's offer has no candidate)."""
    from teleconsult.signaling.turn import ice_servers

    bad = ice_servers(
        IceConfig(turn_urls=tuple(turn_server.urls("udp")), turn_secret=b"not-the-secret"), "dr-x", datetime.now(UTC)
    )
    pc = RTCPeerConnection(rtc_configuration(bad, "relay"))
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    assert "typ relay" not in pc.localDescription.sdp
    await pc.close()
    good = ice_servers(
        IceConfig(turn_urls=tuple(turn_server.urls("udp")), turn_secret=turn_server.secret.encode()),
        "dr-x",
        datetime.now(UTC),
    )
    pc = RTCPeerConnection(rtc_configuration(good, "relay"))
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    assert "typ relay" in pc.localDescription.sdp
    await pc.close()


def test_prefer_turn_transport_moves_that_url_first() -> None:
    servers = [
        {"urls": ["stun:s.example:3478"]},
        {"urls": ["turn:t.example:3478?transport=udp", "turn:t.example:3478?transport=tcp"], "username": "u"},
    ]
    tcp = prefer_turn_transport(servers, "tcp")
    assert tcp[0] == {
        "urls": ["turn:t.example:3478?transport=tcp", "turn:t.example:3478?transport=udp"],
        "username": "u",
    }
    assert tcp[1] == {"urls": ["stun:s.example:3478"]}
    assert prefer_turn_transport(servers, None) is servers
    assert prefer_turn_transport(servers, "udp")[0]["urls"][0].endswith("transport=udp")
