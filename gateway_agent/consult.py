"""The patient's consult agent (aiortc): joins a teleconsultation room and answers the doctor's offers.

Roles in negotiation (aiortc cannot trickle its own candidates, restart ICE or roll back): the doctor's side always
offers and trickles; the agent answers with all its gathered candidates in the SDP and, when it needs a new negotiation
(reconnected after a drop, connection failed), sends ``renegotiate-request``. An offer with new ICE credentials gets a
fresh ``RTCPeerConnection``.

The agent sends the camera (``/dev/video0`` through ``MediaPlayer``) or a synthetic 640x480 test pattern with a clock,
audio when a microphone is configured, receives the doctor's media, and streams live readings on the ``vitals`` data
channel the doctor opens. Each message is JSON ``{"type": "reading", "metric", "value", "unit", "measured_at",
"sent_at"}`` (ISO 8601 UTC). ``ice_servers=None`` uses the list from ``joined`` (our TURN first); pass ``[]`` to
gather host candidates only — never aiortc's default public STUN server.

TURN: aiortc uses only the first TURN URL of its list; ``turn_transport`` (``"udp"`` or ``"tcp"``) moves the URLs of
that transport first (TCP gets through networks that block UDP). ``ice_transport_policy="relay"`` gathers relay
candidates only (every packet goes through TURN). :func:`ice_route` says which path the connected call took.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from aiortc import RTCConfiguration, RTCIceCandidate, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from aiortc.sdp import candidate_from_sdp
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from gateway_agent.consult_media import FrameFanout, LocalMedia, open_media
from gateway_agent.errors import ConsultError

log = logging.getLogger(__name__)

VITALS_LABEL: Final = "vitals"
MAX_PENDING_READINGS: Final = 100
ANSWER_WAIT_S: Final = 1.5
"""An offer without candidates (a trickling browser) is answered once its first candidate arrived, or after this."""


@dataclass(frozen=True, slots=True)
class VitalReading:
    """One live reading for the doctor (the same reading that goes to MQTT)."""

    metric: str
    value: float
    unit: str
    measured_at: datetime


@dataclass(frozen=True, slots=True)
class ConsultConfig:
    """How the agent joins."""

    server: str
    """Signaling websocket URL, e.g. ``wss://tbib.example.org/ws/v1/signaling``."""
    token: str
    """Join token (role ``agent`` or ``patient``) issued by the API."""
    camera: str | None = "/dev/video0"
    """V4L2 device; when absent (or None) the test pattern is sent."""
    microphone: str | None = None
    """ALSA device (e.g. ``default``); None sends no audio."""
    ice_servers: list[dict[str, Any]] | None = None
    """None: use ``joined``'s list. ``[]``: host candidates only."""
    close_timeout: float = 5.0
    """Bound on ``RTCPeerConnection.close()``."""
    reconnect_attempts: int = 5
    """Signaling reconnects (within the seat's grace period) before giving up."""
    ice_transport_policy: Literal["all", "relay"] = "all"
    """``relay``: TURN relay candidates only (no direct path is even tried)."""
    turn_transport: Literal["udp", "tcp"] | None = None
    """Which TURN URL aiortc takes (it uses only the first): None keeps the server's order (UDP first)."""


@dataclass(slots=True)
class AgentStats:
    """What happened, with ``time.perf_counter()`` stamps (for tests and the benchmark)."""

    joins: int = 0
    resumed: int = 0
    offers: int = 0
    last_offer_at: float | None = None
    answer_sent_at: float | None = None
    connected_at: float | None = None
    first_remote_frame_at: float | None = None
    remote_video_frames: int = 0
    remote_audio_frames: int = 0
    vitals_sent: int = 0
    ice_route: str | None = None
    """The connected call's path (:func:`ice_route`): ``host``, ``srflx``, ``relay/udp`` or ``relay/tcp``."""
    errors: list[str] = field(default_factory=list)


def _bundle_tag(sdp: str) -> str | None:
    """The mid of the first m-line of the offer's BUNDLE group (its transport carries the whole call)."""
    for line in sdp.splitlines():
        if line.startswith("a=group:BUNDLE "):
            mids = line.split()[1:]
            return mids[0] if mids else None
    for line in sdp.splitlines():
        if line.startswith("a=mid:"):
            return line.split(":", 1)[1].strip()
    return None


def _ice_ufrag(sdp: str) -> str | None:
    for line in sdp.splitlines():
        if line.startswith("a=ice-ufrag:"):
            return line.split(":", 1)[1].strip()
    return None


