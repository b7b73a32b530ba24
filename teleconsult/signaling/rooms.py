"""One consultation room: a pure state machine over seats (no sockets, no clock).

``Room.join(conn, claims, now)``, ``Room.handle(conn, message, now)``, ``Room.disconnect(conn, now)`` and
``Room.handle_timer(now)`` return the list of :data:`Outgoing` actions (frames to send, connections to close, record
events); ``Room.get_timer()`` says when ``handle_timer`` must next be called. Expected conditions (peer left,
denied, seat taken) are frames, never exceptions.

Rules
- Seats: doctor, patient (the patient's browser *or* their gateway agent), and the guests of invitation links
  (nurse, interpreter, family); at most one occupant each and at most :data:`MAX_SEATS` held at once.
- The doctor enters directly; the others wait in the lobby until the doctor admits (or denies) them.
- A seat whose connection drops is kept for ``grace`` (same subject may reclaim it with a new join); then it is freed.
- Relayed frames (offer/answer/candidate/renegotiate-request) go only between admitted, connected seats.

:meth:`Room.to_state` / :meth:`Room.from_state` turn the seats into JSON and back, so an adapter can keep the room in
the database between inputs (:mod:`.roomstore`) and any node can serve it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from teleconsult.signaling.messages import (
    MAX_SEATS,
    Admit,
    Bye,
    Candidate,
    ClientMessage,
    Deny,
    Join,
    Ping,
    RelayMessage,
    Seat,
)
from teleconsult.signaling.tokens import JoinClaims, Role
from teleconsult.signaling.turn import IceConfig, ice_servers

ConnId = int

#: WebSocket close codes (RFC 6455 private range 4000-4999 for ours).
CLOSE_NORMAL: Final = 1000
CLOSE_POLICY: Final = 1008
CLOSE_REPLACED: Final = 4000
CLOSE_DENIED: Final = 4003
CLOSE_ENDED: Final = 4004

SEAT_OF_ROLE: Final[dict[Role, Seat]] = {
    Role.DOCTOR: Seat.DOCTOR,
    Role.PATIENT: Seat.PATIENT,
    Role.AGENT: Seat.PATIENT,
    Role.INTERPRETER: Seat.INTERPRETER,
    Role.NURSE: Seat.NURSE,
    Role.FAMILY: Seat.FAMILY,
}


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``frame`` (without ``v``/``seq``: the core stamps them) on connection ``conn``."""

    conn: ConnId
    frame: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Close:
    """Close connection ``conn`` with a WebSocket close code."""

    conn: ConnId
    code: int
    reason: str


class RecordKind(StrEnum):
    """Events of the consultation record (stored and audited by the adapter; no media is recorded)."""

    STARTED = "started"
    WAITING = "waiting"
    JOINED = "joined"
    ADMITTED = "admitted"
    DENIED = "denied"
    LEFT = "left"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class Record:
    """An event for the consultation record."""

    consultation_id: str
    kind: RecordKind
    at: datetime
    seat: Seat | None = None
    role: Role | None = None
    subject: str | None = None
    by: str | None = None
    reason: str | None = None


Outgoing = Send | Close | Record


class SeatStatus(StrEnum):
    """Where an occupant stands."""

    WAITING = "waiting"
    ADMITTED = "admitted"


@dataclass(slots=True)
class Occupant:
    """Who holds a seat, on which connection (``None`` while in the grace period)."""

    seat: Seat
    role: Role
    subject: str
    conn: ConnId | None
    status: SeatStatus
    grace_until: datetime | None = None
    name: str | None = None

    def to_state(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "seat": self.seat.value,
            "role": self.role.value,
            "subject": self.subject,
            "conn": self.conn,
            "status": self.status.value,
            "grace_until": self.grace_until.isoformat() if self.grace_until else None,
            "name": self.name,
        }

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> Occupant:
        """Back from :meth:`to_state`."""
        grace = data.get("grace_until")
        return cls(
            Seat(data["seat"]),
            Role(data["role"]),
            str(data["subject"]),
            data.get("conn"),
            SeatStatus(data["status"]),
            datetime.fromisoformat(grace) if grace else None,
            data.get("name"),
        )


