"""Signaling rooms in PostgreSQL (migration 0310, table ``signaling_rooms``), so that any API node serves any room.

The node that receives an input locks the room's row (``select ... for update``), loads the seats into its pure
:class:`~teleconsult.signaling.core.SignalingCore`, applies the input, writes the seats back and, in the same
transaction, NOTIFYs on ``tbib_signaling`` the frames and closes meant for connections held by other nodes. Each node
LISTENs and delivers those for its own websockets. Row locks order the inputs of one room across nodes; notifications
arrive in commit order. A node that starts (or restarts) later reads the rooms from the table: nothing to replay.

Grace deadlines are the ``next_timer`` column; every node polls for due rooms (``skip locked``) once a second.
Payloads over 8000 bytes are split by :mod:`.pgbus` (chunks of one transaction stay together and in order).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import psycopg
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from teleconsult.errors import SignalingError
from teleconsult.signaling.pgbus import CHANNEL, Reassembler, encode_chunks
from teleconsult.signaling.rooms import Close, Outgoing, Send

OnActions = Callable[[list[Outgoing]], None]
OnLost = Callable[[], None]

log = logging.getLogger(__name__)

DUE_BATCH: Final = 50


def actions_to_json(actions: list[Outgoing]) -> list[dict[str, Any]]:
    """Sends and closes as JSON for another node."""
    out: list[dict[str, Any]] = []
    for a in actions:
        if isinstance(a, Send):
            out.append({"s": a.conn, "f": a.frame})
        elif isinstance(a, Close):
            out.append({"x": a.conn, "c": a.code, "r": a.reason})
    return out


def actions_from_json(items: list[dict[str, Any]]) -> list[Outgoing]:
    """Back from :func:`actions_to_json`; malformed items are dropped."""
    out: list[Outgoing] = []
    for item in items:
        if isinstance(item.get("s"), int) and isinstance(item.get("f"), dict):
            out.append(Send(item["s"], item["f"]))
        elif isinstance(item.get("x"), int) and isinstance(item.get("c"), int):
            out.append(Close(item["x"], item["c"], str(item.get("r", ""))))
    return out


@dataclass(slots=True)
class RoomSlot:
    """One room's row, locked for the current input."""

    conn: AsyncConnection[Any]
    consultation_id: str
    state: dict[str, Any] | None
    ended_at: datetime | None
    forwards: list[dict[str, Any]] = field(default_factory=list)

    async def save(self, state: dict[str, Any] | None, next_timer: datetime | None, ended_at: datetime | None) -> None:
        """Write the room back (delete its row once empty and not ended)."""
        if state is None and ended_at is None:
            await self.conn.execute("delete from signaling_rooms where consultation_id = %s", (self.consultation_id,))
            return
        if state == self.state and ended_at == self.ended_at:
            return  # relayed frames do not change the seats
        await self.conn.execute(
            "update signaling_rooms set state = %s, next_timer = %s, ended_at = %s, updated_at = now()"
            " where consultation_id = %s",
            (Jsonb(state or {}), next_timer, ended_at, self.consultation_id),
        )

    async def forward(self, node_id: str, actions: list[Outgoing]) -> None:
        """NOTIFY other nodes of the actions for their connections (delivered at commit)."""
        if not actions:
            return
        for payload in encode_chunks({"n": node_id, "a": actions_to_json(actions)}):
            await self.conn.execute("select pg_notify(%s, %s)", (CHANNEL, payload))


#: Backoff of the LISTEN connection while PostgreSQL is unreachable.
LISTEN_RETRY_MIN_S: Final = 1.0
LISTEN_RETRY_MAX_S: Final = 10.0


