"""Batch bookkeeping of the ingest worker: pure and clock-free (every time is a parameter).

From the MQTT messages of one batch, already decoded (:func:`.payload.decode_batch`) and resolved against the
enrolment map, :func:`build_work` makes what the writer commits in one transaction: the COPY rows, the dead letters,
the newest row per (patient, metric), the per-minute rollup delta, and the counts the metrics need. After the commit,
:func:`receipt_outcomes` gives the commit receipts' input (:mod:`.receipts`), :func:`due_gateways` the gateways whose
``last_seen_at`` is due, and :func:`account` the metric updates.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from teleconsult.ingest.metrics import IngestMetrics
from teleconsult.ingest.payload import CONSENT_WITHDRAWN, Binding, Decoded, LatestRow, MinuteDelta, Rejected, copy_rows
from teleconsult.ingest.receipts import Outcome, outcome_of
from teleconsult.ingest.writer import DeadLetter

#: ``gateways.last_seen_at`` is written at most this often per gateway (seconds).
SEEN_EVERY: float = 10.0


@dataclass(slots=True)
class Incoming:
    """One MQTT message of a batch."""

    mid: int
    qos: int
    generation: int
    """The broker connection it came on: acknowledging it on a later one would be void (the broker redelivers)."""
    topic: str
    payload: bytes
    decoded: Decoded | Rejected | None = None
    refused: str | None = None
    """Set when the database refused the whole message (poison isolation): every reading is a dead letter."""
    bound_rejects: list[str] | None = None
    """Readings refused at the device binding (not enrolled, no consent in force)."""


@dataclass(slots=True)
class Work:
    """One batch ready for its transaction (the lists run parallel to ``messages``)."""

    messages: list[Incoming]
    lines: list[list[str]] = field(default_factory=list)
    dead: list[DeadLetter | None] = field(default_factory=list)
    sent_at: list[float | None] = field(default_factory=list)
    latest: dict[tuple[str, str], LatestRow] = field(default_factory=dict)
    minutes: MinuteDelta = field(default_factory=dict)
    rejected: int = 0
    """Readings refused before the database (validation, device binding)."""

    def all_lines(self) -> list[str]:
        """Every COPY row of the batch."""
        return [line for ls in self.lines for line in ls]

    def all_dead(self) -> list[DeadLetter]:
        """Every dead letter of the batch."""
        return [d for d in self.dead if d is not None]


def dead_letter(
    m: Incoming, gateway_id: str | None, reason: str, max_bytes: int, *, keep_payload: bool = True
) -> DeadLetter:
    """The dead letter of ``m`` (payload cut to ``max_bytes``, or dropped when it must not be kept)."""
    payload = m.payload[:max_bytes] if keep_payload else b""
    return DeadLetter(m.topic, gateway_id, reason, payload, len(m.payload))


def has_unknown_device(batch: list[Incoming], bindings: Mapping[tuple[str, str], Binding]) -> bool:
    """Whether a valid reading of the batch names a (gateway, device) absent from the enrolment map."""
    for m in batch:
        d = m.decoded
        if isinstance(d, Decoded):
            gw = d.gateway_id
            for address, _metric in d.newest:  # every address of the message is a key of ``newest``
                if (gw, address) not in bindings:
                    return True
    return False


def build_work(batch: list[Incoming], bindings: Mapping[tuple[str, str], Binding], *, dead_max_bytes: int) -> Work:
    """The transaction's content for ``batch`` (each message decoded) against the enrolment map ``bindings``."""
    work = Work(batch)
    for m in batch:
        d = m.decoded
        if d is None or isinstance(d, Rejected):
            reason = d.reason if d is not None else "not decoded"
            work.lines.append([])
            work.dead.append(dead_letter(m, d.gateway_id if d is not None else None, reason, dead_max_bytes))
            work.sent_at.append(None)
            work.rejected += 1
            continue
        lines, not_enrolled = copy_rows(d, bindings, work.latest, work.minutes)
        m.bound_rejects = not_enrolled or None
        reasons = d.rejects + not_enrolled if not_enrolled else d.rejects
        work.lines.append(lines)
        work.sent_at.append(d.sent_at)
        if reasons:
            work.rejected += len(reasons)
            shown = "; ".join(reasons[:10]) + (f"; ... ({len(reasons)} refused)" if len(reasons) > 10 else "")
            # readings without consent in force are not kept anywhere: the dead letter has the reason and size only
            keep = not any(r.endswith(CONSENT_WITHDRAWN) for r in reasons)
            work.dead.append(dead_letter(m, d.gateway_id, shown, dead_max_bytes, keep_payload=keep))
        else:
            work.dead.append(None)
    return work


def receipt_outcomes(messages: list[Incoming], *, ids: bool) -> Iterator[Outcome]:
    """What became of each message of a committed batch (:class:`.receipts.ReceiptBook` input)."""
    for m in messages:
        yield outcome_of(m.decoded, refused=m.refused, bound_rejects=m.bound_rejects, ids=ids)


def due_gateways(messages: list[Incoming], seen: dict[str, float], now: float) -> list[str]:
    """Gateways of valid messages whose ``last_seen_at`` was last written ``SEEN_EVERY`` or more before ``now``
    (sorted: a stable lock order); marks them seen at ``now``."""
    due = sorted(
        {
            m.decoded.gateway_id
            for m in messages
            if isinstance(m.decoded, Decoded) and now - seen.get(m.decoded.gateway_id, -1e18) >= SEEN_EVERY
        }
    )
    for gw in due:
        seen[gw] = now
    return due


def account(
    metrics: IngestMetrics, work: Work, inserted: int, duplicate: int, dead: int, seconds: float, now: float
) -> None:
    """Metrics of one committed batch: ``seconds`` its transaction took, ``now`` the wall clock (epoch seconds) to
    measure publish -> commit against the gateways' ``sent_at``."""
    metrics.batches += 1
    metrics.messages += len(work.messages)
    metrics.accepted += inserted
    metrics.duplicate += duplicate
    metrics.dead_letters += dead
    metrics.commit_seconds.observe(seconds)
    observe = metrics.publish_to_commit_seconds.observe
    for sent in work.sent_at:
        if sent is not None:
            observe(now - sent if now > sent else 0.0)
