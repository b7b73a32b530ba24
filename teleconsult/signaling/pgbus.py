"""Signaling across server nodes through PostgreSQL LISTEN/NOTIFY: one ordered input log for every node.

Every node publishes its websocket inputs (connect, frame received, disconnect, timer) with their ``now`` and a
globally unique connection id on the channel ``tbib_signaling``; PostgreSQL delivers notifications to every listener
in commit order, so every node feeds the same inputs in the same order to its own pure :class:`SignalingCore` and
reaches the same room state. Each node then performs only the sends and closes of its own connections, and stores the
record events of its own inputs. NOTIFY payloads are limited to 8000 bytes: larger inputs are zlib-compressed and,
if still too large, split into chunks sent in one transaction (PostgreSQL keeps one transaction's notifications
together and in order).

Limits: a node started after a room was opened does not know it (start nodes together, or route a consultation's
sockets to one node); losing the LISTEN connection stops the node's signaling (it logs and closes its sockets).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
import zlib
from collections.abc import Callable
from typing import Any, Final

import psycopg
from psycopg import AsyncConnection

from teleconsult.errors import SignalingError

log = logging.getLogger(__name__)

CHANNEL: Final = "tbib_signaling"
MAX_PAYLOAD: Final = 7900


def encode_chunks(message: dict[str, Any], max_payload: int = MAX_PAYLOAD) -> list[str]:
    """Payloads for one message: ``j<json>`` when small, else ``z<id>:<i>:<n>:<base64 zlib chunk>``."""
    text = json.dumps(message, separators=(",", ":"))
    if len(text.encode()) + 1 <= max_payload:
        return ["j" + text]
    blob = base64.b64encode(zlib.compress(text.encode(), 6)).decode("ascii")
    msg_id = secrets.token_hex(8)
    size = max_payload - 64
    parts = [blob[i : i + size] for i in range(0, len(blob), size)]
    return [f"z{msg_id}:{i}:{len(parts)}:{part}" for i, part in enumerate(parts)]


class Reassembler:
    """Turns payloads back into messages (chunks of one message arrive contiguously)."""

    def __init__(self) -> None:
        self._partial: dict[str, list[str]] = {}

    def feed(self, payload: str) -> dict[str, Any] | None:
        """The message completed by ``payload``, if any."""
        if payload.startswith("j"):
            message: dict[str, Any] = json.loads(payload[1:])
            return message
        if not payload.startswith("z"):
            raise ValueError("unknown signaling payload")
        msg_id, index, count, part = payload[1:].split(":", 3)
        parts = self._partial.setdefault(msg_id, [])
        if int(index) != len(parts):
            self._partial.pop(msg_id, None)
            raise ValueError(f"chunk {index} of {msg_id} out of order")
        parts.append(part)
        if len(parts) < int(count):
            return None
        del self._partial[msg_id]
        decoded: dict[str, Any] = json.loads(zlib.decompress(base64.b64decode("".join(parts))))
        return decoded


class PgInputLog:
    """Publish inputs with NOTIFY; deliver every node's inputs, in order, to ``on_input``."""

    def __init__(self, conninfo: str, *, channel: str = CHANNEL) -> None:
        self.conninfo = conninfo
        self.channel = channel
        self._listen: AsyncConnection[Any] | None = None
        self._notify: AsyncConnection[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def start(self, on_input: Callable[[dict[str, Any]], None], on_lost: Callable[[], None]) -> None:
        """LISTEN, then deliver notifications until :meth:`aclose`."""
        self._listen = await AsyncConnection.connect(self.conninfo, autocommit=True)
        self._notify = await AsyncConnection.connect(self.conninfo, autocommit=True)
        await self._listen.execute(f'listen "{self.channel}"')
        self._task = asyncio.create_task(self._loop(on_input, on_lost), name="signaling-pg-listen")

    async def _loop(self, on_input: Callable[[dict[str, Any]], None], on_lost: Callable[[], None]) -> None:
        assert self._listen is not None
        reassembler = Reassembler()
        try:
            async for notify in self._listen.notifies():
                try:
                    message = reassembler.feed(notify.payload)
                except (ValueError, zlib.error, json.JSONDecodeError) as exc:
                    log.warning("dropping a bad signaling notification: %s", exc)
                    continue
                if message is not None:
                    on_input(message)
        except psycopg.OperationalError:
            log.exception("signaling LISTEN connection lost")
            on_lost()

    async def publish(self, message: dict[str, Any]) -> None:
        """NOTIFY one input (chunks in one transaction)."""
        assert self._notify is not None
        payloads = encode_chunks(message)
        try:
            async with self._lock:
                if len(payloads) == 1:
                    await self._notify.execute("select pg_notify(%s, %s)", (self.channel, payloads[0]))
                    return
                async with self._notify.transaction():
                    for payload in payloads:
                        await self._notify.execute("select pg_notify(%s, %s)", (self.channel, payload))
        except psycopg.Error as exc:
            raise SignalingError(f"cannot publish to PostgreSQL: {exc}", code="unavailable") from exc

    async def aclose(self) -> None:
        """Stop listening and close both connections."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for conn in (self._listen, self._notify):
            if conn is not None:
                await conn.close()