def _named(item: dict[str, Any], name: str | None) -> dict[str, Any]:
    """``item`` with the guest's ``name`` when there is one (invitation links)."""
    return item if name is None else {**item, "name": name}


def error_frame(code: str, detail: str, re: int | None = None) -> dict[str, Any]:
    """An ``error`` frame; ``re`` is the ``seq`` of the offending client frame when known."""
    return {"type": "error", "code": code, "detail": detail, "re": re}


@dataclass(slots=True)
class Room:
    """State of one consultation's signaling."""

    consultation_id: str
    ice: IceConfig = field(default_factory=IceConfig)
    grace: timedelta = field(default=timedelta(seconds=30))
    seats: dict[Seat, Occupant] = field(default_factory=dict)
    started: bool = False
    ended: bool = False

    # ----- queries -----------------------------------------------------------------------------------------------
    def seat_of(self, conn: ConnId) -> Occupant | None:
        """The occupant on connection ``conn``."""
        return next((o for o in self.seats.values() if o.conn == conn), None)

    def is_empty(self) -> bool:
        """No seat is held (not even in grace)."""
        return not self.seats

    def get_timer(self) -> datetime | None:
        """When the next grace period ends."""
        deadlines = [o.grace_until for o in self.seats.values() if o.grace_until is not None]
        return min(deadlines) if deadlines else None

    def _admitted(self, *, exclude: Seat | None = None, connected: bool = True) -> list[Occupant]:
        return [
            o
            for o in self.seats.values()
            if o.status is SeatStatus.ADMITTED and o.seat is not exclude and (o.conn is not None or not connected)
        ]

    def to_state(self) -> dict[str, Any]:
        """The room as JSON (seats and whether it started; ``ended`` is the adapter's column)."""
        return {"started": self.started, "seats": [o.to_state() for o in self.seats.values()]}

    @classmethod
    def from_state(
        cls, consultation_id: str, data: dict[str, Any], *, ice: IceConfig, grace: timedelta, ended: bool = False
    ) -> Room:
        """Back from :meth:`to_state`."""
        seats = [Occupant.from_state(o) for o in data.get("seats", [])]
        return cls(consultation_id, ice, grace, {o.seat: o for o in seats}, bool(data.get("started")), ended)

    def _peers(self, me: Seat) -> list[dict[str, Any]]:
        return [
            _named({"seat": o.seat.value, "role": o.role.value, "connected": o.conn is not None}, o.name)
            for o in self._admitted(exclude=me, connected=False)
        ]

    def _lobby_frame(self) -> dict[str, Any]:
        waiting = [
            _named({"seat": o.seat.value, "role": o.role.value, "subject": o.subject}, o.name)
            for o in self.seats.values()
            if o.status is SeatStatus.WAITING
        ]
        return {"type": "lobby", "waiting": waiting}

    def _to_doctor_lobby(self) -> list[Outgoing]:
        doctor = self.seats.get(Seat.DOCTOR)
        if doctor is None or doctor.conn is None or doctor.status is not SeatStatus.ADMITTED:
            return []
        return [Send(doctor.conn, self._lobby_frame())]

    def _broadcast(self, frame: dict[str, Any], *, exclude: Seat | None) -> list[Outgoing]:
        return [Send(o.conn, dict(frame)) for o in self._admitted(exclude=exclude) if o.conn is not None]

    def _record(self, kind: RecordKind, now: datetime, occ: Occupant | None = None, **kw: str | None) -> Record:
        return Record(
            self.consultation_id,
            kind,
            now,
            seat=occ.seat if occ else None,
            role=occ.role if occ else None,
            subject=occ.subject if occ else None,
            **kw,
        )

    def _enter(self, occ: Occupant, now: datetime, *, resumed: bool) -> list[Outgoing]:
        """``occ`` becomes (or is again) an admitted, connected participant."""
        assert occ.conn is not None
        out: list[Outgoing] = [
            Send(
                occ.conn,
                {
                    "type": "joined",
                    "consultation": self.consultation_id,
                    "seat": occ.seat.value,
                    "role": occ.role.value,
                    "peers": self._peers(occ.seat),
                    "iceServers": ice_servers(self.ice, occ.subject.replace(":", "_"), now),
                    "resumed": resumed,
                    "grace_s": self.grace.total_seconds(),
                },
            )
        ]
        out += self._broadcast(
            _named(
                {"type": "peer-joined", "seat": occ.seat.value, "role": occ.role.value, "resumed": resumed}, occ.name
            ),
            exclude=occ.seat,
        )
        return out

    # ----- inputs ------------------------------------------------------------------------------------------------
    def join(self, conn: ConnId, claims: JoinClaims, now: datetime, *, re: int | None = None) -> list[Outgoing]:
        """A connection presents a verified token for this room."""
        if self.ended:
            return [Send(conn, error_frame("ended", "this consultation has ended", re))]
        seat = SEAT_OF_ROLE[claims.role]
        occ = self.seats.get(seat)
        out: list[Outgoing] = []
        if occ is not None and occ.subject != claims.subject:
            detail = f"the {seat.value} seat is taken (one occupant per seat)"
            return [Send(conn, error_frame("room-full", detail, re))]
        if occ is None and len(self.seats) >= MAX_SEATS:
            detail = f"the room is full: at most {MAX_SEATS} seats (doctor, patient and two guests)"
            return [Send(conn, error_frame("room-full", detail, re))]
        if occ is not None:  # same subject: reconnect within grace, or a second tab replacing the first
            if occ.conn is not None and occ.conn != conn:
                out.append(Send(occ.conn, {"type": "bye", "reason": "replaced by a newer connection"}))
                out.append(Close(occ.conn, CLOSE_REPLACED, "replaced"))
            resumed = occ.conn is None
            occ.conn, occ.grace_until, occ.role = conn, None, claims.role
            if occ.status is SeatStatus.ADMITTED:
                out += self._enter(occ, now, resumed=resumed)
                if seat is Seat.DOCTOR and any(o.status is SeatStatus.WAITING for o in self.seats.values()):
                    out += self._to_doctor_lobby()  # who knocked while the doctor was away (in grace)
                return out
            return [*out, Send(conn, self._lobby_frame()), *self._to_doctor_lobby()]
        status = SeatStatus.ADMITTED if seat is Seat.DOCTOR else SeatStatus.WAITING
        occ = Occupant(seat, claims.role, claims.subject, conn, status, name=claims.name)
        self.seats[seat] = occ
        if not self.started:
            self.started = True
            out.append(self._record(RecordKind.STARTED, now))
        if status is SeatStatus.ADMITTED:
            out.append(self._record(RecordKind.JOINED, now, occ))
            out += self._enter(occ, now, resumed=False)
            if any(o.status is SeatStatus.WAITING for o in self.seats.values()):
                out += self._to_doctor_lobby()
            return out
        out.append(self._record(RecordKind.WAITING, now, occ))
        return [*out, Send(conn, self._lobby_frame()), *self._to_doctor_lobby()]

    def handle(self, conn: ConnId, message: ClientMessage, now: datetime) -> list[Outgoing]:
        """A validated frame from a connection that holds a seat here."""
        occ = self.seat_of(conn)
        if occ is None:
            return [Send(conn, error_frame("not-joined", "join the room first", message.seq))]
        if isinstance(message, Join):
            return [Send(conn, error_frame("already-joined", "this connection already holds a seat", message.seq))]
        if isinstance(message, Ping):
            return [Send(conn, {"type": "pong", "re": message.seq})]
        if isinstance(message, Bye):
            return self._bye(occ, message, now)
        if isinstance(message, Admit | Deny):
            return self._moderate(occ, message, now)
        return self._relay(occ, message)

    def _moderate(self, occ: Occupant, message: Admit | Deny, now: datetime) -> list[Outgoing]:
        assert occ.conn is not None
        if occ.seat is not Seat.DOCTOR or occ.status is not SeatStatus.ADMITTED:
            return [Send(occ.conn, error_frame("forbidden", f"only the doctor may {message.type}", message.seq))]
        target = self.seats.get(message.seat)
        if target is None or target.status is not SeatStatus.WAITING:
            return [
                Send(
                    occ.conn, error_frame("not-waiting", f"nobody waits for the {message.seat.value} seat", message.seq)
                )
            ]
        if isinstance(message, Admit):
            target.status = SeatStatus.ADMITTED
            out: list[Outgoing] = [self._record(RecordKind.ADMITTED, now, target, by=occ.subject)]
            if target.conn is not None:
                out += self._enter(target, now, resumed=False)
            return out + self._to_doctor_lobby()
        del self.seats[target.seat]
        out = [self._record(RecordKind.DENIED, now, target, by=occ.subject, reason=message.reason)]
        if target.conn is not None:
            out.append(Send(target.conn, {"type": "deny", "reason": message.reason or "the doctor declined"}))
            out.append(Close(target.conn, CLOSE_DENIED, "denied"))
        return out + self._to_doctor_lobby()

    def _relay(self, occ: Occupant, message: RelayMessage) -> list[Outgoing]:
        assert occ.conn is not None
        if occ.status is not SeatStatus.ADMITTED:
            return [Send(occ.conn, error_frame("not-admitted", "wait until the doctor admits you", message.seq))]
        if message.to is None:
            others = self._admitted(exclude=occ.seat, connected=False)
            if len(others) != 1:
                detail = f"'to' is required when {len(others)} other seats are in the call"
                return [Send(occ.conn, error_frame("no-recipient", detail, message.seq))]
            target: Occupant | None = others[0]
        else:
            target = self.seats.get(message.to)
        if target is None or target is occ or target.status is not SeatStatus.ADMITTED or target.conn is None:
            detail = f"the {(message.to or (target.seat if target else Seat.DOCTOR)).value} seat is not in the call"
            return [Send(occ.conn, error_frame("peer-unavailable", detail, message.seq))]
        frame = message.model_dump(mode="json", exclude={"v", "seq", "to"})
        if isinstance(message, Candidate) and message.candidate is not None:
            frame["candidate"] = message.candidate.model_dump(mode="json", exclude_none=True)
        frame["from"] = occ.seat.value
        return [Send(target.conn, frame)]

    def _bye(self, occ: Occupant, message: Bye, now: datetime) -> list[Outgoing]:
        assert occ.conn is not None
        if message.end and occ.seat is Seat.DOCTOR:
            return self.end(now, by=occ.subject, reason=message.reason)
        out = self._free(occ, now, reason="bye")
        return [*out, Close(occ.conn, CLOSE_NORMAL, "bye")]

    def _free(self, occ: Occupant, now: datetime, *, reason: str) -> list[Outgoing]:
        del self.seats[occ.seat]
        out: list[Outgoing] = [self._record(RecordKind.LEFT, now, occ, reason=reason)]
        if occ.status is SeatStatus.ADMITTED:
            out += self._broadcast({"type": "peer-left", "seat": occ.seat.value, "reason": reason}, exclude=occ.seat)
        else:
            out += self._to_doctor_lobby()
        return out

    def end(self, now: datetime, *, by: str | None, reason: str | None) -> list[Outgoing]:
        """The consultation is over: everyone gets ``bye`` and is disconnected."""
        out: list[Outgoing] = []
        for o in list(self.seats.values()):
            if o.conn is not None:
                out.append(Send(o.conn, {"type": "bye", "reason": reason or "the consultation has ended", "end": True}))
                out.append(Close(o.conn, CLOSE_ENDED, "ended"))
        self.seats.clear()
        self.ended = True
        out.append(self._record(RecordKind.ENDED, now, by=by, reason=reason))
        return out

    def disconnect(self, conn: ConnId, now: datetime) -> list[Outgoing]:
        """Connection ``conn`` dropped: an admitted seat is kept for the grace period, a waiting one is freed."""
        occ = self.seat_of(conn)
        if occ is None:
            return []
        if occ.status is SeatStatus.WAITING:
            return self._free(occ, now, reason="disconnected")
        occ.conn, occ.grace_until = None, now + self.grace
        return self._broadcast(
            {"type": "peer-left", "seat": occ.seat.value, "reason": "disconnected", "temporary": True},
            exclude=occ.seat,
        )

    def handle_timer(self, now: datetime) -> list[Outgoing]:
        """Free the seats whose grace period is over."""
        out: list[Outgoing] = []
        for occ in list(self.seats.values()):
            if occ.grace_until is not None and occ.grace_until <= now:
                out += self._free(occ, now, reason="timeout")
        return out
