"""Figures and checks of `tbib bench cluster` from the clients' records and the store."""

from __future__ import annotations

import statistics
import uuid
from datetime import datetime
from typing import Any

import psycopg

from teleconsult.bench.dash_clients import DashClient


def stored_count(dsn: str) -> int:
    """Readings in the store."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("select count(*) from readings").fetchone()
    return int(row[0]) if row else 0


def _pcts(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "p50": None, "max": None}
    ordered = sorted(values)
    return {"n": len(ordered), "p50": round(statistics.median(ordered), 3), "max": round(ordered[-1], 3)}


def reconnect_stats(clients: list[DashClient], t_kill: float) -> dict[str, Any]:
    """Reconnections since ``t_kill`` (monotonic): close seen -> hello, close seen -> replayed, kill -> replayed."""
    recs = [r for c in clients for r in c.reconnects if r.closed_at >= t_kill]
    replayed = sum(
        sum(1 for e in c.delivered if r.last_at_close < e <= r.target_id)
        for c in clients
        for r in c.reconnects
        if r.closed_at >= t_kill
    )
    return {
        "sockets_lost": len(recs),
        "events_missed_then_replayed": replayed,
        "reconnect_s": _pcts([r.hello_at - r.closed_at for r in recs if r.hello_at is not None]),
        "reconnect_replay_s": _pcts([r.replayed_at - r.closed_at for r in recs if r.replayed_at is not None]),
        "kill_to_replayed_s": _pcts([r.replayed_at - t_kill for r in recs if r.replayed_at is not None]),
        "not_replayed": sum(1 for r in recs if r.replayed_at is None),
    }


def probe_events(dsn: str, published: dict[tuple[int, int], float], patients: list[uuid.UUID]) -> dict[int, float]:
    """Id of each probe's "raised" event -> wall time of the probe's PUBACK."""
    index = {p: k for k, p in enumerate(patients)}
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "select id, patient_id, payload->'details'->>'measured_at' from alert_events"
            " where type = 'raised' and payload->>'rule' = 'systolic_bp' and patient_id = any(%s)",
            (patients,),
        ).fetchall()
    out = {}
    for event_id, patient, measured_at in rows:
        if measured_at is None:
            continue
        key = (index[patient], round(datetime.fromisoformat(measured_at).timestamp() * 1000))
        if key in published:
            out[int(event_id)] = published[key]
    return out


def alert_check(dsn: str, clients: list[DashClient], start_id: int, raised: dict[int, float],
                n_probes: int) -> dict[str, Any]:  # fmt: skip
    """Every stored event after ``start_id`` delivered exactly once to every client; every probe raised."""
    with psycopg.connect(dsn) as conn:
        ids = {int(r[0]) for r in conn.execute("select id from alert_events where id > %s", (start_id,)).fetchall()}
    missing = sum(len(ids - set(c.delivered)) for c in clients)
    return {
        "events": len(ids),
        "dashboards": len(clients),
        "missing": missing,
        "duplicated": sum(n - 1 for c in clients for n in c.delivered.values() if n > 1),
        "unknown": sum(len(set(c.delivered) - ids) for c in clients),
        "replay_overlap_dropped": sum(c.overlap for c in clients),
        "resyncs": sum(c.resyncs for c in clients),
        "probes": n_probes,
        "probes_raised": len(raised),
        "probes_not_raised": n_probes - len(raised),
    }


def latency(clients: list[DashClient], raised: dict[int, float], t0: float, t1: float) -> dict[str, Any]:
    """Probe PUBACK -> frame on each dashboard, for probes published in [t0, t1] (wall clock), in ms."""
    values = [
        (c.alert_arrivals[event_id] - at) * 1000
        for event_id, at in raised.items()
        if t0 <= at <= t1
        for c in clients
        if event_id in c.alert_arrivals
    ]
    if not values:
        return {"frames": 0, "p50_ms": None, "p99_ms": None}
    values.sort()
    return {"frames": len(values), "p50_ms": round(statistics.median(values), 1),
            "p99_ms": round(values[min(len(values) - 1, int(0.99 * len(values)))], 1)}  # fmt: skip
