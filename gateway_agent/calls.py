"""Calls started from the dashboard, gateway side: verify ``join`` commands, run the consult agent, report progress.

The asyncio adapter around :class:`~gateway_agent.commands.CommandVerifier` (the pure core). Each message on
``tbib/v1/gw/{id}/commands`` is verified; a refused one is logged, counted and reported as an event
``{"event": "command_rejected", "reason", "detail", "call_id" (when readable)}``; it never stops the loop. An accepted
``join`` starts a :class:`~gateway_agent.consult.ConsultAgent` for the room and reports, on ``.../events``::

    {"v": 1, "gateway_id", "at", "event": "call", "call_id", "room", "state", "reason"}

with ``state`` in ``ringing`` (command accepted, agent starting), ``joining`` (connecting to signaling), ``waiting``
(in the doctor's lobby), ``joined`` (admitted), ``connected`` (media path up), ``ended`` and ``failed`` (with the
reason). One call at a time: a ``join`` for the room already in progress only re-reports its state; one for another
room ends the current call (``ended``, reason ``replaced``) and starts the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway_agent.commands import Command, CommandVerifier
from gateway_agent.consult import ConsultAgent, ConsultConfig, VitalReading
from gateway_agent.consult_cli import signaling_url
from gateway_agent.errors import CommandRejectedError, ConsultError

log = logging.getLogger(__name__)

Publish = Callable[..., None]
"""``publish_event(kind, **fields)`` of :class:`~gateway_agent.publisher.MqttPublisher`."""


@dataclass(slots=True)
class _Call:
    command: Command
    agent: ConsultAgent
    task: asyncio.Task[None] | None = None
    state: str = "ringing"


@dataclass(slots=True)
class CallStats:
    """Counters for the status file and tests."""

    accepted: int = 0
    started: int = 0
    failed: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


class CallRunner:
    """Feed it every command message (:meth:`handle`); ``await aclose()`` at stop."""

    def __init__(
        self,
        verifier: CommandVerifier,
        publish_event: Publish,
        *,
        camera: str | None = "/dev/video0",
        microphone: str | None = None,
        ice_servers: list[dict[str, Any]] | None = None,
        state_file: Path | None = None,
        readings: Callable[[], AsyncIterator[VitalReading]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.verifier = verifier
        self.publish_event = publish_event
        self.camera = camera
        self.microphone = microphone
        self.ice_servers = ice_servers
        self.state_file = state_file
        self.readings = readings
        """A fresh iterator of the gateway's own live readings per call (sent on the vitals data channel)."""
        self.clock = clock
        self.stats = CallStats()
        self.current: _Call | None = None
        self.agent_started = asyncio.Event()
        self._restore()

    # ----- commands ------------------------------------------------------------------------------------------------
    def handle(self, message: bytes) -> None:
        """One message from the commands topic (event-loop thread); never raises."""
        try:
            command = self.verifier.verify(message, self.clock())
        except CommandRejectedError as exc:
            self.stats.rejected = dict(self.verifier.rejected)
            log.warning("refused a command (%s): %s", exc.reason, exc)
            self.publish_event("command_rejected", reason=exc.reason, detail=str(exc)[:200], call_id=_peek_id(message))
            return
        self.stats.accepted += 1
        self._persist()
        if command.cmd == "join":
            self._join(command)

    def _join(self, command: Command) -> None:
        room = str(command.args["room"])
        cur = self.current
        if cur is not None and cur.task is not None and not cur.task.done():
            if str(cur.command.args["room"]) == room:
                self._report(cur, cur.state, "already in this call")
                return
            self._report(cur, "ended", "replaced")
            cur.task.cancel()
        try:
            server = signaling_url(str(command.args["server"]))
        except ConsultError as exc:
            self.stats.failed += 1
            self._event(command, "failed", str(exc))
            return
        config = ConsultConfig(server=server, token=str(command.args["token"]), camera=self.camera,
                               microphone=self.microphone, ice_servers=self.ice_servers)  # fmt: skip
        holder: list[_Call] = []
        agent = ConsultAgent(
            config,
            self.readings() if self.readings is not None else None,
            on_state=lambda state: self._report(holder[0], state),
        )
        call = _Call(command, agent)
        holder.append(call)
        self.current = call
        self._report(call, "ringing")
        call.task = asyncio.create_task(self._run(call), name=f"call-{command.id[:8]}")

    async def _run(self, call: _Call) -> None:
        self.stats.started += 1
        self.agent_started.set()
        self._report(call, "joining")
        try:
            reason = await call.agent.run()
        except ConsultError as exc:
            self.stats.failed += 1
            self._report(call, "failed", exc.code or str(exc))
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(call.agent.stop(), 2.0)
            raise
        except Exception as exc:  # an agent bug ends this call, not the gateway
            log.exception("consult agent crashed")
            self.stats.failed += 1
            self._report(call, "failed", f"agent error: {exc}"[:200])
        else:
            self._report(call, "ended", reason)

    # ----- reports -------------------------------------------------------------------------------------------------
    def _report(self, call: _Call, state: str, reason: str | None = None) -> None:
        if call.state in ("ended", "failed") and state != call.state:
            return  # a late report of a call already over
        call.state = state
        self._event(call.command, state, reason)

    def _event(self, command: Command, state: str, reason: str | None) -> None:
        log.info("call %s: %s%s", command.id[:8], state, f" ({reason})" if reason else "")
        self.publish_event("call", call_id=command.id, room=str(command.args.get("room")), state=state, reason=reason)

    async def aclose(self) -> None:
        """Leave the current call (``bye``) and wait for its agent."""
        cur = self.current
        if cur is not None and cur.task is not None and not cur.task.done():
            await cur.agent.stop()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(cur.task, 10)

    # ----- replay memory across restarts ---------------------------------------------------------------------------
    def _persist(self) -> None:
        if self.state_file is None:
            return
        try:
            tmp = self.state_file.with_name(self.state_file.name + ".tmp")
            tmp.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self.verifier.remembered()), encoding="utf-8")
            tmp.replace(self.state_file)
        except OSError as exc:
            log.warning("cannot write the command replay memory %s: %s", self.state_file, exc)

    def _restore(self) -> None:
        if self.state_file is None or not self.state_file.exists():
            return
        try:
            seen = json.loads(self.state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("ignored the command replay memory %s: %s", self.state_file, exc)
            return
        if isinstance(seen, dict):
            self.verifier.remember(seen, self.clock())


def _peek_id(message: bytes) -> str | None:
    """The (unverified) id of a refused command, so the server can tell the doctor which call failed."""
    from gateway_agent.commands import b64url_decode

    try:
        body = json.loads(b64url_decode(json.loads(message)["payload"]))
        cid = body["id"]
    except (ValueError, KeyError, TypeError):
        return None
    return cid[:64] if isinstance(cid, str) else None


class LiveReadings:
    """The gateway's own readings as they are captured, for the call's vitals data channel (one queue per call)."""

    def __init__(self, maxsize: int = 200) -> None:
        self.maxsize = maxsize
        self._queues: set[asyncio.Queue[VitalReading]] = set()

    def push(self, objects: Any) -> None:
        """Reading objects as the outbox stores them (``metric``, ``value``, ``unit``, ``measured_at`` RFC 3339)."""
        if not self._queues:
            return
        for _address, obj in objects:
            try:
                at = datetime.fromisoformat(str(obj["measured_at"]).replace("Z", "+00:00"))
                reading = VitalReading(str(obj["metric"]), float(obj["value"]), str(obj["unit"]), at)
            except (KeyError, TypeError, ValueError):
                continue
            for q in self._queues:
                if q.full():
                    q.get_nowait()  # newest wins: a doctor wants the current value
                q.put_nowait(reading)

    async def iterate(self) -> AsyncIterator[VitalReading]:
        """Readings captured from now on (until the consumer stops)."""
        q: asyncio.Queue[VitalReading] = asyncio.Queue(self.maxsize)
        self._queues.add(q)
        try:
            while True:
                yield await q.get()
        finally:
            self._queues.discard(q)


class TeeSink:
    """The outbox, plus a copy of every appended reading to :class:`LiveReadings` (after the durable append)."""

    def __init__(self, sink: Any, live: LiveReadings) -> None:
        self._sink = sink
        self._live = live

    def append(self, readings: Any, *, racp_last_seq: tuple[str, int] | None = None) -> list[str]:
        """Append durably, then offer the readings to the calls in progress."""
        ids: list[str] = self._sink.append(readings, racp_last_seq=racp_last_seq)
        self._live.push(readings)
        return ids

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sink, name)
