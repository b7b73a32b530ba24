"""The signaling core over all rooms of a node: connections, limits, token checks, stamping. Pure (no I/O, no clock).

Inputs: ``connect(conn, now)``, ``receive(conn, raw, now)``, ``disconnect(conn, now)``, ``handle_timer(now)``. Each
returns the :data:`~teleconsult.signaling.rooms.Outgoing` actions; frames leave with ``v``, ``seq`` (per connection,
from 1) and ``ts`` stamped here. ``get_timer()`` is the next deadline. A malformed, oversized or rate-limited frame
yields an ``error`` frame and the connection survives; only ``max_violations`` consecutive bad frames close it
(policy violation). Every ``error`` frame sent is counted by code in ``errors_sent``.

Rooms held elsewhere (the database, :mod:`.roomstore`): the adapter asks ``room_of(conn, raw, now)`` which room an
input touches, calls ``load`` with that room's state before the input and ``unload`` after it; actions addressed to
connections this core does not know (they live on another node) are set aside in ``forward`` for the adapter to
route, and the node that holds them stamps them with ``deliver(actions, now)``."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from teleconsult.errors import SignalingProtocolError, TokenError
from teleconsult.signaling.messages import MAX_FRAME_BYTES, PROTOCOL_VERSION, Join, client_seq, parse_frame
from teleconsult.signaling.rooms import (
    CLOSE_POLICY,
    Close,
    ConnId,
    Outgoing,
    Record,
    RecordKind,
    Room,
    Send,
    error_frame,
)
from teleconsult.signaling.tokens import verify_token
from teleconsult.signaling.turn import IceConfig

ENDED_MEMORY: Final = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class SignalingConfig:
    """Limits and secrets of the signaling core."""

    token_key: bytes
    """HS256 key of the join tokens (at least 32 bytes)."""
    ice: IceConfig = field(default_factory=IceConfig)
    """STUN/TURN handed out in ``joined``."""
    grace: timedelta = field(default=timedelta(seconds=30))
    """How long a dropped connection keeps its seat."""
    max_frame_bytes: int = MAX_FRAME_BYTES
    """Larger frames are refused with ``too-large``."""
    rate_per_second: float = 20.0
    """Token-bucket refill rate per connection (frames per second)."""
    rate_burst: float = 60.0
    """Token-bucket capacity: a browser trickles a burst of candidates right after its offer."""
    max_violations: int = 20
    """Consecutive refused frames after which the connection is closed."""


@dataclass(slots=True)
class TokenBucket:
    """Classic token bucket driven by the caller's clock (seconds)."""

    rate: float
    burst: float
    tokens: float
    updated: float

    def take(self, now: float) -> bool:
        """Consume one token if available."""
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(slots=True)
class Connection:
    """Per-connection state."""

    bucket: TokenBucket
    consultation_id: str | None = None
    out_seq: int = 0
    last_in_seq: int = -1
    violations: int = 0


