"""The long outage of a chaos run: every gateway's link is a black hole until their outboxes hold ``readings``
readings, then the links come back and the catch-up is timed.

Time compression: the issue's case is one hour without network and 10 000 readings queued. The outage here lasts
until the outboxes hold the target, whatever that takes: a simulated patient (heart-rate strap + pulse oximeter, 1 Hz
each) yields ~6 readings/s (heart rate, RR interval, SpO2, pulse rate, ...), so 4 gateways x 2 patients queue 10 000
readings in ~3.5 min (``tbib chaos --patients``). What is compressed is the time to fill the queue, not the queue: the
backlog has the size the issue names, only its time span is shorter (and so are the broker's session expiry and the
TCP state of a connection idle for an hour, which this does not exercise).

Figures (all from outside the gateways: outbox files, capture logs, ``readings``):
- ``queued_readings``: rows in the outboxes when the links come back;
- ``reconnect_s``: from the links' return to the first drop of the outbox depth (the gateway noticed the dead
  connection, backed off and connected again);
- ``backlog_stored_s``: until every reading captured before the links' return is in ``readings``;
- ``outbox_drained_s``: until the outboxes are back at their depth before the outage (new readings keep coming);
- ``drain_readings_per_s``: backlog / (``backlog_stored_s`` - ``reconnect_s``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from teleconsult.chaos.fleet import Fleet, captured, outbox_depth, stored
from teleconsult.chaos.netem import LinkEmulator
from teleconsult.chaos.processes import ChaosError


def _depth(fleet: Fleet) -> int:
    total = 0
    for g in fleet.gateways:
        try:
            total += outbox_depth(g.outbox)
        except Exception:  # noqa: BLE001 - a file being checkpointed: read it at the next poll
            return -1
    return total


def long_outage(
    fleet: Fleet, links: LinkEmulator, readings: int, log: Callable[[str], None], *, timeout_s: float = 1800.0
) -> dict[str, Any]:
    """Black-hole every link until ``readings`` are queued, restore, and time the catch-up (see the module doc)."""
    ids = [g.gateway_id for g in fleet.gateways]
    before = max(0, _depth(fleet))
    t0 = time.monotonic()
    log(f"long outage: every link is a black hole until the outboxes hold {readings} readings")
    with links.outage():
        last_log = t0
        while (depth := _depth(fleet)) < before + readings:
            links.check()
            if time.monotonic() - t0 > timeout_s:
                raise ChaosError(f"long outage: only {depth} readings queued after {timeout_s:.0f} s")
            if time.monotonic() - last_log > 30:
                log(f"  {depth} readings queued after {time.monotonic() - t0:.0f} s")
                last_log = time.monotonic()
            time.sleep(0.5)
        backlog = set(captured(fleet.gateways))
        queued = max(depth, _depth(fleet))
        outage_s = time.monotonic() - t0
    t_up = time.monotonic()
    log(f"long outage over after {outage_s:.0f} s with {queued} readings queued: catching up")
    reconnect_s = drained_s = stored_s = None
    next_db = t_up
    while stored_s is None or drained_s is None:
        now = time.monotonic()
        if now - t_up > timeout_s:
            raise ChaosError(f"catch-up: not done after {timeout_s:.0f} s (depth {_depth(fleet)})")
        depth = _depth(fleet)
        if reconnect_s is None and 0 <= depth < queued:
            reconnect_s = now - t_up
        if drained_s is None and 0 <= depth <= before + 50:
            drained_s = now - t_up
        if stored_s is None and now >= next_db:
            next_db = now + 1.0
            if backlog <= set(stored(fleet.dsn, ids)):
                stored_s = time.monotonic() - t_up
        links.check()
        time.sleep(0.1)
    assert reconnect_s is not None
    drain = stored_s - reconnect_s
    return {
        "target_readings": readings,
        "outage_s": round(outage_s, 1),
        "queued_readings": queued,
        "readings_captured_before_restore": len(backlog),
        "reconnect_s": round(reconnect_s, 1),
        "backlog_stored_s": round(stored_s, 1),
        "outbox_drained_s": round(drained_s, 1),
        "drain_readings_per_s": round(queued / drain) if drain > 0 else None,
    }
