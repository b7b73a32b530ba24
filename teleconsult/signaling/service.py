"""Websocket adapter of the signaling core: parse nothing, decide nothing — feed the core, send what it says.

One :class:`SignalingService` per process. Each accepted websocket gets a connection id and a writer task draining an
outbound queue (a slow peer never blocks the room); a timer task calls ``handle_timer`` at ``get_timer()``. Consultation
record events (:class:`~teleconsult.signaling.rooms.Record`) go to the ``on_record`` callback (store and audit), in
order, from one writer task.

With an ``input_log`` (:class:`~teleconsult.signaling.pgbus.PgInputLog`) the inputs of every node go through
PostgreSQL first and every node applies all of them in the same order (see :mod:`.pgbus`); without one, inputs are
applied at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from teleconsult.errors import SignalingError
from teleconsult.signaling.core import SignalingConfig, SignalingCore
from teleconsult.signaling.rooms import Close, ConnId, Outgoing, Record, Send

log = logging.getLogger(__name__)

#: Frames queued for one slow connection before it is dropped.
MAX_QUEUED_FRAMES: Final = 256

Clock = Callable[[], datetime]
RecordSink = Callable[[Record], Coroutine[Any, Any, None]]


class InputLog(Protocol):
    """An ordered log of inputs shared by the nodes (PostgreSQL LISTEN/NOTIFY)."""

    async def start(self, on_input: Callable[[dict[str, Any]], None], on_lost: Callable[[], None]) -> None: ...
    async def publish(self, message: dict[str, Any]) -> None: ...
    async def aclose(self) -> None: ...


def utc_now() -> datetime:
    """The default clock."""
    return datetime.now(UTC)


class _Outbox:
    """Outbound frames of one websocket, flushed by its writer task."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[dict[str, Any] | tuple[int, str]] = asyncio.Queue(MAX_QUEUED_FRAMES)
        self.closing = False

    async def run(self) -> None:
        while True:
            item = await self.queue.get()
            if isinstance(item, tuple):
                code, reason = item
                with contextlib.suppress(RuntimeError, WebSocketDisconnect, OSError):
                    await self.ws.close(code, reason)
                return
            try:
                await self.ws.send_text(json.dumps(item, separators=(",", ":")))
            except (RuntimeError, WebSocketDisconnect, OSError):
                return


