"""A seeded schedule of faults (pure: the same seed gives the same schedule; no clock, no process).

Kinds:
- ``gateway_kill9``, ``ingest_kill9``: SIGKILL a gateway / an ingest worker, restart it after ``duration`` seconds.
- ``broker_kill9``: the ingest workers are paused for ``hold`` seconds first, so that batches acknowledged by the broker
  (PUBACK) wait in it only, then the broker is killed (its persistence is older: they are gone) and restarted after
  ``duration`` seconds.
- ``postgres_crash``: ``pg_ctl stop -m immediate`` (no checkpoint: crash recovery), restart after ``duration``.
- ``pause``: SIGSTOP a gateway, a worker, the broker or the whole PostgreSQL server for ``duration`` seconds (10-40 s by
  default), then SIGCONT; other faults go on meanwhile (on other targets).

Only in schedules that ask for them (``extra``), so that a seed without them gives the same schedule as before:
- ``link_outage``: a black hole on one gateway's emulated link for ``duration`` seconds (60 s by default); other
  faults go on meanwhile.
- ``alert_leader_kill9``: SIGKILL the ``tbib server`` node that holds the alert engine's leader lock (found in
  ``pg_locks`` when the fault is injected, not chosen here: target ``alert-leader``); another engine node takes over,
  the killed one is restarted after ``duration`` seconds (at least :data:`MIN_LEADER_KILLS` when asked for).
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from typing import Final


class Kind(enum.StrEnum):
    GATEWAY_KILL9 = "gateway_kill9"
    INGEST_KILL9 = "ingest_kill9"
    BROKER_KILL9 = "broker_kill9"
    POSTGRES_CRASH = "postgres_crash"
    PAUSE = "pause"
    LINK_OUTAGE = "link_outage"
    ALERT_LEADER_KILL9 = "alert_leader_kill9"


#: Share of each kind in a schedule (the broker gets at least 5 kills when the schedule has room for them).
WEIGHTS: Final = {
    Kind.GATEWAY_KILL9: 0.24,
    Kind.INGEST_KILL9: 0.22,
    Kind.BROKER_KILL9: 0.16,
    Kind.POSTGRES_CRASH: 0.16,
    Kind.PAUSE: 0.22,
}
MIN_BROKER_KILLS: Final = 5
#: Share of the optional kinds when a schedule asks for them (the others shrink in proportion).
EXTRA_WEIGHTS: Final = {Kind.LINK_OUTAGE: 0.10, Kind.ALERT_LEADER_KILL9: 0.12}
#: Leader kills in a schedule that asks for them (when it has room: a quarter of its faults at most).
MIN_LEADER_KILLS: Final = 3


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault: when (seconds from the start of the fault phase), what, on which target, for how long."""

    at: float
    kind: Kind
    target: str
    """``gateway:<i>``, ``ingest:<i>``, ``broker``, ``postgres``, ``link:<i>`` or ``alert-leader``."""
    duration: float
    """Seconds down (kills) or stopped (pause)."""
    hold: float = 0.0
    """``broker_kill9``: seconds the ingest workers are paused before the kill (readings in flight)."""


def counts(n: int, extra: tuple[Kind, ...] = ()) -> dict[Kind, int]:
    """How many faults of each kind a schedule of ``n`` holds (``extra``: optional kinds of :data:`EXTRA_WEIGHTS`)."""
    scale = 1.0 - sum(EXTRA_WEIGHTS[k] for k in extra)
    weights = {**{k: w * scale for k, w in WEIGHTS.items()}, **{k: EXTRA_WEIGHTS[k] for k in extra}}
    floor = 1 if n >= len(weights) else 0  # every kind at least once when there is room
    out = {k: max(floor, int(n * w)) for k, w in weights.items()}
    out[Kind.BROKER_KILL9] = max(out[Kind.BROKER_KILL9], min(MIN_BROKER_KILLS, n // 4 + (n > 0)))
    floors = {Kind.BROKER_KILL9}
    if Kind.ALERT_LEADER_KILL9 in extra:
        out[Kind.ALERT_LEADER_KILL9] = max(out[Kind.ALERT_LEADER_KILL9], min(MIN_LEADER_KILLS, n // 4 + (n > 0)))
        floors.add(Kind.ALERT_LEADER_KILL9)
    kinds = list(weights)
    i = 0
    while sum(out.values()) < n:
        out[kinds[i % len(kinds)]] += 1
        i += 1
    while sum(out.values()) > n:
        k = max((k for k in kinds if k not in floors), key=lambda k: out[k])  # the most common one
        out[k] -= 1
    return out


def plan(
    n: int,
    *,
    seed: int,
    gateways: int,
    workers: int,
    interval: float = 6.0,
    pause: tuple[float, float] = (10.0, 40.0),
    down: tuple[float, float] = (0.3, 3.0),
    extra: tuple[Kind, ...] = (),
    outage: float = 60.0,
) -> list[Fault]:
    """``n`` faults, one every ``interval`` seconds (jittered by up to a third), kinds shuffled by ``seed``;
    ``extra`` adds optional kinds (``outage``: seconds of each link outage)."""
    rng = random.Random(seed)  # noqa: S311 (a reproducible schedule, not crypto)
    kinds = [k for k, c in counts(n, extra).items() for _ in range(c)]
    rng.shuffle(kinds)
    faults: list[Fault] = []
    t = 0.0
    for kind in kinds:
        t += interval * rng.uniform(2 / 3, 4 / 3)
        if kind is Kind.GATEWAY_KILL9:
            faults.append(Fault(t, kind, f"gateway:{rng.randrange(gateways)}", rng.uniform(*down)))
        elif kind is Kind.INGEST_KILL9:
            faults.append(Fault(t, kind, f"ingest:{rng.randrange(workers)}", rng.uniform(*down)))
        elif kind is Kind.BROKER_KILL9:
            faults.append(Fault(t, kind, "broker", rng.uniform(*down), hold=rng.uniform(1.0, 2.0)))
        elif kind is Kind.POSTGRES_CRASH:
            faults.append(Fault(t, kind, "postgres", rng.uniform(*down)))
        elif kind is Kind.LINK_OUTAGE:
            faults.append(Fault(t, kind, f"link:{rng.randrange(gateways)}", outage))
        elif kind is Kind.ALERT_LEADER_KILL9:
            faults.append(Fault(t, kind, "alert-leader", rng.uniform(*down)))
        else:
            pool = [f"gateway:{i}" for i in range(gateways)] + [f"ingest:{i}" for i in range(workers)]
            target = rng.choice([*pool, "broker", "postgres"])
            faults.append(Fault(t, kind, target, rng.uniform(*pause)))
    return faults
