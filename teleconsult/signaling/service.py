"""Websocket adapter of the signaling core: parse nothing, decide nothing — feed the core, send what it says.

One :class:`SignalingService` per process. Each accepted websocket gets a connection id and a writer task draining an
outbound queue (a slow peer never blocks the room); a timer task calls ``handle_timer`` at ``get_timer()``. Consultation
record events (:class:`~teleconsult.signaling.rooms.Record`) go to the ``on_record`` callback (store and audit).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, Final

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from teleconsult.signaling.core import SignalingConfig, SignalingCore
from teleconsult.signaling.rooms import Close, ConnId, Outgoing, Record, Send

log = logging.getLogger(__name__)

#: Frames queued for one slow connection before it is dropped.
MAX_QUEUED_FRAMES: Final = 256

Clock = Callable[[], datetime]
RecordSink = Callable[[Record], Coroutine[Any, Any, None]]


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

    def __init__(self, config: SignalingConfig, *, clock: Clock = utc_now, on_record: RecordSink | None = None) -> None:
        self.core = SignalingCore(config)
        self.clock = clock
        self.on_record = on_record
        self._ids = itertools.count(1)
        self._outboxes: dict[ConnId, _Outbox] = {}
        self._timer_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._records: asyncio.Queue[Record] = asyncio.Queue()
        self._record_task: asyncio.Task[None] | None = None

    async def serve(self, ws: WebSocket) -> None:
        """Handle one websocket until it closes."""
        await ws.accept()
        self._ensure_timer()
        conn = next(self._ids)
        outbox = _Outbox(ws)
        self._outboxes[conn] = outbox
        writer = asyncio.create_task(outbox.run(), name=f"signaling-writer-{conn}")
        try:
            self._dispatch(self.core.connect(conn, self.clock()))
            while not writer.done():
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                raw = message.get("text")
                if raw is None:
                    raw = message.get("bytes") or b""
                self._dispatch(self.core.receive(conn, raw, self.clock()))
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            log.debug("signaling connection %s ended: %r", conn, exc)
        finally:
            self._outboxes.pop(conn, None)
            self._dispatch(self.core.disconnect(conn, self.clock()))
            if not writer.done():
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
            if ws.client_state is WebSocketState.CONNECTED:
                with contextlib.suppress(RuntimeError, OSError):
                    await ws.close()

    def _dispatch(self, out: list[Outgoing]) -> None:
        for action in out:
            if isinstance(action, Record):
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
                outbox.queue = asyncio.Queue(1)
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
            timeout = None if deadline is None else max(0.0, (deadline - self.clock()).total_seconds())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            now = self.clock()
            if (deadline := self.core.get_timer()) is not None and deadline <= now:
                self._dispatch(self.core.handle_timer(now))

    async def aclose(self) -> None:
        """Stop the timer and close every websocket (server shutdown)."""
        if self._timer_task is not None:
            self._timer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer_task
        for outbox in list(self._outboxes.values()):
            with contextlib.suppress(RuntimeError, OSError):
                await outbox.ws.close(1001, "server shutting down")
        if self._record_task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._records.join(), 5)
            self._record_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._record_task
