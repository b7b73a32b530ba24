"""Alerts under chaos: the episodes an independent offline evaluation expects, against those the database holds.

Definitions (``docs/benchmarks/chaos.md``, "Alerts under alert-leader kills")
- An *episode* is one alert of one (patient, rule), from its ``raised`` event to its ``cleared`` (or the end of the
  run). It is identified by :class:`Episode` ``(patient, rule, onset)``, where ``onset`` is the ``measured_at`` of the
  reading that started the condition: ``details["onset"]`` for threshold rules (the first reading of the minimum
  duration), ``details["measured_at"]`` for trend rules (the reading that triggered it). Raise *times* are not
  compared: the live engine raises at commit time (``now = ingested_at``), the reference at ``measured_at``.
- *Expected* (:func:`reference`): the pure :class:`teleconsult.alerts.engine.Engine` with the default rules, fed the
  whole set of captured readings once, in ``measured_at`` order, each with ``now`` = its ``measured_at`` and the
  timers run up to that time first, then up to ``until``: no leader, no failover, no batches, no late reading.
- *Stored*: one per ``raised`` event in ``alert_events`` (a new leader that raised an episode again would log a second
  ``raised`` event even if the idempotent store kept one row: both count).
- Compared rules (:func:`compared`): thresholds and trends. Not compared: ``news2`` (scored once per fetch of the
  feed, so its episodes depend on how the commits batched the readings: no batch-free reference exists for it),
  ``no_data:*`` and ``gateway_offline`` (wall clock and gateway status), ``escalated`` events (wall clock).
- :func:`compare`: *missed* = expected keys with no stored episode; *duplicated* = stored episodes beyond the expected
  count of their key (each extra copy counts once); *unexpected* = stored keys the reference does not expect.

:func:`compare` and :func:`reference` are pure (no clock, no database); :func:`stored_episodes` and
:func:`captured_readings` read the run's database.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from teleconsult.alerts.engine import GATEWAY_OFFLINE_RULE, NEWS2_RULE, NO_DATA_PREFIX, Engine
from teleconsult.alerts.model import EventKind, Reading
from teleconsult.alerts.rules import EngineConfig


@dataclass(frozen=True, slots=True, order=True)
class Episode:
    """One alert episode: (patient, rule, measured_at of the reading that started it)."""

    patient_id: str
    rule: str
    onset: datetime

    def to_json(self) -> dict[str, str]:
        return {"patient_id": self.patient_id, "rule": self.rule, "onset": self.onset.isoformat()}


@dataclass(frozen=True, slots=True)
class AlertVerdict:
    """Expected episodes against stored ones (see the module docstring)."""

    expected: int
    stored: int
    missed: list[Episode]
    duplicated: list[Episode]
    """One entry per extra stored copy."""
    unexpected: list[Episode]

    @property
    def ok(self) -> bool:
        return not self.missed and not self.duplicated

    def to_json(self) -> dict[str, Any]:
        return {
            "alerts_expected": self.expected,
            "alerts_stored": self.stored,
            "alerts_missed": len(self.missed),
            "alerts_duplicated": len(self.duplicated),
            "alerts_unexpected": len(self.unexpected),
            "alerts_missed_episodes": [e.to_json() for e in self.missed[:20]],
            "alerts_duplicated_episodes": [e.to_json() for e in self.duplicated[:20]],
            "alerts_unexpected_episodes": [e.to_json() for e in self.unexpected[:20]],
        }


def compared(rule: str) -> bool:
    """Whether episodes of ``rule`` have a batch-free, wall-clock-free reference (thresholds and trends)."""
    return rule not in (NEWS2_RULE, GATEWAY_OFFLINE_RULE) and not rule.startswith(NO_DATA_PREFIX)


def onset_of(details: Mapping[str, object]) -> datetime | None:
    """The onset of an episode from the details of its ``raised`` event (None: the rule records none)."""
    value = details.get("onset", details.get("measured_at"))
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def compare(expected: Iterable[Episode], stored: Iterable[Episode]) -> AlertVerdict:
    """Missed, duplicated and unexpected episodes (pure)."""
    want = Counter(expected)
    got = Counter(stored)
    missed = sorted(e for e in want for _ in range(want[e] - got.get(e, 0)))
    duplicated = sorted(e for e, n in got.items() for _ in range(n - max(1, want.get(e, 0))))
    unexpected = sorted(e for e in got if e not in want)
    return AlertVerdict(want.total(), got.total(), missed, duplicated, unexpected)


def reference(readings: Iterable[Reading], until: datetime, config: EngineConfig | None = None) -> list[Episode]:
    """The episodes of the compared rules for ``readings`` evaluated once, offline, in ``measured_at`` order (pure)."""
    engine = Engine(dataclasses.replace(config or EngineConfig(), news2_enabled=False))
    out: list[Episode] = []

    def drain() -> None:
        while (ev := engine.next_event()) is not None:
            if ev.kind is EventKind.RAISED and compared(ev.key.rule):
                onset = onset_of(ev.details)
                if onset is not None:
                    out.append(Episode(ev.key.patient_id, ev.key.rule, onset))

    for r in sorted(readings, key=lambda r: r.measured_at):
        engine.handle_timer(r.measured_at)
        drain()
        engine.receive(r, r.measured_at)
        drain()
    engine.handle_timer(until)
    drain()
    return out


def captured_readings(dsn: str, ids: Sequence[str]) -> list[Reading]:
    """The rows of ``readings`` with these reading ids, once each (ids not stored are absent: already ``lost``)."""
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        rows = conn.execute(
            "select distinct on (reading_id) patient_id, metric, value, unit, measured_at from readings"
            " where reading_id = any(%s) order by reading_id",
            ([uuid.UUID(i) for i in ids],),
        ).fetchall()
    return [Reading(str(p), str(m), float(v), str(u), at) for p, m, v, u, at in rows]


def stored_episodes(dsn: str, patients: Sequence[uuid.UUID]) -> tuple[list[Episode], Counter[str]]:
    """One :class:`Episode` per ``raised`` event of a compared rule for these patients; and the number of ``raised``
    events per rule, compared or not (for the summary)."""
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        rows = conn.execute(
            "select patient_id::text, payload->>'rule', payload->'details' from alert_events"
            " where type = 'raised' and patient_id = any(%s) order by id",
            (list(patients),),
        ).fetchall()
    out: list[Episode] = []
    by_rule = Counter[str]()
    for patient, rule, details in rows:
        by_rule[str(rule)] += 1
        onset = onset_of(dict(details or {}))
        if compared(str(rule)) and onset is not None:
            out.append(Episode(str(patient), str(rule), onset))
    return out, by_rule