def prefer_turn_transport(servers: list[dict[str, Any]], transport: str | None) -> list[dict[str, Any]]:
    """The servers with the TURN URLs of ``transport`` first (servers holding one first): aiortc takes the first."""
    if transport is None:
        return servers

    def wanted(url: str) -> bool:
        return url.startswith(("turn:", "turns:")) and (
            f"transport={transport}" in url or (transport == "tcp" and url.startswith("turns:"))
        )

    out = []
    for s in servers:
        urls = s.get("urls", [])
        urls = [urls] if isinstance(urls, str) else list(urls)
        out.append({**s, "urls": sorted(urls, key=lambda u: not wanted(u))})
    return sorted(out, key=lambda s: not any(wanted(u) for u in s["urls"]))


def rtc_configuration(servers: list[dict[str, Any]], policy: str = "all") -> RTCConfiguration:
    """Browser-shaped ``iceServers`` to aiortc's configuration (explicit list: no default STUN)."""
    ice = []
    for s in servers:
        urls = s.get("urls", [])
        ice.append(RTCIceServer(urls=urls, username=s.get("username"), credential=s.get("credential")))
    return RTCConfiguration(iceServers=ice, iceTransportPolicy=RTCIceTransportPolicy(policy))


def ice_route(pc: RTCPeerConnection) -> str | None:
    """The nominated path of a connected call: ``host``, ``srflx``, ``prflx``, or ``relay/udp`` / ``relay/tcp`` (our
    side's TURN transport). None before a pair is nominated. Reads aioice's connection behind aiortc's ICE transport."""
    transports = [t.receiver.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport)
    for dtls in transports:
        conn: Any = getattr(getattr(dtls, "transport", None), "_connection", None)
        pairs = list(getattr(conn, "_nominated", {}).values())
        if pairs:
            kind = str(pairs[0].local_candidate.type)
            return f"relay/{conn.turn_transport}" if kind == "relay" else kind
    return None


def reading_message(reading: VitalReading, now: datetime) -> str:
    """The JSON sent on the vitals channel."""
    return json.dumps(
        {
            "type": "reading",
            "metric": reading.metric,
            "value": reading.value,
            "unit": reading.unit,
            "measured_at": reading.measured_at.isoformat().replace("+00:00", "Z"),
            "sent_at": now.isoformat().replace("+00:00", "Z"),
        },
        separators=(",", ":"),
    )


