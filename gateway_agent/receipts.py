"""Commit receipts, gateway side (MQTT contract v1 extension, ``docs/mqtt.md``): pure, clock-free bookkeeping.

A reading leaves the outbox only when the database has committed (or rejected) it:

- Every batch names itself: ``"batch": {"epoch": "<16 hex>", "seq": [first, last]}`` — the outbox's epoch (random,
  chosen when the outbox file is created) and the capture sequence range of the readings in it. Every reading stored in
  the outbox with a sequence number in ``[first, last]`` when the batch was built is in the batch, and no reading can
  enter that range later (sequence numbers only grow), so the range *is* the batch.
- PUBACK marks the batch ``sent`` (durable column in the outbox) and starts its receipt timer.
- The receipt (``tbib/v1/gw/{id}/receipts``, QoS 1) echoes the batch ranges it covers, and lists rejected readings with
  their reason: the outbox deletes every row in those ranges (committed or rejected: both are final).
- A batch without a receipt ``timeout`` seconds after its PUBACK is re-sent with the same ids (the ingest is
  idempotent). After ``fallback_after`` timeouts with no receipt at all on the current connection, the server is taken
  to be an old one that never sends receipts: :class:`ReceiptTracker` switches to PUBACK mode (delete on PUBACK, as
  before receipts) so that the outbox does not grow forever. A receipt switches it back; so does a new connection.

:class:`ReceiptTracker` keeps the timers and the mode; :func:`parse_receipt` validates a receipt message. Neither does
I/O nor reads a clock: the caller passes ``now`` (the publisher's monotonic clock).
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass, field
from typing import Any, Final

EPOCH_RE: Final = re.compile(r"^[0-9a-f]{16}$")


class ReceiptMode(enum.StrEnum):
    """How the outbox learns that a reading is done."""

    RECEIPTS = "receipts"
    """Delete on the server's commit receipt (PUBACK only marks ``sent``)."""
    PUBACK = "puback"
    """Delete on PUBACK (an old server that sends no receipts)."""


@dataclass(frozen=True, slots=True)
class RejectedReading:
    """A reading the server will never store: ``id`` when it could be read, and why."""

    id: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Receipt:
    """A parsed receipt: ``ranges`` of this outbox's epoch that are done, committed ``ids`` (plain-id form), and the
    rejected readings. ``foreign_ranges`` counts ranges of another epoch (an older outbox file): ignored."""

    ranges: tuple[tuple[int, int], ...]
    ids: tuple[str, ...] = ()
    rejected: tuple[RejectedReading, ...] = ()
    foreign_ranges: int = 0


def epoch_text(epoch: int) -> str:
    """The outbox epoch as it appears in payloads (16 lowercase hex digits)."""
    return f"{epoch & 0xFFFF_FFFF_FFFF_FFFF:016x}"


def batch_field(epoch: int, first: int, last: int) -> dict[str, Any]:
    """The ``"batch"`` member of a reading batch."""
    return {"epoch": epoch_text(epoch), "seq": [first, last]}


def _range(value: object) -> tuple[int, int] | None:
    if not isinstance(value, list) or len(value) != 2:
        return None
    a, b = value
    if type(a) is not int or type(b) is not int or not 0 < a <= b:
        return None
    return a, b


