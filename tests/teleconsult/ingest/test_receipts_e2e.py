"""End to end on real engines: broker kill -9 after PUBACK and before its autosave, with readings in flight.

Real Mosquitto (persistence on, autosave every hour: a kill -9 loses everything it queued), real TimescaleDB, a real
``tbib ingest`` process and two real gateways (``python -m gateway_agent.cli gateway run --simulate 1``). The ingest
worker is paused (SIGSTOP) so that acknowledged batches pile up in the broker; the broker is then killed. With commit
receipts the gateways still hold those readings and re-send them: every reading the devices produced (counted from the
gateways' capture logs) is in ``readings`` exactly once, and the outboxes end empty.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from teleconsult.chaos.fleet import Fleet, captured, stored, verify
from teleconsult.chaos.processes import Broker
from teleconsult.store.migrate import upgrade


def wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


@pytest.mark.slow
def test_broker_kill_9_after_puback_loses_nothing(tsdb_dsn: str, tmp_path: Path) -> None:
    upgrade(tsdb_dsn)
    broker = Broker(tmp_path / "broker")
    broker.start()
    fleet = Fleet(tsdb_dsn, broker.url, tmp_path)
    worker = fleet.add_worker(0)
    gateways = [fleet.add_gateway(i, receipt_timeout_s=2.0) for i in range(2)]
    ids = [g.gateway_id for g in gateways]
    try:
        worker.start()
        for g in gateways:
            g.child.start()
        assert wait(lambda: sum(stored(tsdb_dsn, ids).values()) >= 10, 60), "ingest never stored anything"
        worker.pause()  # PUBACKed batches now wait in the broker only
        time.sleep(2.5)
        in_flight = len(set(captured(gateways)) - set(stored(tsdb_dsn, ids)))
        assert in_flight > 0
        broker.kill9()  # nothing was ever saved: the queued batches and every session are gone
        worker.resume()
        time.sleep(0.5)
        broker.start()
        time.sleep(3.0)  # capture goes on; overdue receipts make the gateways re-send
        assert wait(lambda: set(captured(gateways)) <= set(stored(tsdb_dsn, ids)), 60), "readings lost"
        for g in gateways:
            assert g.child.stop(120) == 0  # a clean stop waits until the outbox is receipted
        worker.stop()
        verdict = verify(fleet)
        assert verdict.lost == []
        assert (verdict.duplicated, verdict.outbox_left) == (0, 0)
        assert verdict.expected > in_flight
        resent = [json.loads((g.dir / "status.json").read_text())["link"]["batches_resent"] for g in gateways]
        assert sum(resent) > 0, "the broker kill should have lost acknowledged batches"
    finally:
        for child in [worker, *(g.child for g in gateways)]:
            child.kill9()
        broker.stop()