class ConsultAgent:
    """One agent in one consultation. ``await run()`` returns the reason the call ended."""

    def __init__(
        self,
        config: ConsultConfig,
        readings: AsyncIterator[VitalReading] | None = None,
        *,
        on_state: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.on_state = on_state
        """Told ``waiting`` (in the lobby), ``joined`` (admitted) and ``connected`` (media path up); for progress
        reports (:mod:`gateway_agent.calls`)."""
        self.readings = readings
        self.stats = AgentStats()
        self.seat: str | None = None
        self.pc: RTCPeerConnection | None = None
        self._media: LocalMedia | None = None
        self._fanouts: dict[str, FrameFanout] = {}
        self._ws: ClientConnection | None = None
        self._seq = 0
        self._ice: list[dict[str, Any]] = list(config.ice_servers or [])
        self._remote_ufrag: str | None = None
        self._answer_to: tuple[str, RTCPeerConnection] | None = None
        self._answering = False
        self._bundle_mid: str | None = None
        self._early_candidates: list[RTCIceCandidate | None] = []
        self._peer: str | None = None
        self._channel: Any = None
        self._pending: collections.deque[VitalReading] = collections.deque(maxlen=MAX_PENDING_READINGS)
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self.joined = asyncio.Event()

    # ----- lifecycle -----------------------------------------------------------------------------------------------
    async def run(self) -> str:
        """Join, serve offers until the consultation ends or :meth:`stop`; always frees the camera."""
        self._media = open_media(camera=self.config.camera, microphone=self.config.microphone)
        try:
            if self.readings is not None:
                self._spawn(self._pump_readings(self.readings))
            return await self._signaling_loop()
        finally:
            await self._close_pc()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._media.stop()
            for fanout in self._fanouts.values():
                await fanout.aclose()

    async def stop(self) -> None:
        """Leave the room (``bye``) and end :meth:`run`."""
        self._stopping.set()
        if self._ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await self._send("bye", reason="agent stopped")
            await self._ws.close()

    def _report(self, state: str) -> None:
        if self.on_state is not None:
            try:
                self.on_state(state)
            except Exception:  # a progress report must never break the call
                log.exception("consult state callback failed")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ----- signaling -----------------------------------------------------------------------------------------------
    async def _send(self, type_: str, **fields: Any) -> None:
        assert self._ws is not None
        self._seq += 1
        await self._ws.send(json.dumps({"v": 1, "seq": self._seq, "type": type_, **fields}))

    async def _signaling_loop(self) -> str:
        failures = 0
        while not self._stopping.is_set():
            try:
                async with connect(self.config.server, open_timeout=10, max_size=256 * 1024) as ws:
                    self._ws, self._seq = ws, 0
                    await self._send("join", token=self.config.token)
                    failures = 0
                    async for raw in ws:
                        try:
                            reason = await self._on_frame(json.loads(raw))
                        except ConsultError as exc:
                            if self.stats.joins == 0 or not self._media_flowing():
                                raise
                            # A rejoin was refused (e.g. the token expired during a long call): keep the call.
                            return await self._media_only(f"signaling lost ({exc.code})")
                        if reason is not None:
                            return reason
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                log.warning("signaling connection failed: %s", exc)
            except InvalidURI as exc:
                raise ConsultError(f"bad signaling URL {self.config.server!r}: {exc}") from exc
            except ConnectionClosed as exc:
                log.info("signaling connection closed: %s", exc)
            finally:
                self._ws = None
            if self._stopping.is_set():
                break
            failures += 1
            if failures > self.config.reconnect_attempts:
                if self._media_flowing():
                    return await self._media_only("signaling unreachable")
                raise ConsultError(f"signaling unreachable after {failures - 1} reconnect attempts")
            await asyncio.sleep(min(0.25 * 2**failures, 5.0))
        return "stopped"

    def _media_flowing(self) -> bool:
        return self.pc is not None and self.pc.connectionState == "connected"

    async def _media_only(self, why: str) -> str:
        """Without signaling the call cannot be renegotiated, but the media path is peer to peer: keep it."""
        log.warning("%s: keeping the call until its connection ends", why)
        while not self._stopping.is_set() and self._media_flowing():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), 0.5)
        return why

    async def _on_frame(self, frame: dict[str, Any]) -> str | None:
        kind = frame.get("type")
        if kind == "joined":
            self.stats.joins += 1
            self.stats.resumed += bool(frame.get("resumed"))
            self.seat = frame.get("seat")
            if self.config.ice_servers is None:
                self._ice = list(frame.get("iceServers", []))
            self.joined.set()
            self._report("joined")
            if frame.get("resumed") and (self.pc is None or self.pc.connectionState != "connected"):
                await self._send("renegotiate-request", reason="agent reconnected")
        elif kind == "lobby":
            log.info("waiting for the doctor to admit us")
            if self.stats.joins == 0:
                self._report("waiting")
        elif kind == "offer":
            await self._on_offer(str(frame.get("from")), str(frame["sdp"]))
        elif kind == "candidate":
            await self._on_candidate(frame.get("candidate"))
        elif kind == "peer-left" and frame.get("seat") == self._peer and not frame.get("temporary"):
            await self._close_pc()
        elif kind == "deny":
            raise ConsultError(f"the doctor declined: {frame.get('reason')}", code="denied")
        elif kind == "bye":
            return str(frame.get("reason") or "bye")
        elif kind == "error":
            self.stats.errors.append(str(frame.get("code")))
            log.warning("signaling error %s: %s", frame.get("code"), frame.get("detail"))
            if frame.get("code") in {"bad-token", "token-expired", "room-full", "ended"}:
                raise ConsultError(f"cannot join: {frame.get('detail')}", code=str(frame.get("code")))
        return None

    # ----- WebRTC --------------------------------------------------------------------------------------------------
    async def _on_offer(self, sender: str, sdp: str) -> None:
        self.stats.offers += 1
        self.stats.last_offer_at = time.perf_counter()
        ufrag = _ice_ufrag(sdp)
        pc = self.pc
        if pc is None or pc.connectionState in {"failed", "closed"} or ufrag != self._remote_ufrag:
            await self._close_pc()
            pc = self._new_pc()
        self._peer, self._remote_ufrag = sender, ufrag
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        assert self._media is not None
        for track in (self._media.video, self._media.audio):
            if track is None or any(s.track is not None and s.track.kind == track.kind for s in pc.getSenders()):
                continue
            if any(t.kind == track.kind and t.sender.track is None for t in pc.getTransceivers()):
                # Through a fan-out: closing a peer connection stops its tracks, not the camera.
                fanout = self._fanouts.setdefault(track.kind, FrameFanout(track))
                pc.addTrack(fanout.subscribe())
        # aioice starts its checks when we answer and fails at once if it has no remote candidate by then. A check
        # from a peer that trickles cannot always reach us before its candidate does: a relay-only peer (or a NAT in
        # front of us) needs the TURN permission that only its candidate gives. So wait for the first one; candidates
        # that come before the answer is set are kept and added right after it (before aiortc's bundling they would
        # land on a transport that the answer then drops).
        # Only a candidate of the BUNDLE's first m-line counts: a browser also trickles candidates for the others
        # until the answer confirms the bundle, and aiortc drops those.
        self._answer_to, self._early_candidates = (sender, pc), []
        self._bundle_mid = _bundle_tag(sdp)
        if "a=candidate:" in sdp or "a=end-of-candidates" in sdp:
            await self._answer()
        else:
            self._spawn(self._answer_later(pc))

    async def _answer_later(self, pc: RTCPeerConnection) -> None:
        await asyncio.sleep(ANSWER_WAIT_S)
        if self._answer_to is not None and self._answer_to[1] is pc:
            await self._answer()

    async def _answer(self) -> None:
        if self._answer_to is None:
            return
        (sender, pc), self._answer_to = self._answer_to, None
        if pc is not self.pc or pc.signalingState != "have-remote-offer" or self._ws is None:
            return
        self._answering = True
        try:
            await pc.setLocalDescription(await pc.createAnswer())
        finally:
            self._answering = False
        # No await that suspends between setLocalDescription and these: aiortc's connect task has not run yet.
        early, self._early_candidates = self._early_candidates, []
        for cand in early:
            await pc.addIceCandidate(cand)
        await self._send("answer", to=sender, sdp=pc.localDescription.sdp)
        self.stats.answer_sent_at = time.perf_counter()

    async def _on_candidate(self, init: dict[str, Any] | None) -> None:
        if self.pc is None or self.pc.remoteDescription is None:
            return
        cand: RTCIceCandidate | None = None
        if init is not None and init.get("candidate"):
            cand = candidate_from_sdp(str(init["candidate"]).removeprefix("candidate:"))
            cand.sdpMid, cand.sdpMLineIndex = init.get("sdpMid"), init.get("sdpMLineIndex")
        if self._answer_to is not None or self._answering:
            self._early_candidates.append(cand)
            first = cand is None or cand.sdpMid == self._bundle_mid
            usable = first or (cand is not None and cand.sdpMid is None and cand.sdpMLineIndex == 0)
            if self._answer_to is not None and usable:
                await self._answer()
            return
        await self.pc.addIceCandidate(cand)

    def _new_pc(self) -> RTCPeerConnection:
        servers = prefer_turn_transport(self._ice, self.config.turn_transport)
        pc = RTCPeerConnection(rtc_configuration(servers, self.config.ice_transport_policy))
        self.pc = pc

        @pc.on("connectionstatechange")
        async def _state() -> None:
            log.info("peer connection %s", pc.connectionState)
            if pc.connectionState == "connected":
                self.stats.ice_route = ice_route(pc)
                log.info("call connected over %s", self.stats.ice_route)
                if self.stats.connected_at is None:
                    self.stats.connected_at = time.perf_counter()
                self._report("connected")
            if pc.connectionState == "failed" and pc is self.pc and self._ws is not None:
                with contextlib.suppress(ConnectionClosed):
                    await self._send("renegotiate-request", to=self._peer, reason="ice failed")

        @pc.on("track")
        def _track(track: Any) -> None:
            self._spawn(self._consume(track))

        @pc.on("datachannel")
        def _channel(channel: Any) -> None:
            if channel.label == VITALS_LABEL:
                self._channel = channel
                self._flush()

        return pc

    async def _consume(self, track: Any) -> None:
        """Decode the doctor's media (and drop it: the gateway has no screen in this build)."""
        while True:
            try:
                await track.recv()
            except MediaStreamError:
                return
            if track.kind == "video":
                if self.stats.first_remote_frame_at is None:
                    self.stats.first_remote_frame_at = time.perf_counter()
                self.stats.remote_video_frames += 1
            else:
                self.stats.remote_audio_frames += 1

    async def _close_pc(self) -> None:
        pc, self.pc, self._channel = self.pc, None, None
        if pc is None:
            return
        try:
            await asyncio.wait_for(pc.close(), self.config.close_timeout)
        except TimeoutError:
            log.warning("RTCPeerConnection.close() took more than %.1f s; abandoned", self.config.close_timeout)

    # ----- vitals --------------------------------------------------------------------------------------------------
    async def _pump_readings(self, readings: AsyncIterator[VitalReading]) -> None:
        async for reading in readings:
            self._pending.append(reading)
            self._flush()

    def _flush(self) -> None:
        ch = self._channel
        while self._pending and ch is not None and ch.readyState == "open":
            ch.send(reading_message(self._pending.popleft(), datetime.now(UTC)))
            self.stats.vitals_sent += 1
