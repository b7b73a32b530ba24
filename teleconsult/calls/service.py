"""The asyncio adapter of dashboard calls: publish signed ``join`` commands, follow gateways' presence and progress.

- Presence: every API node subscribes to ``tbib/v1/gw/+/status`` (retained ``online`` / Last Will ``offline``): a
  call to a gateway that is not ``online`` is not sent; the doctor is told ``offline`` at once.
- Progress: every node subscribes to ``tbib/v1/gw/+/events``; the node that placed a call knows its id and relays
  that call's ``call`` / ``command_rejected`` events (and its own ``offline`` / ``no-answer`` verdicts) as
  ``NOTIFY tbib_calls`` ``{"type": "call", "patient_id", "call_id", "state", "reason", "at"}``. The dashboard live
  hub (:mod:`teleconsult.api.live`) of every node LISTENs and forwards the frame to the doctors who see the patient.
- No answer: no event of the call within ``ack_timeout_s`` after the command was published: ``offline``
  (reason ``no-answer``): the gateway is down without its Last Will having arrived yet, or is too old for commands.

paho runs its own network thread; its callbacks hand messages to the event loop (``call_soon_threadsafe``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from teleconsult.calls.command import CommandSigner

log = logging.getLogger(__name__)

CHANNEL: Final = "tbib_calls"
STATUS_TOPIC: Final = "tbib/v1/gw/+/status"
EVENTS_TOPIC: Final = "tbib/v1/gw/+/events"


@dataclass(slots=True)
class PlacedCall:
    """A call this node sent: whom to tell, and whether the gateway answered."""

    call_id: str
    patient_id: uuid.UUID
    gateway_id: str
    placed_at: float
    answered: bool = False
    state: str = "ringing"
    reason: str | None = None


class CallService:
    """See the module docstring; ``await start()`` in the lifespan, ``await stop()`` at its end."""

    def __init__(self, dsn: str, mqtt_url: str, signer: CommandSigner, *, ack_timeout_s: float = 8.0) -> None:
        self.dsn = dsn
        self.mqtt_url = mqtt_url
        self.signer = signer
        self.ack_timeout_s = ack_timeout_s
        self.presence: dict[str, str] = {}
        """gateway id -> ``online`` / ``offline`` (retained status)."""
        self.calls: dict[str, PlacedCall] = {}
        self.subscribed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None
        self._notify: psycopg.AsyncConnection[Any] | None = None
        self._frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect to the broker (in the background) and open the NOTIFY connection."""
        self._loop = asyncio.get_running_loop()
        self._writer = asyncio.create_task(self._write(), name="calls-relay")
        url = urlsplit(self.mqtt_url)
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"tbib-calls-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        if url.username:
            client.username_pw_set(url.username, url.password)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.connect_async(url.hostname or "127.0.0.1", url.port or 1883)
        client.loop_start()
        self._client = client

    async def stop(self) -> None:
        """Disconnect."""
        if self._client is not None:
            self._client.disconnect()
            await asyncio.to_thread(self._client.loop_stop)
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        if self._notify is not None:
            await self._notify.close()

    # ----- placing a call ------------------------------------------------------------------------------------------
    async def place(self, *, patient_id: uuid.UUID, gateway_id: str, room: str, token: str, server: str) -> PlacedCall:
        """Send ``join`` to the gateway (QoS 1), or report it offline; the returned call's ``state`` says which."""
        now = time.time()
        signed = self.signer.join(gateway_id, room=room, token=token, server=server, now=now)
        call = PlacedCall(signed.id, patient_id, gateway_id, now)
        self.calls[call.call_id] = call
        client = self._client
        if self.presence.get(gateway_id) != "online" or client is None or not client.is_connected():
            call.state, call.reason = "offline", "gateway-offline" if client is not None else "no-broker"
            self.relay(call, "offline", call.reason)
            return call
        info = client.publish(f"tbib/v1/gw/{gateway_id}/commands", signed.message, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            call.state, call.reason = "offline", "no-broker"
            self.relay(call, "offline", call.reason)
            return call
        assert self._loop is not None
        self._loop.call_later(self.ack_timeout_s, self._check_answered, call.call_id)
        self.relay(call, "ringing", None)
        return call

    def _check_answered(self, call_id: str) -> None:
        call = self.calls.get(call_id)
        if call is not None and not call.answered:
            call.state = "offline"
            self.relay(call, "offline", "no-answer")

    def relay(self, call: PlacedCall, state: str, reason: str | None) -> None:
        """Queue ``NOTIFY tbib_calls`` with the call's new state (one writer: the states keep their order)."""
        frame = {"type": "call", "patient_id": str(call.patient_id), "call_id": call.call_id,
                 "gateway_id": call.gateway_id, "state": state, "reason": reason,
                 "at": datetime.now(UTC).isoformat()}  # fmt: skip
        self._frames.put_nowait(frame)

    async def _write(self) -> None:
        while True:
            frame = await self._frames.get()
            for attempt in (1, 2):
                try:
                    if self._notify is None or self._notify.closed:
                        self._notify = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
                    await self._notify.execute("select pg_notify(%s, %s)", (CHANNEL, json.dumps(frame)))
                except psycopg.Error as exc:
                    log.warning("call relay: %s (attempt %d)", exc, attempt)
                    self._notify = None
                else:
                    break

    # ----- broker (paho thread -> loop) -----------------------------------------------------------------------------
    def _on_connect(self, c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if getattr(rc, "is_failure", False):
            log.warning("calls: broker refused the connection: %s", rc)
            return
        c.subscribe([(STATUS_TOPIC, 1), (EVENTS_TOPIC, 1)])
        self._to_loop(self.subscribed.set)

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        parts = str(msg.topic).split("/")
        if len(parts) != 5:
            return
        payload = bytes(msg.payload)
        if parts[4] == "status":
            state = payload.decode("utf-8", "replace").strip()
            if state in ("online", "offline"):
                self._to_loop(lambda: self.presence.__setitem__(parts[3], state))
        elif parts[4] == "events":
            self._to_loop(lambda: self._on_event(parts[3], payload))

    def _to_loop(self, fn: Any) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                self._loop.call_soon_threadsafe(fn)

    def _on_event(self, gateway_id: str, payload: bytes) -> None:
        try:
            ev = json.loads(payload)
            kind, call_id = ev["event"], ev.get("call_id")
        except (ValueError, KeyError, TypeError):
            return  # not ours to judge: the events topic carries device events too
        call = self.calls.get(call_id) if isinstance(call_id, str) else None
        if call is None or call.gateway_id != gateway_id:
            return
        call.answered = True
        if kind == "call":
            state, reason = str(ev.get("state")), ev.get("reason")
        elif kind == "command_rejected":
            state, reason = "failed", f"command refused: {ev.get('reason')}"
        else:
            return
        call.state = state
        self.relay(call, state, None if reason is None else str(reason)[:200])
        if state in ("ended", "failed"):
            self.calls.pop(call.call_id, None)
