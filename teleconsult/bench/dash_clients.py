"""Dashboard websocket clients that behave like ``dashboard/static/js/live.js`` (for `tbib bench cluster`).

Each :class:`DashClient` holds ``/ws/v1/patients?last_event_id=N`` open; when the socket closes it reconnects with
live.js's backoff (500 ms x 2^(attempt-1), capped at 15 s, half of it jittered; the attempt count resets on
``hello``) and the id of the newest alert event it has seen, so the server replays what it missed. Like live.js it
drops an alert frame whose id is not above its last one (replay overlap): ``overlap`` counts those, ``delivered``
counts each id handed to the page, which must be exactly once.

A reconnection is recorded from the moment the client saw its socket close: ``hello_s`` (the new socket's ``hello``),
and ``replayed_s``, when the client holds every event up to the ``last_event_id`` the new node announced in its
``hello`` (the replay caught up; immediately at ``hello`` when nothing was missed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Reconnect:
    """One reconnection of one client (monotonic seconds)."""

    closed_at: float
    hello_at: float | None = None
    replayed_at: float | None = None
    target_id: int = 0
    last_at_close: int = 0


@dataclass(eq=False)
class DashClient:
    """See the module docstring."""

    url: str
    """``ws://host:port`` (the load balancer)."""
    token: str
    last_event_id: int = 0
    delivered: Counter[int] = field(default_factory=Counter)
    overlap: int = 0
    resyncs: int = 0
    connects: int = 0
    vitals_frames: int = 0
    vitals_items: int = 0
    vitals_patients: set[str] = field(default_factory=set)
    alert_arrivals: dict[int, float] = field(default_factory=dict)
    """event id -> wall-clock arrival (``time.time()``), first delivery."""
    reconnects: list[Reconnect] = field(default_factory=list)
    connected: bool = False
    _ws: Any = None
    _stopped: bool = False

    async def run(self) -> None:
        """Connect, read, reconnect until :meth:`stop`."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import WebSocketException

        attempt = 0
        while not self._stopped:
            try:
                async with connect(
                    f"{self.url}/ws/v1/patients?last_event_id={self.last_event_id}&token={self.token}",
                    max_queue=None, open_timeout=10, ping_interval=None,
                ) as ws:  # fmt: skip
                    self._ws = ws
                    async for raw in ws:
                        if self._frame(raw):
                            attempt = 0
            except (OSError, TimeoutError, WebSocketException):
                pass
            self._ws = None
            if self._stopped:
                return
            if self.connected:
                self.connected = False
                self.reconnects.append(Reconnect(time.monotonic(), last_at_close=self.last_event_id))
            attempt += 1
            base = min(15.0, 0.5 * 2 ** min(attempt - 1, 5))
            await asyncio.sleep(base / 2 + random.random() * base / 2)  # jitter, as live.js

    def _frame(self, raw: str | bytes) -> bool:
        """Handle one frame; True for ``hello``."""
        frame = json.loads(raw)
        kind = frame.get("type")
        if kind == "alert":
            event_id = int(frame["id"])
            if event_id <= self.last_event_id:
                self.overlap += 1
            else:
                self.last_event_id = event_id
                self.delivered[event_id] += 1
                self.alert_arrivals.setdefault(event_id, time.time())
            self._check_replayed()
        elif kind == "vitals":
            self.vitals_frames += 1
            self.vitals_items += len(frame["items"])
            self.vitals_patients.update(str(item[0]) for item in frame["items"])
        elif kind == "resync":
            self.resyncs += 1
        elif kind == "hello":
            self.connects += 1
            self.connected = True
            if self.reconnects and self.reconnects[-1].hello_at is None:
                rec = self.reconnects[-1]
                rec.hello_at, rec.target_id = time.monotonic(), int(frame.get("last_event_id", 0))
                self._check_replayed()
            return True
        return False

    def _check_replayed(self) -> None:
        rec = self.reconnects[-1] if self.reconnects else None
        ready = rec is not None and rec.hello_at is not None and rec.replayed_at is None
        if rec is not None and ready and self.last_event_id >= rec.target_id:
            rec.replayed_at = time.monotonic()

    async def cut(self) -> None:
        """Close the socket as a network cut would (the client reconnects)."""
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close(4001, "cut")

    async def stop(self) -> None:
        """Stop reconnecting and close."""
        self._stopped = True
        await self.cut()


class Fleet:
    """``n`` clients run as tasks of the caller's loop."""

    def __init__(self, url: str, tokens: list[str], last_event_id: int) -> None:
        self.clients = [DashClient(url, t, last_event_id) for t in tokens]
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self, within_s: float = 60.0) -> None:
        """Start every client and wait until all are connected."""
        for c in self.clients:
            self.tasks.append(asyncio.create_task(c.run()))
            await asyncio.sleep(0.01)
        await self.wait_connected(within_s)

    async def wait_connected(self, within_s: float) -> bool:
        """Wait until every client is connected (False on timeout)."""
        deadline = time.monotonic() + within_s
        while not all(c.connected for c in self.clients):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def respread(self) -> None:
        """Cut every socket: the clients reconnect and the balancer spreads them over the nodes up now."""
        for c in self.clients:
            await c.cut()
        await asyncio.sleep(0.2)
        await self.wait_connected(60.0)
        for c in self.clients:
            c.reconnects.clear()

    async def stop(self) -> None:
        """Stop every client."""
        for c in self.clients:
            await c.stop()
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
