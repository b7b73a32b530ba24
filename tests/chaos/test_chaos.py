"""The chaos suite, short version (CI): real PostgreSQL (a private initdb cluster), real Mosquitto, 2 `tbib ingest`
workers, 3 real gateways over simulated devices, and 6 seeded faults of every kind (kill -9 of a gateway, a worker and
the broker with readings in flight, PostgreSQL immediate shutdown, SIGSTOP). The full run is `tbib chaos --faults 50`
(docs/benchmarks/chaos.md)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from teleconsult.chaos.runner import ChaosConfig, run
from teleconsult.chaos.schedule import Kind, counts, plan

pytestmark = pytest.mark.chaos


def test_schedule_is_seeded_and_has_every_kind() -> None:
    a = plan(50, seed=7, gateways=4, workers=2)
    assert a == plan(50, seed=7, gateways=4, workers=2)
    assert a != plan(50, seed=8, gateways=4, workers=2)
    assert len(a) == 50
    by_kind = {k: sum(1 for f in a if f.kind is k) for k in Kind}
    assert by_kind == counts(50)
    assert by_kind[Kind.BROKER_KILL9] >= 5
    assert all(10 <= f.duration <= 40 for f in a if f.kind is Kind.PAUSE)
    assert all(f.hold > 0 for f in a if f.kind is Kind.BROKER_KILL9)
    assert [f.at for f in a] == sorted(f.at for f in a)
    small = counts(6)
    assert sum(small.values()) == 6
    assert small[Kind.BROKER_KILL9] == 2
    assert all(small[k] >= 1 for k in Kind)


@pytest.mark.skipif(os.geteuid() != 0, reason="the private PostgreSQL cluster runs as user postgres (needs root)")
def test_short_chaos_run_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    summary = run(
        ChaosConfig(faults=6, seed=3, gateways=3, workers=2, interval_s=4.0, pause_s=(3.0, 5.0), keep_dir=tmp_path),
        lambda _line: None,
    )
    assert summary["faults_injected"] == 6
    assert set(summary["faults_by_kind"]) == {k.value for k in Kind}
    assert summary["broker_kill9_with_readings_in_flight"] >= 1
    assert summary["readings_expected"] > 100
    assert (summary["lost"], summary["duplicated"], summary["outbox_left"]) == (0, 0, 0), summary.get("missing_ids")
    assert summary["ok"]