class SignalingService:
    """Runs a :class:`SignalingCore` behind websockets."""

    def __init__(
        self,
        config: SignalingConfig,
        *,
        clock: Clock = utc_now,
        on_record: RecordSink | None = None,
        input_log: InputLog | None = None,
    ) -> None:
        self.core = SignalingCore(config)
        self.clock = clock
        self.on_record = on_record
        self.input_log = input_log
        self.node_id = secrets.token_hex(6)
        self._started = input_log is None
        self._timer_published: datetime | None = None
        self._outboxes: dict[ConnId, _Outbox] = {}
        self._timer_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._records: asyncio.Queue[Record] = asyncio.Queue()
        self._record_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Join the shared input log (no-op without one). Call before serving."""
        if self.input_log is not None and not self._started:
            await self.input_log.start(self._apply, self._log_lost)
            self._started = True

    def _log_lost(self) -> None:
        for outbox in self._outboxes.values():
            outbox.closing = True
            with contextlib.suppress(asyncio.QueueFull):
                outbox.queue.put_nowait((1011, "signaling unavailable"))

    async def _input(self, kind: str, conn: ConnId | None, raw: str | bytes | None = None) -> None:
        """Apply an input here, or publish it for every node (ourselves included)."""
        now = self.clock()
        if self.input_log is None:
            self._apply_local(kind, conn, raw, now, own=True)
            return
        message: dict[str, Any] = {"n": self.node_id, "k": kind, "c": conn, "t": now.isoformat()}
        if isinstance(raw, bytes):
            message["b"] = raw.hex()
        elif raw is not None:
            message["r"] = raw
        await self.input_log.publish(message)

    def _apply(self, message: dict[str, Any]) -> None:
        """An input from the shared log."""
        raw: str | bytes | None = message.get("r")
        if "b" in message:
            raw = bytes.fromhex(message["b"])
        now = datetime.fromisoformat(message["t"])
        self._apply_local(message["k"], message.get("c"), raw, now, own=message.get("n") == self.node_id)

    def _apply_local(
        self, kind: str, conn: ConnId | None, raw: str | bytes | None, now: datetime, *, own: bool
    ) -> None:
        if kind == "timer":
            out = self.core.handle_timer(now)
        elif conn is None:
            return
        elif kind == "connect":
            out = self.core.connect(conn, now)
        elif kind == "receive":
            out = self.core.receive(conn, raw if raw is not None else b"", now)
        else:
            out = self.core.disconnect(conn, now)
        self._dispatch(out, own=own)

    async def serve(self, ws: WebSocket) -> None:
        """Handle one websocket until it closes."""
        await self.start()
        await ws.accept()
        self._ensure_timer()
        conn = secrets.randbits(52)  # unique across nodes, exact in JSON numbers
        outbox = _Outbox(ws)
        self._outboxes[conn] = outbox
        writer = asyncio.create_task(outbox.run(), name=f"signaling-writer-{conn}")
        try:
            await self._input("connect", conn)
            while not writer.done():
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                raw = message.get("text")
                if raw is None:
                    raw = message.get("bytes") or b""
                await self._input("receive", conn, raw)
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            log.debug("signaling connection %s ended: %r", conn, exc)
        except SignalingError as exc:  # the shared input log is unavailable
            log.warning("signaling connection %s closed: %s", conn, exc)
            with contextlib.suppress(RuntimeError, OSError):
                await ws.close(1011, "signaling unavailable")
        finally:
            self._outboxes.pop(conn, None)
            with contextlib.suppress(OSError, RuntimeError, SignalingError):
                await self._input("disconnect", conn)
            if not writer.done():
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
            if ws.client_state is WebSocketState.CONNECTED:
                with contextlib.suppress(RuntimeError, OSError):
                    await ws.close()

    def _dispatch(self, out: list[Outgoing], *, own: bool = True) -> None:
        for action in out:
            if isinstance(action, Record):
                if own:
                    self._record(action)
                continue
            outbox = self._outboxes.get(action.conn)
            if outbox is None or outbox.closing:
                continue
            try:
                if isinstance(action, Send):
                    outbox.queue.put_nowait(action.frame)
                elif isinstance(action, Close):
                    outbox.closing = True
                    outbox.queue.put_nowait((action.code, action.reason))
            except asyncio.QueueFull:
                log.warning("signaling connection %s is not reading: closing it", action.conn)
                outbox.closing = True
                while not outbox.queue.empty():
                    outbox.queue.get_nowait()
                outbox.queue.put_nowait((1013, "too slow"))
        self._wake.set()

    def _record(self, record: Record) -> None:
        log.info(
            "consultation %s %s seat=%s subject=%s by=%s",
            record.consultation_id,
            record.kind.value,
            record.seat,
            record.subject,
            record.by,
        )
        if self.on_record is None:
            return
        self._records.put_nowait(record)
        if self._record_task is None or self._record_task.done():
            self._record_task = asyncio.create_task(self._record_loop(), name="signaling-record")

    async def _record_loop(self) -> None:
        """One writer, in order: the record's events keep the room's order."""
        assert self.on_record is not None
        while True:
            record = await self._records.get()
            try:
                await self.on_record(record)
            except Exception:
                log.exception("storing consultation event %s of %s failed", record.kind.value, record.consultation_id)
            finally:
                self._records.task_done()

    def _ensure_timer(self) -> None:
        if self._timer_task is None or self._timer_task.done():
            self._timer_task = asyncio.create_task(self._timer_loop(), name="signaling-timer")

    async def _timer_loop(self) -> None:
        while True:
            self._wake.clear()
            deadline = self.core.get_timer()
            now = self.clock()
            if deadline is None:
                timeout: float | None = None
            elif deadline == self._timer_published:  # published, not yet applied: re-publish after 1 s if lost
                timeout = 1.0
            else:
                timeout = max(0.0, (deadline - now).total_seconds())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            now = self.clock()
            if (deadline := self.core.get_timer()) is None or deadline > now:
                continue
            if self.input_log is None:
                self._dispatch(self.core.handle_timer(now))
            elif not self._wake.is_set():  # every node may publish a timer input: applying it twice is harmless
                self._timer_published = deadline
                with contextlib.suppress(OSError, RuntimeError, SignalingError):
                    await self._input("timer", None)

    async def aclose(self) -> None:
        """Stop the timer and close every websocket (server shutdown)."""
        if self._timer_task is not None:
            self._timer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer_task
        for outbox in list(self._outboxes.values()):
            with contextlib.suppress(RuntimeError, OSError):
                await outbox.ws.close(1001, "server shutting down")
        if self.input_log is not None:
            await self.input_log.aclose()
        if self._record_task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._records.join(), 5)
            self._record_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._record_task
