"""Signaling frames: the client-to-server schema (validated with pydantic at the boundary) and the frame parser.

Every frame is one JSON object ``{"v": 1, "type": ..., "seq": n, ...}``. Clients number their frames with strictly
increasing ``seq`` per connection; the server numbers its own frames per connection and stamps ``from`` (the
sender's seat) on relayed frames. WebRTC objects keep the browser's field names (``sdpMid``, ``iceServers``);
everything else is snake_case. Full reference: docs/teleconsultation.md."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from teleconsult.errors import SignalingProtocolError

PROTOCOL_VERSION: Final = 1
MAX_FRAME_BYTES: Final = 64 * 1024
MAX_SDP_CHARS: Final = 48 * 1024


class Seat(StrEnum):
    """The seats of a consultation room (at most :data:`MAX_SEATS` held at once), in offering order: in the mesh,
    of two seats the one listed first makes the offer."""

    DOCTOR = "doctor"
    NURSE = "nurse"
    INTERPRETER = "interpreter"
    FAMILY = "family"
    PATIENT = "patient"


#: Doctor + patient + two guests (nurse, interpreter or family): a mesh of 4 is 6 peer connections, 3 per browser.
MAX_SEATS: Final = 4


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1]
    seq: Annotated[int, Field(strict=True, ge=0, le=2**53)]


class Join(_Frame):
    """Enter the room with a join token (also used to reclaim a seat within its grace period)."""

    type: Literal["join"]
    token: Annotated[str, Field(min_length=1, max_length=4096)]


class Admit(_Frame):
    """Doctor only: let a waiting seat into the call."""

    type: Literal["admit"]
    seat: Seat


class Deny(_Frame):
    """Doctor only: refuse a waiting seat; its connection is closed."""

    type: Literal["deny"]
    seat: Seat
    reason: Annotated[str, Field(max_length=200)] | None = None


class Offer(_Frame):
    """An SDP offer for ``to`` (default: the only other admitted seat)."""

    type: Literal["offer"]
    to: Seat | None = None
    sdp: Annotated[str, Field(min_length=1, max_length=MAX_SDP_CHARS)]


class Answer(_Frame):
    """An SDP answer for ``to``."""

    type: Literal["answer"]
    to: Seat | None = None
    sdp: Annotated[str, Field(min_length=1, max_length=MAX_SDP_CHARS)]


class CandidateInit(BaseModel):
    """RTCIceCandidateInit as a browser serialises it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    candidate: Annotated[str, Field(max_length=1024)]
    sdpMid: Annotated[str, Field(max_length=64)] | None = None
    sdpMLineIndex: Annotated[int, Field(ge=0, le=255)] | None = None
    usernameFragment: Annotated[str, Field(max_length=256)] | None = None


class Candidate(_Frame):
    """A trickled ICE candidate; ``candidate: null`` means end of candidates."""

    type: Literal["candidate"]
    to: Seat | None = None
    candidate: CandidateInit | None


class RenegotiateRequest(_Frame):
    """Ask the offering side for a new offer (aiortc cannot offer to a browser nor restart ICE)."""

    type: Literal["renegotiate-request"]
    to: Seat | None = None
    reason: Annotated[str, Field(max_length=200)] | None = None


class Bye(_Frame):
    """Leave the room; the doctor may end the consultation for everyone with ``end: true``."""

    type: Literal["bye"]
    reason: Annotated[str, Field(max_length=200)] | None = None
    end: bool = False


class Ping(_Frame):
    """Keep-alive; answered with ``pong``."""

    type: Literal["ping"]


ClientMessage = Join | Admit | Deny | Offer | Answer | Candidate | RenegotiateRequest | Bye | Ping
RelayMessage = Offer | Answer | Candidate | RenegotiateRequest

_ADAPTER: Final[TypeAdapter[ClientMessage]] = TypeAdapter(
    Annotated[ClientMessage, Field(discriminator="type")],
)


def parse_frame(raw: str | bytes, *, max_bytes: int = MAX_FRAME_BYTES) -> ClientMessage:
    """Decode one client frame; raise :class:`SignalingProtocolError` (code ``too-large``, ``malformed``...)."""
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > max_bytes:
        raise SignalingProtocolError(f"frame is {size} bytes, the limit is {max_bytes}", code="too-large")
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SignalingProtocolError(f"frame is not JSON: {exc}", code="malformed") from exc
    if not isinstance(obj, dict):
        raise SignalingProtocolError("frame must be a JSON object", code="malformed")
    if obj.get("v") != PROTOCOL_VERSION and "v" in obj:
        raise SignalingProtocolError(
            f"protocol version {obj.get('v')!r} is not supported (server speaks {PROTOCOL_VERSION})",
            code="unsupported-version",
        )
    try:
        return _ADAPTER.validate_python(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "type"
        raise SignalingProtocolError(f"{where}: {first['msg']}", code="malformed") from exc


def client_seq(raw: str | bytes) -> int | None:
    """Best-effort ``seq`` of a frame that failed validation, so the error frame can refer to it."""
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    seq = obj.get("seq") if isinstance(obj, dict) else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None