class PgRoomStore:
    """Room rows and the cross-node delivery channel."""

    def __init__(self, pool: AsyncConnectionPool[Any], conninfo: str, *, channel: str = CHANNEL) -> None:
        self.pool = pool
        self.conninfo = conninfo
        self.channel = channel
        self._listen: AsyncConnection[Any] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, node_id: str, on_actions: OnActions, on_lost: OnLost) -> None:
        """LISTEN for other nodes' deliveries until :meth:`aclose`, reconnecting with backoff.

        A node starts even while PostgreSQL is down (``/healthz`` says so and the load balancer routes around it);
        inputs fail with ``unavailable`` until the database is back. A lost LISTEN connection calls ``on_lost``
        (local sockets are closed so that clients rejoin and resync), then the loop connects again.
        """
        listening = await self._connect(LISTEN_RETRY_MIN_S)  # listening before start returns, when it can be
        self._task = asyncio.create_task(self._run(node_id, on_actions, on_lost, listening), name="signaling-pg-listen")

    async def _connect(self, retry_s: float) -> bool:
        try:
            self._listen = await AsyncConnection.connect(self.conninfo, autocommit=True)
            await self._listen.execute(f'listen "{self.channel}"')
        except psycopg.Error as exc:
            log.warning("signaling: cannot listen on PostgreSQL (retry in %.0f s): %s", retry_s, exc)
            await self._close_listen()
            return False
        return True

    async def _run(self, node_id: str, on_actions: OnActions, on_lost: OnLost, listening: bool) -> None:
        delay = LISTEN_RETRY_MIN_S
        while True:
            if not listening:
                await asyncio.sleep(delay)
                delay = min(delay * 2, LISTEN_RETRY_MAX_S)
                listening = await self._connect(delay)
                continue
            delay = LISTEN_RETRY_MIN_S
            await self._loop(node_id, on_actions, on_lost)
            await self._close_listen()
            listening = await self._connect(delay)

    async def _close_listen(self) -> None:
        if self._listen is not None:
            with contextlib.suppress(psycopg.Error):
                await self._listen.close()
            self._listen = None

    async def _loop(self, node_id: str, on_actions: OnActions, on_lost: OnLost) -> None:
        assert self._listen is not None
        reassembler = Reassembler()
        try:
            async for notify in self._listen.notifies():
                try:
                    message = reassembler.feed(notify.payload)
                except (ValueError, zlib.error, json.JSONDecodeError) as exc:
                    log.warning("dropping a bad signaling notification: %s", exc)
                    continue
                if message is None or message.get("n") == node_id or not isinstance(message.get("a"), list):
                    continue
                on_actions(actions_from_json(message["a"]))
        except psycopg.OperationalError:
            log.exception("signaling LISTEN connection lost")
            on_lost()

    @contextlib.asynccontextmanager
    async def room(self, consultation_id: str) -> AsyncIterator[RoomSlot]:
        """Lock the room's row (created empty if absent) for one input; commit on exit."""
        try:
            async with self.pool.connection() as conn, conn.transaction():
                await conn.execute(
                    "insert into signaling_rooms (consultation_id, state) values (%s, '{}')"
                    " on conflict (consultation_id) do nothing",
                    (consultation_id,),
                )
                cur = await conn.execute(
                    "select state, ended_at from signaling_rooms where consultation_id = %s for update",
                    (consultation_id,),
                )
                row = await cur.fetchone()
                assert row is not None
                state = row[0] if row[0] else None
                yield RoomSlot(conn, consultation_id, state, row[1])
        except psycopg.Error as exc:
            raise SignalingError(f"room store unavailable: {exc}", code="unavailable") from exc

    async def due(self, now: datetime) -> list[str]:
        """Rooms whose grace deadline has passed."""
        try:
            async with self.pool.connection() as conn:
                cur = await conn.execute(
                    "select consultation_id from signaling_rooms where next_timer <= %s order by next_timer limit %s",
                    (now, DUE_BATCH),
                )
                return [r[0] for r in await cur.fetchall()]
        except psycopg.Error as exc:
            raise SignalingError(f"room store unavailable: {exc}", code="unavailable") from exc

    async def aclose(self) -> None:
        """Stop listening (the pool belongs to the caller)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close_listen()