class SignalingCore:
    """Rooms and connections of one node."""

    def __init__(self, config: SignalingConfig) -> None:
        self.config = config
        self.rooms: dict[str, Room] = {}
        self.connections: dict[ConnId, Connection] = {}
        #: Consultations ended by the doctor, with the end time: their still-valid tokens must not reopen them.
        self.ended: dict[str, datetime] = {}
        #: ``error`` frames sent, by code (malformed, rate-limited, bad-token, room-full...).
        self.errors_sent: Counter[str] = Counter()
        #: Sends and closes for connections of other nodes, set aside for the adapter (see :meth:`take_forward`).
        self.forward: list[Outgoing] = []

    # ----- rooms kept outside (database) ----------------------------------------------------------------------------
    def room_of(self, conn: ConnId, raw: str | bytes | None, now: datetime) -> str | None:
        """The room an input on ``conn`` touches (``raw`` None: a disconnect), without changing any state."""
        state = self.connections.get(conn)
        if state is None:
            return None
        if state.consultation_id is not None or raw is None:
            return state.consultation_id
        try:
            message = parse_frame(raw, max_bytes=self.config.max_frame_bytes)
            if isinstance(message, Join):
                return verify_token(message.token, key=self.config.token_key, now=now).consultation_id
        except (SignalingProtocolError, TokenError):
            return None
        return None

    def load(self, consultation_id: str, state: dict[str, Any] | None, ended_at: datetime | None) -> None:
        """Put a stored room (``state`` from :meth:`unload`) in place before an input."""
        self.rooms.pop(consultation_id, None)
        self.ended.pop(consultation_id, None)
        if ended_at is not None:
            self.ended[consultation_id] = ended_at
        if state is not None:
            self.rooms[consultation_id] = Room.from_state(
                consultation_id, state, ice=self.config.ice, grace=self.config.grace, ended=ended_at is not None
            )

    def unload(self, consultation_id: str) -> tuple[dict[str, Any] | None, datetime | None, datetime | None]:
        """Take a room out after an input: its state (None once empty), next grace deadline and end time."""
        room = self.rooms.pop(consultation_id, None)
        ended_at = self.ended.pop(consultation_id, None)
        if room is None or room.is_empty():
            return None, None, ended_at
        return room.to_state(), room.get_timer(), ended_at

    def take_forward(self) -> list[Outgoing]:
        """The actions for other nodes' connections since the last call."""
        out, self.forward = self.forward, []
        return out

    def deliver(self, actions: list[Outgoing], now: datetime) -> list[Outgoing]:
        """Actions routed from another node: keep those for our connections, stamped."""
        mine: list[Outgoing] = [a for a in actions if not isinstance(a, Record) and a.conn in self.connections]
        for action in mine:
            if isinstance(action, Close):  # the room closed it (denied, replaced, ended): it holds no seat now
                self.connections[action.conn].consultation_id = None
        return self._stamp(mine, now)

    # ----- inputs -------------------------------------------------------------------------------------------------
    def connect(self, conn: ConnId, now: datetime) -> list[Outgoing]:
        """A websocket was accepted: greet it with ``hello``."""
        c = self.config
        self.connections[conn] = Connection(TokenBucket(c.rate_per_second, c.rate_burst, c.rate_burst, now.timestamp()))
        hello = {
            "type": "hello",
            "max_frame_bytes": c.max_frame_bytes,
            "rate": {"per_second": c.rate_per_second, "burst": c.rate_burst},
            "grace_s": c.grace.total_seconds(),
        }
        return self._stamp([Send(conn, hello)], now)

    def receive(self, conn: ConnId, raw: str | bytes, now: datetime) -> list[Outgoing]:
        """One frame arrived on ``conn``."""
        state = self.connections.get(conn)
        if state is None:
            return []
        if not state.bucket.take(now.timestamp()):
            return self._stamp(self._refuse(conn, state, "rate-limited", "too many frames, slow down", None), now)
        try:
            message = parse_frame(raw, max_bytes=self.config.max_frame_bytes)
        except SignalingProtocolError as exc:
            seq = client_seq(raw) if exc.code != "too-large" else None
            return self._stamp(self._refuse(conn, state, exc.code, str(exc), seq), now)
        if message.seq <= state.last_in_seq:
            detail = f"seq {message.seq} is not greater than the previous {state.last_in_seq}"
            return self._stamp(self._refuse(conn, state, "bad-seq", detail, message.seq), now)
        state.last_in_seq = message.seq
        if isinstance(message, Join) and state.consultation_id is None:
            try:
                claims = verify_token(message.token, key=self.config.token_key, now=now)
            except TokenError as exc:
                return self._stamp(self._refuse(conn, state, exc.code, str(exc), message.seq), now)
            state.violations = 0
            self._forget_ended(now)
            if claims.consultation_id in self.ended:
                detail = "this consultation has ended"
                return self._stamp([Send(conn, error_frame("ended", detail, message.seq))], now)
            room = self.rooms.get(claims.consultation_id)
            if room is None:
                room = Room(claims.consultation_id, ice=self.config.ice, grace=self.config.grace)
                self.rooms[claims.consultation_id] = room
            out = room.join(conn, claims, now, re=message.seq)
            if room.seat_of(conn) is not None:
                state.consultation_id = claims.consultation_id
            return self._stamp(self._after(room, out), now)
        state.violations = 0
        if state.consultation_id is None:
            return self._stamp([Send(conn, error_frame("not-joined", "send join first", message.seq))], now)
        room = self.rooms[state.consultation_id]
        return self._stamp(self._after(room, room.handle(conn, message, now)), now)

    def disconnect(self, conn: ConnId, now: datetime) -> list[Outgoing]:
        """The websocket of ``conn`` is gone."""
        state = self.connections.pop(conn, None)
        if state is None or state.consultation_id is None:
            return []
        room = self.rooms.get(state.consultation_id)
        if room is None:
            return []
        return self._stamp(self._after(room, room.disconnect(conn, now)), now)

    def get_timer(self) -> datetime | None:
        """The next grace deadline over all rooms."""
        timers = [t for r in self.rooms.values() if (t := r.get_timer()) is not None]
        return min(timers) if timers else None

    def handle_timer(self, now: datetime) -> list[Outgoing]:
        """Expire grace periods due at ``now``."""
        out: list[Outgoing] = []
        for room in list(self.rooms.values()):
            out += self._after(room, room.handle_timer(now))
        return self._stamp(out, now)

    # ----- helpers ------------------------------------------------------------------------------------------------
    def _refuse(self, conn: ConnId, state: Connection, code: str, detail: str, re: int | None) -> list[Outgoing]:
        state.violations += 1
        out: list[Outgoing] = [Send(conn, error_frame(code, detail, re))]
        if state.violations >= self.config.max_violations:
            out.append(Close(conn, CLOSE_POLICY, f"{state.violations} refused frames in a row"))
        return out

    def _after(self, room: Room, out: list[Outgoing]) -> list[Outgoing]:
        """Bookkeeping after a room acted: closed connections leave it, empty or ended rooms are dropped."""
        for action in out:
            if isinstance(action, Close) and (state := self.connections.get(action.conn)) is not None:
                state.consultation_id = None
        for action in out:
            if isinstance(action, Record) and action.kind is RecordKind.ENDED:
                self.ended[room.consultation_id] = action.at
        if room.is_empty():
            self.rooms.pop(room.consultation_id, None)
        return out

    def _forget_ended(self, now: datetime) -> None:
        """Ended consultations are remembered for a day: longer than any join token lives."""
        for cid, at in list(self.ended.items()):
            if now - at > ENDED_MEMORY:
                del self.ended[cid]

    def _stamp(self, out: list[Outgoing], now: datetime) -> list[Outgoing]:
        stamped: list[Outgoing] = []
        for action in out:
            if not isinstance(action, Record) and action.conn not in self.connections:
                self.forward.append(action)
                continue
            if isinstance(action, Send):
                state = self.connections[action.conn]
                if action.frame.get("type") == "error":
                    self.errors_sent[str(action.frame.get("code"))] += 1
                state.out_seq += 1
                frame: dict[str, Any] = {"v": PROTOCOL_VERSION, "seq": state.out_seq, **action.frame}
                frame.setdefault("from", "server")
                frame["ts"] = now.isoformat().replace("+00:00", "Z")
                stamped.append(Send(action.conn, frame))
            else:
                stamped.append(action)
        return stamped
