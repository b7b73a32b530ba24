"""Alerts under chaos: the episodes an independent offline evaluation expects, against those the database holds.

Definitions (``docs/benchmarks/chaos.md``, "Alerts under alert-leader kills")
- An *episode* (:class:`Episode`) is one alert of one (patient, rule), from its ``raised`` event to its ``cleared``
  (or the end of the run), as an interval of device time: ``onset`` is the ``measured_at`` of the reading that started
  the condition (``details["onset"]`` for threshold rules: the first reading of the minimum duration;
  ``details["measured_at"]`` for trend rules: the reading that triggered it), ``end`` the ``measured_at`` of the
  reading that cleared it (None: still open). Raise *times* are not compared: the live engine raises at commit time
  (``now = ingested_at``) or on its wall-clock timer, the reference at ``measured_at``.
- *Expected* (:func:`reference`): the pure :class:`teleconsult.alerts.engine.Engine` with the default rules, fed the
  whole set of captured readings once, in ``measured_at`` order, each with ``now`` = its ``measured_at`` and the
  timers run up to that time first, then up to ``until``: no leader, no failover, no batches, no late reading.
- *Stored*: one per ``raised`` event in ``alert_events`` (a new leader that raised an episode again would log a second
  ``raised`` event even if the idempotent store kept one row: both count).
- Compared rules (:func:`compared`): thresholds and trends. Not compared: ``news2`` (scored once per fetch of the
  feed, so its episodes depend on how the commits batched the readings: no batch-free reference exists for it),
  ``no_data:*`` and ``gateway_offline`` (wall clock and gateway status), ``escalated`` events (wall clock).
- :func:`compare`: each stored episode belongs to the first expected episode (onset order) of the same patient and rule
  whose interval it overlaps. *missed* = expected episodes that own no stored one; *duplicated* = stored episodes
  beyond the first that an expected one owns (the same condition alerted twice); *unexpected* = stored episodes that
  overlap no expected one. ``onset_shift_s``: stored minus expected onset of the matched pairs (a late reading that
  the live engine takes as history moves the onset; an exact replay gives 0).

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


@dataclass(frozen=True, slots=True)
class Episode:
    """One alert episode of (patient, rule) over device time: [onset, end), end None while open."""

    patient_id: str
    rule: str
    onset: datetime
    end: datetime | None = None

    def overlaps(self, other: Episode) -> bool:
        """Same patient and rule, and the intervals intersect (an open end is the end of time)."""
        return (
            (self.patient_id, self.rule) == (other.patient_id, other.rule)
            and (other.end is None or self.onset < other.end)
            and (self.end is None or other.onset < self.end)
        )

    def sort_key(self) -> tuple[str, str, datetime]:
        return (self.patient_id, self.rule, self.onset)

    def to_json(self) -> dict[str, str | None]:
        end = None if self.end is None else self.end.isoformat()
        return {"patient_id": self.patient_id, "rule": self.rule, "onset": self.onset.isoformat(), "end": end}


@dataclass(frozen=True, slots=True)
class AlertVerdict:
    """Expected episodes against stored ones (see the module docstring)."""

    expected: int
    stored: int
    missed: list[Episode]
    duplicated: list[Episode]
    """One entry per extra stored copy."""
    unexpected: list[Episode]
    onset_shift_s: list[float] = dataclasses.field(default_factory=list)
    """Stored minus expected onset, per matched pair."""

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
            "alerts_onset_shift_s_max": max((abs(x) for x in self.onset_shift_s), default=0.0),
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


def measured_of(details: Mapping[str, object]) -> datetime | None:
    """The ``measured_at`` of the reading in an event's details (None: none)."""
    value = details.get("measured_at")
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def compare(expected: Iterable[Episode], stored: Iterable[Episode]) -> AlertVerdict:
    """Missed, duplicated and unexpected episodes (pure; see the module docstring)."""
    want = sorted(expected, key=Episode.sort_key)
    got = sorted(stored, key=Episode.sort_key)
    owned: dict[int, list[Episode]] = {i: [] for i in range(len(want))}
    unexpected: list[Episode] = []
    for s in got:
        owner = next((i for i, e in enumerate(want) if e.overlaps(s)), None)
        if owner is None:
            unexpected.append(s)
        else:
            owned[owner].append(s)
    missed = [want[i] for i, eps in owned.items() if not eps]
    duplicated = [s for eps in owned.values() for s in eps[1:]]
    shifts = [round((eps[0].onset - want[i].onset).total_seconds(), 3) for i, eps in owned.items() if eps]
    return AlertVerdict(len(want), len(got), missed, duplicated, unexpected, shifts)


def reference(readings: Iterable[Reading], until: datetime, config: EngineConfig | None = None) -> list[Episode]:
    """The episodes of the compared rules for ``readings`` evaluated once, offline, in ``measured_at`` order (pure)."""
    engine = Engine(dataclasses.replace(config or EngineConfig(), news2_enabled=False))
    out: list[Episode] = []
    open_: dict[tuple[str, str], int] = {}  # (patient, rule) -> index in out of its open episode

    def drain() -> None:
        while (ev := engine.next_event()) is not None:
            key = (ev.key.patient_id, ev.key.rule)
            if not compared(ev.key.rule):
                continue
            if ev.kind is EventKind.RAISED:
                onset = onset_of(ev.details)
                if onset is not None:
                    open_[key] = len(out)
                    out.append(Episode(*key, onset))
            elif ev.kind is EventKind.CLEARED and key in open_:
                i = open_.pop(key)
                out[i] = dataclasses.replace(out[i], end=measured_of(ev.details))

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
    """One :class:`Episode` per ``raised`` event of a compared rule for these patients, ending at the ``cleared``
    event of its alert row; and the number of ``raised`` events per rule, compared or not (for the summary)."""
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        rows = conn.execute(
            "select type, alert_id, patient_id::text, payload->>'rule', payload->'details' from alert_events"
            " where type in ('raised', 'cleared') and patient_id = any(%s) order by id",
            (list(patients),),
        ).fetchall()
    return episodes_of_events(rows)


def episodes_of_events(rows: Iterable[Sequence[Any]]) -> tuple[list[Episode], Counter[str]]:
    """:func:`stored_episodes` from ``(type, alert_id, patient, rule, details)`` rows in id order (pure)."""
    out: list[Episode] = []
    by_rule = Counter[str]()
    open_: dict[int, list[int]] = {}  # alert row -> its raised episodes not yet cleared
    for kind, alert_id, patient, rule, details in rows:
        d = dict(details or {})
        if kind == "raised":
            by_rule[str(rule)] += 1
            onset = onset_of(d)
            if compared(str(rule)) and onset is not None:
                open_.setdefault(int(alert_id), []).append(len(out))
                out.append(Episode(str(patient), str(rule), onset))
        elif kind == "cleared":
            cleared = d.get("cleared")
            end = measured_of(cleared) if isinstance(cleared, dict) else None
            for i in open_.pop(int(alert_id), []):
                out[i] = dataclasses.replace(out[i], end=end)
    return out, by_rule
