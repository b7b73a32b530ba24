"""An aiortc "doctor" for tests and the call benchmark: joins as the doctor, admits the patient seat, and offers.

Like the browser doctor it offers and creates the ``vitals`` data channel; unlike a browser it cannot trickle, so its
offer carries all candidates and is followed by ``candidate: null``. Times are ``time.perf_counter()`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from aiortc.mediastreams import MediaStreamError
from websockets.asyncio.client import ClientConnection, connect

from gateway_agent.consult import rtc_configuration
from teleconsult.errors import SignalingError


@dataclass(slots=True)
class CallMetrics:
    """One call as the doctor saw it."""

    clicked_at: float
    connected_at: float | None = None
    first_frame_at: float | None = None
    frames: int = 0
    vitals: list[dict[str, Any]] = field(default_factory=list)
    vitals_latency_ms: list[float] = field(default_factory=list)
    vitals_open_at: datetime | None = None
    """Wall clock when the vitals channel opened on the doctor's side."""
    fresh_vitals_latency_ms: list[float] = field(default_factory=list)
    """Latency of readings taken after the channel opened (earlier ones were queued by the agent)."""
    fresh_vitals_event: asyncio.Event = field(default_factory=asyncio.Event)
    first_frame_event: asyncio.Event = field(default_factory=asyncio.Event)
    first_vitals_event: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def first_frame_ms(self) -> float | None:
        """Click to first decoded remote video frame."""
        return None if self.first_frame_at is None else (self.first_frame_at - self.clicked_at) * 1000


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class AiortcDoctor:
    """The doctor's side of a consultation, in aiortc."""

    def __init__(
        self,
        signaling_url: str,
        token: str,
        *,
        send_video: bool = True,
        auto_admit: bool = True,
        ice_servers: list[dict[str, Any]] | None = None,
        relay_only: bool = False,
    ) -> None:
        self.url = signaling_url
        self.token = token
        self.ice_servers = ice_servers or []
        """Browser-shaped ``iceServers`` (default none: loopback host candidates only)."""
        self.relay_only = relay_only
        self.send_video = send_video
        self.auto_admit = auto_admit
        self.pc: RTCPeerConnection | None = None
        self.joined: dict[str, Any] | None = None
        self.peers: dict[str, str] = {}
        self.peer_joined = asyncio.Event()
        self.errors: list[dict[str, Any]] = []
        self._ws: ClientConnection | None = None
        self._seq = 0
        self._reader: asyncio.Task[None] | None = None
        self._answer: asyncio.Future[str] | None = None
        self._joined = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> AiortcDoctor:
        self._ws = await connect(self.url)
        self._reader = asyncio.create_task(self._read())
        await self._send("join", token=self.token)
        await asyncio.wait_for(self._joined.wait(), 10)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.hangup()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._send("bye", reason="doctor left")
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def _send(self, type_: str, **fields: Any) -> None:
        assert self._ws is not None
        self._seq += 1
        await self._ws.send(json.dumps({"v": 1, "seq": self._seq, "type": type_, **fields}))

    async def _read(self) -> None:
        assert self._ws is not None
        async for raw in self._ws:
            frame = json.loads(raw)
            kind = frame["type"]
            if kind == "joined":
                self.joined = frame
                for p in frame["peers"]:
                    self.peers[p["seat"]] = p["role"]
                    self.peer_joined.set()
                self._joined.set()
            elif kind == "lobby" and self.auto_admit:
                for w in frame["waiting"]:
                    await self._send("admit", seat=w["seat"])
            elif kind == "peer-joined":
                self.peers[frame["seat"]] = frame["role"]
                self.peer_joined.set()
            elif kind == "answer" and self._answer is not None and not self._answer.done():
                self._answer.set_result(frame["sdp"])
            elif kind == "error":
                self.errors.append(frame)

    async def call(self, peer: str = "patient", answer_timeout_s: float = 10.0) -> CallMetrics:
        """Click "call": offer to ``peer``; returns once the answer is applied (metrics keep filling in)."""
        await self.hangup()
        metrics = CallMetrics(clicked_at=time.perf_counter())
        assert self.joined is not None
        pc = RTCPeerConnection(rtc_configuration(self.ice_servers, "relay" if self.relay_only else "all"))
        self.pc = pc
        if self.send_video:
            pc.addTrack(VideoStreamTrack())
        else:
            pc.addTransceiver("video", direction="recvonly")
        channel = pc.createDataChannel("vitals")

        @channel.on("message")
        def _vitals(message: str) -> None:
            received = datetime.now(UTC)
            msg = json.loads(message)
            metrics.vitals.append(msg)
            measured = _parse_time(msg["measured_at"])
            latency = (received - measured).total_seconds() * 1000
            metrics.vitals_latency_ms.append(latency)
            metrics.first_vitals_event.set()
            if metrics.vitals_open_at is not None and measured >= metrics.vitals_open_at:
                metrics.fresh_vitals_latency_ms.append(latency)
                metrics.fresh_vitals_event.set()

        @channel.on("open")
        def _open() -> None:
            metrics.vitals_open_at = datetime.now(UTC)

        @pc.on("connectionstatechange")
        def _state() -> None:
            if pc.connectionState == "connected" and metrics.connected_at is None:
                metrics.connected_at = time.perf_counter()

        @pc.on("track")
        def _track(track: Any) -> None:
            if track.kind == "video":
                task = asyncio.create_task(self._consume(track, metrics))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

        self._answer = asyncio.get_running_loop().create_future()
        await pc.setLocalDescription(await pc.createOffer())
        await self._send("offer", to=peer, sdp=pc.localDescription.sdp)
        await self._send("candidate", to=peer, candidate=None)
        try:
            sdp = await asyncio.wait_for(self._answer, answer_timeout_s)
        except TimeoutError as exc:
            raise SignalingError(f"no answer from {peer} within {answer_timeout_s} s", code="timeout") from exc
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        return metrics

    @staticmethod
    async def _consume(track: Any, metrics: CallMetrics) -> None:
        while True:
            try:
                await track.recv()
            except MediaStreamError:
                return
            if metrics.first_frame_at is None:
                metrics.first_frame_at = time.perf_counter()
                metrics.first_frame_event.set()
            metrics.frames += 1

    async def hangup(self) -> None:
        """Close the current peer connection (bounded)."""
        pc, self.pc = self.pc, None
        for task in list(self._tasks):
            task.cancel()
        if pc is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pc.close(), 5)
