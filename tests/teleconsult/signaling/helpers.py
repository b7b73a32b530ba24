"""Shared test helpers for signaling tests: tokens, a clock and a driver for the pure core."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from teleconsult.signaling.core import SignalingConfig, SignalingCore
from teleconsult.signaling.rooms import Close, Outgoing, Record, Send
from teleconsult.signaling.tokens import Role, issue_token

KEY = b"k" * 32
T0 = datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC)


def token(
    role: Role, *, cid: str = "c1", sub: str | None = None, now: datetime = T0, key: bytes = KEY, **kw: Any
) -> str:
    return issue_token(key=key, consultation_id=cid, role=role, subject=sub or f"{role.value}-1", now=now, **kw)


class Driver:
    """Feeds the core and keeps per-connection inboxes."""

    def __init__(self, config: SignalingConfig | None = None) -> None:
        self.core = SignalingCore(config or SignalingConfig(token_key=KEY))
        self.now = T0
        self.inbox: dict[int, list[dict[str, Any]]] = {}
        self.closed: dict[int, tuple[int, str]] = {}
        self.records: list[Record] = []
        self.seq: dict[int, int] = {}

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def _apply(self, out: list[Outgoing]) -> list[Outgoing]:
        for a in out:
            if isinstance(a, Send):
                self.inbox.setdefault(a.conn, []).append(a.frame)
            elif isinstance(a, Close):
                self.closed[a.conn] = (a.code, a.reason)
            else:
                self.records.append(a)
        return out

    def connect(self, conn: int) -> None:
        self._apply(self.core.connect(conn, self.now))

    def raw(self, conn: int, raw: str | bytes) -> list[Outgoing]:
        return self._apply(self.core.receive(conn, raw, self.now))

    def send(self, conn: int, type_: str, **fields: Any) -> list[Outgoing]:
        self.seq[conn] = self.seq.get(conn, 0) + 1
        frame = {"v": 1, "seq": self.seq[conn], "type": type_, **fields}
        return self.raw(conn, json.dumps(frame))

    def join(self, conn: int, role: Role, **kw: Any) -> None:
        self.connect(conn)
        self.send(conn, "join", token=token(role, now=self.now, **kw))

    def drop(self, conn: int) -> None:
        self._apply(self.core.disconnect(conn, self.now))

    def timer(self) -> None:
        self._apply(self.core.handle_timer(self.now))

    def types(self, conn: int) -> list[str]:
        return [f["type"] for f in self.inbox.get(conn, [])]

    def last(self, conn: int) -> dict[str, Any]:
        return self.inbox[conn][-1]

    def take(self, conn: int) -> list[dict[str, Any]]:
        frames = self.inbox.get(conn, [])
        self.inbox[conn] = []
        return frames
