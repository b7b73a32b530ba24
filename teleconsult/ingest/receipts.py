"""Commit receipts, ingest side (MQTT contract v1 extension, ``docs/mqtt.md``): pure, clock-free.

A gateway names each batch ``"batch": {"epoch": "<16 hex>", "seq": [first, last]}`` (its outbox epoch and the capture
sequence range of the batch). Once the transaction holding the batch has committed, and *before* its MQTT message is
acknowledged, the worker publishes on ``tbib/v1/gw/{gateway_id}/receipts`` (QoS 1) one receipt per gateway of the
transaction::

    {"v": 1, "gateway_id": "gw-1", "batches": [{"epoch": "9f2c...", "seq": [1, 100]}, ...],
     "rejected": [{"id": "<uuid or null>", "reason": "readings[3]: unknown metric 'x'"}]}

Every reading of a listed batch is final: committed (inserted now or already stored) unless listed in ``rejected``
(a dead letter: it will never be stored, the gateway stops sending it). ``rejected`` is omitted when empty.

The plain-id form (``form="ids"``, measured in ``docs/benchmarks/ingest.md``, not the default) lists every committed
reading id instead: ``{"v": 1, "gateway_id", "committed": [ids], "rejected": [...]}``.

A batch without ``batch`` comes from a gateway older than receipts (PUBACK mode): it gets no receipt, and
:class:`ReceiptBook` reports the gateway once so that the worker logs one warning per such gateway.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal

import orjson

if TYPE_CHECKING:  # payload imports this module (BatchRef)
    from teleconsult.ingest.payload import Decoded, Rejected

RECEIPTS_SUFFIX: Final = "/receipts"
TOPIC_PREFIX: Final = "tbib/v1/gw/"
_EPOCH_RE: Final = re.compile(r"[0-9a-f]{16}")
_READING_ID_RE: Final = re.compile(
    r"^reading ([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}): "
)
ReceiptForm = Literal["range", "ids"]


@dataclass(frozen=True, slots=True)
class BatchRef:
    """A batch's name: the gateway outbox's epoch and the capture sequence range ``[first, last]``."""

    epoch: str
    first: int
    last: int


def parse_batch_ref(value: object) -> BatchRef | None:
    """The ``batch`` member of a reading batch, or ``None`` when absent or malformed (then: no receipt)."""
    if not isinstance(value, dict):
        return None
    epoch, seq = value.get("epoch"), value.get("seq")
    if not isinstance(epoch, str) or not _EPOCH_RE.fullmatch(epoch) or not isinstance(seq, list) or len(seq) != 2:
        return None
    a, b = seq
    if type(a) is not int or type(b) is not int or not 0 < a <= b < 1 << 63:
        return None
    return BatchRef(epoch, a, b)


def receipts_topic(gateway_id: str) -> str:
    """``tbib/v1/gw/{gateway_id}/receipts``."""
    return f"{TOPIC_PREFIX}{gateway_id}{RECEIPTS_SUFFIX}"


def id_of_reason(reason: str) -> str | None:
    """The reading id named by a binding refusal (``reading <uuid>: ...``, :func:`~.payload.copy_rows`)."""
    m = _READING_ID_RE.match(reason)
    return m.group(1) if m else None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one MQTT message once its transaction committed."""

    gateway_id: str | None
    batch: BatchRef | None
    rejected: Sequence[tuple[str | None, str]] = ()
    """(reading id when known, reason) of the readings refused."""
    committed: Sequence[str] = ()
    """Ids of the readings stored (only needed for the plain-id form)."""


def outcome_of(
    decoded: Decoded | Rejected | None,
    *,
    refused: str | None = None,
    bound_rejects: Sequence[str] | None = None,
    ids: bool = False,
) -> Outcome:
    """The outcome of one committed message: ``refused`` when the database refused it whole (every reading a dead
    letter), ``bound_rejects`` the readings refused at the device binding; ``ids`` lists the committed ids too."""
    from teleconsult.ingest.payload import R_ID, Rejected

    d = decoded
    if d is None:
        return Outcome(None, None)
    if isinstance(d, Rejected):
        return Outcome(d.gateway_id, d.batch, [(None, d.reason)])
    if d.batch is None:
        return Outcome(d.gateway_id, None)
    if refused is not None:
        every = [(r[R_ID], refused) for r in d.readings]
        return Outcome(d.gateway_id, d.batch, every + [(i, refused) for i in d.reject_ids])
    rejected: list[tuple[str | None, str]] = list(zip(d.reject_ids, d.rejects, strict=True))
    if bound_rejects:
        rejected += [(id_of_reason(r), r) for r in bound_rejects]
    if not ids:
        return Outcome(d.gateway_id, d.batch, rejected)
    gone = {i for i, _r in rejected}
    return Outcome(d.gateway_id, d.batch, rejected, [r[R_ID] for r in d.readings if r[R_ID] not in gone])


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One receipt to publish (QoS 1)."""

    topic: str
    payload: bytes
    gateway_id: str
    batches: int


@dataclass(slots=True)
class ReceiptBook:
    """Receipts of committed transactions, one per gateway; remembers which gateways run in PUBACK mode."""

    form: ReceiptForm = "range"
    max_rejected: int = 1000
    """At most this many rejected entries per receipt (the batch is final anyway: the rest is counted)."""
    legacy: set[str] = field(default_factory=set)
    """Gateways seen sending batches without ``batch`` (no receipts for them)."""

    def receipts(self, outcomes: Iterable[Outcome]) -> tuple[list[Outgoing], list[str]]:
        """The receipts of one committed transaction, and the gateways newly seen in PUBACK mode (warn once each)."""
        per_gw: dict[str, tuple[list[BatchRef], list[tuple[str | None, str]], list[str]]] = {}
        new_legacy: list[str] = []
        for o in outcomes:
            gw = o.gateway_id
            if gw is None:
                continue
            if o.batch is None:
                if gw not in self.legacy:
                    self.legacy.add(gw)
                    new_legacy.append(gw)
                continue
            entry = per_gw.get(gw)
            if entry is None:
                entry = per_gw[gw] = ([], [], [])
            if o.batch in entry[0]:  # the same batch twice in one transaction (a re-send): named once
                continue
            entry[0].append(o.batch)
            entry[1].extend(o.rejected)
            if self.form == "ids":
                entry[2].extend(o.committed)
        out = [self._encode(gw, *entry) for gw, entry in per_gw.items()]
        return out, new_legacy

    def _encode(
        self, gw: str, batches: list[BatchRef], rejected: list[tuple[str | None, str]], committed: list[str]
    ) -> Outgoing:
        doc: dict[str, object] = {"v": 1, "gateway_id": gw}
        if self.form == "ids":
            doc["committed"] = committed
        else:
            doc["batches"] = [{"epoch": b.epoch, "seq": [b.first, b.last]} for b in batches]
        if rejected:
            shown = [{"id": i, "reason": r[:300]} for i, r in rejected[: self.max_rejected]]
            if len(rejected) > self.max_rejected:
                shown.append({"id": None, "reason": f"... and {len(rejected) - self.max_rejected} more rejected"})
            doc["rejected"] = shown
        return Outgoing(receipts_topic(gw), orjson.dumps(doc), gw, len(batches))
