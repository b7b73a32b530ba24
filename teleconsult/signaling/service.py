"""Websocket adapter of the signaling core: parse nothing, decide nothing — feed the core, send what it says.

One :class:`SignalingService` per process. Each accepted websocket gets a connection id and a writer task draining an
outbound queue (a slow peer never blocks the room); a timer task calls ``handle_timer`` at ``get_timer()``. Consultation
record events (:class:`~teleconsult.signaling.rooms.Record`) go to the ``on_record`` callback (store and audit), in
order, from one writer task.

With a ``store`` (:class:`~teleconsult.signaling.roomstore.PgRoomStore`) rooms live in PostgreSQL: each input that
touches a room runs under that room's row lock, and frames for other nodes' websockets go out by NOTIFY (see
:mod:`.roomstore`); any node serves any room, and a restarted node finds its rooms in the table. Without one, rooms
live in this process. On shutdown, the node's own seats enter their grace period (peers see ``peer-left``
temporary) so that their holders can reclaim them on another node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, Final

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from teleconsult.errors import SignalingError
from teleconsult.signaling.core import SignalingConfig, SignalingCore
from teleconsult.signaling.rooms import Close, ConnId, Outgoing, Record, Send
from teleconsult.signaling.roomstore import PgRoomStore

log = logging.getLogger(__name__)

#: Frames queued for one slow connection before it is dropped.
MAX_QUEUED_FRAMES: Final = 256

Clock = Callable[[], datetime]
RecordSink = Callable[[Record], Coroutine[Any, Any, None]]


#: How often each node looks for rooms whose grace deadline passed (store mode).
TIMER_POLL_S: Final = 1.0


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
        store: PgRoomStore | None = None,
    ) -> None:
        self.core = SignalingCore(config)
        self.clock = clock
        self.on_record = on_record
        self.store = store
        self.node_id = secrets.token_hex(6)
        self._started = store is None
        self._outboxes: dict[ConnId, _Outbox] = {}
        self._timer_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._records: asyncio.Queue[Record] = asyncio.Queue()
        self._record_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen for other nodes' deliveries (no-op without a store). Call before serving."""
        if self.store is not None and not self._started:
            await self.store.start(self.node_id, self._delivered, self._store_lost)
            self._started = True

    def _store_lost(self) -> None:
        for outbox in self._outboxes.values():
            outbox.closing = True
            with contextlib.suppress(asyncio.QueueFull):
                outbox.queue.put_nowait((1011, "signaling unavailable"))

    def _delivered(self, actions: list[Outgoing]) -> None:
        """Frames and closes from another node for our connections."""
        self._dispatch(self.core.deliver(actions, self.clock()))

    async def _input(self, kind: str, conn: ConnId, raw: str | bytes | None = None) -> None:
        """Apply one input: directly, or under the row lock of the room it touches."""
        now = self.clock()
        core = self.core
        cid = core.room_of(conn, raw, now) if self.store is not None and kind != "connect" else None
        if cid is None or self.store is None:
            self._dispatch(self._apply(kind, conn, raw, now))
            core.take_forward()  # single node: a connection we do not know is gone
            return
        async with self.store.room(cid) as slot:
            core.load(cid, slot.state, slot.ended_at)
            out = self._apply(kind, conn, raw, now)
            state, next_timer, ended_at = core.unload(cid)
            forward = core.take_forward()
            await slot.save(state, next_timer, ended_at)
            await slot.forward(self.node_id, forward)
        self._dispatch(out)

    def _apply(self, kind: str, conn: ConnId, raw: str | bytes | None, now: datetime) -> list[Outgoing]:
        if kind == "connect":
            return self.core.connect(conn, now)
        if kind == "receive":
            return self.core.receive(conn, raw if raw is not None else b"", now)
        return self.core.disconnect(conn, now)

    async def _room_timer(self, cid: str) -> None:
        """Expire the grace periods of a stored room."""
        assert self.store is not None
        now = self.clock()
        async with self.store.room(cid) as slot:
            self.core.load(cid, slot.state, slot.ended_at)
            out = self.core.handle_timer(now)
            state, next_timer, ended_at = self.core.unload(cid)
            forward = self.core.take_forward()
            await slot.save(state, next_timer, ended_at)
            await slot.forward(self.node_id, forward)
        self._dispatch(out)

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
        except SignalingError as exc:  # the room store is unavailable
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
            if self.store is not None:
                await asyncio.sleep(TIMER_POLL_S)
                with contextlib.suppress(OSError, RuntimeError, SignalingError):
                    for cid in await self.store.due(self.clock()):
                        await self._room_timer(cid)
                continue
            self._wake.clear()
            deadline = self.core.get_timer()
            now = self.clock()
            timeout = None if deadline is None else max(0.0, (deadline - now).total_seconds())
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
        if self.store is not None:  # our seats go into grace: their holders may reclaim them on another node
            for conn in list(self._outboxes):
                with contextlib.suppress(OSError, RuntimeError, SignalingError):
                    await self._input("disconnect", conn)
        for outbox in list(self._outboxes.values()):
            with contextlib.suppress(RuntimeError, OSError):
                await outbox.ws.close(1001, "server shutting down")
        if self.store is not None:
            await self.store.aclose()
        if self._record_task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._records.join(), 5)
            self._record_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._record_task