def parse_receipt(payload: bytes, *, gateway_id: str, epoch: int) -> Receipt | str:
    """A :class:`Receipt` for this gateway and outbox epoch, or the reason the message is not a valid receipt."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"receipt is not JSON: {exc}"[:200]
    if not isinstance(doc, dict) or doc.get("v") != 1:
        return "receipt is not a v1 object"
    if doc.get("gateway_id") != gateway_id:
        return f"receipt for gateway {str(doc.get('gateway_id'))[:64]!r}, not {gateway_id!r}"
    mine = epoch_text(epoch)
    ranges: list[tuple[int, int]] = []
    foreign = 0
    batches = doc.get("batches", [])
    if not isinstance(batches, list):
        return "receipt batches must be a list"
    for b in batches:
        r = _range(b.get("seq")) if isinstance(b, dict) else None
        if r is None or not isinstance(b.get("epoch"), str):
            return "receipt batch must be {epoch, seq: [first, last]}"
        if b["epoch"] == mine:
            ranges.append(r)
        else:
            foreign += 1
    ids = doc.get("committed", [])
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return "receipt committed must be a list of ids"
    rejected: list[RejectedReading] = []
    raw = doc.get("rejected", [])
    if not isinstance(raw, list):
        return "receipt rejected must be a list"
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("reason"), str):
            return "receipt rejected entries must be {id, reason}"
        rid = item.get("id")
        rejected.append(RejectedReading(rid if isinstance(rid, str) else None, item["reason"][:500]))
    return Receipt(tuple(ranges), tuple(ids), tuple(rejected), foreign)


@dataclass(slots=True)
class _Pending:
    first: int
    last: int
    deadline: float


@dataclass(frozen=True, slots=True)
class TimerResult:
    """What :meth:`ReceiptTracker.handle_timer` decided: ranges to re-send, or the switch to PUBACK mode."""

    resend: tuple[tuple[int, int], ...] = ()
    fell_back: bool = False


@dataclass(slots=True)
class ReceiptTracker:
    """Batches acknowledged by the broker (PUBACK) and waiting for their commit receipt."""

    timeout: float = 30.0
    """Seconds after a PUBACK before a batch without receipt is re-sent."""
    fallback_after: int = 5
    """Timeouts with no receipt on the current connection before PUBACK mode (0: never)."""
    mode: ReceiptMode = ReceiptMode.RECEIPTS
    timeouts: int = 0
    """Timeouts on the current connection while no receipt arrived on it."""
    receipts_on_connection: int = 0
    resent_batches: int = 0
    _pending: dict[tuple[int, int], _Pending] = field(default_factory=dict)

    def connected(self) -> None:
        """A new broker connection: count timeouts afresh and try receipts again."""
        self.timeouts = 0
        self.receipts_on_connection = 0
        self.mode = ReceiptMode.RECEIPTS

    def published(self, first: int, last: int, now: float) -> None:
        """The broker acknowledged the batch ``[first, last]`` (receipt mode): wait for its receipt."""
        self._pending[(first, last)] = _Pending(first, last, now + self.timeout)

    def received(self, receipt: Receipt) -> bool:
        """A receipt arrived; forget the batches it covers. True when it switched PUBACK mode back to receipts."""
        self.receipts_on_connection += 1
        self.timeouts = 0
        for first, last in receipt.ranges:
            for key in [k for k in self._pending if first <= k[0] and k[1] <= last]:
                del self._pending[key]
        if self.mode is ReceiptMode.PUBACK:
            self.mode = ReceiptMode.RECEIPTS
            return True
        return False

    def pending(self) -> int:
        """Batches waiting for a receipt."""
        return len(self._pending)

    def get_timer(self) -> float | None:
        """When the oldest waiting batch times out."""
        return min((p.deadline for p in self._pending.values()), default=None)

    def handle_timer(self, now: float) -> TimerResult:
        """Batches whose receipt is overdue: re-send them (their timers restart at their next PUBACK), or fall back."""
        due = sorted(k for k, p in self._pending.items() if p.deadline <= now)
        if not due:
            return TimerResult()
        for key in due:
            del self._pending[key]
        if self.receipts_on_connection == 0:
            self.timeouts += 1
            if self.fallback_after and self.timeouts >= self.fallback_after and self.mode is ReceiptMode.RECEIPTS:
                self.mode = ReceiptMode.PUBACK
                self._pending.clear()
                return TimerResult(fell_back=True)
        self.resent_batches += len(due)
        return TimerResult(resend=tuple(due))
