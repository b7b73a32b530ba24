"""The chaos suite, short version (CI): real PostgreSQL (a private initdb cluster), real Mosquitto, 2 `tbib ingest`
workers, 3 real gateways over simulated devices, and 6 seeded faults of every kind (kill -9 of a gateway, a worker and
the broker with readings in flight, PostgreSQL immediate shutdown, SIGSTOP). The full run is `tbib chaos --faults 50`
(docs/benchmarks/chaos.md)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from teleconsult.chaos.runner import ChaosConfig, run
from teleconsult.chaos.schedule import WEIGHTS, Kind, counts, plan

pytestmark = pytest.mark.chaos


def test_schedule_is_seeded_and_has_every_kind() -> None:
    a = plan(50, seed=7, gateways=4, workers=2)
    assert a == plan(50, seed=7, gateways=4, workers=2)
    assert a != plan(50, seed=8, gateways=4, workers=2)
    assert len(a) == 50
    by_kind = {k: sum(1 for f in a if f.kind is k) for k in WEIGHTS}  # the optional kinds only when asked for
    assert by_kind == counts(50)
    assert by_kind[Kind.BROKER_KILL9] >= 5
    assert all(10 <= f.duration <= 40 for f in a if f.kind is Kind.PAUSE)
    assert all(f.hold > 0 for f in a if f.kind is Kind.BROKER_KILL9)
    assert [f.at for f in a] == sorted(f.at for f in a)
    small = counts(6)
    assert sum(small.values()) == 6
    assert small[Kind.BROKER_KILL9] == 2
    assert all(small[k] >= 1 for k in WEIGHTS)


def test_alert_leader_kills_only_when_asked_for_and_at_least_three() -> None:
    extra = (Kind.ALERT_LEADER_KILL9,)
    with_leader = plan(20, seed=7, gateways=4, workers=2, extra=extra)
    assert plan(20, seed=7, gateways=4, workers=2, extra=extra) == with_leader
    kills = [f for f in with_leader if f.kind is Kind.ALERT_LEADER_KILL9]
    assert len(kills) == counts(20, extra)[Kind.ALERT_LEADER_KILL9] >= 3
    assert all(f.target == "alert-leader" and 0.3 <= f.duration <= 3.0 for f in kills)
    assert len(with_leader) == 20
    assert not [f for f in plan(20, seed=7, gateways=4, workers=2) if f.kind is Kind.ALERT_LEADER_KILL9]
    assert counts(2, extra)[Kind.ALERT_LEADER_KILL9] == 1
    assert counts(50, extra)[Kind.BROKER_KILL9] >= 5


@pytest.mark.skipif(os.geteuid() != 0, reason="the private PostgreSQL cluster runs as user postgres (needs root)")
def test_short_chaos_run_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    summary = run(
        ChaosConfig(faults=6, seed=3, gateways=3, workers=2, interval_s=4.0, pause_s=(3.0, 5.0), keep_dir=tmp_path),
        lambda _line: None,
    )
    assert summary["faults_injected"] == 6
    assert set(summary["faults_by_kind"]) == {k.value for k in WEIGHTS}
    assert summary["broker_kill9_with_readings_in_flight"] >= 1
    assert summary["readings_expected"] > 100
    assert (summary["lost"], summary["duplicated"], summary["outbox_left"]) == (0, 0, 0), summary.get("missing_ids")
    assert summary["ok"]


@pytest.mark.skipif(os.geteuid() != 0, reason="the private PostgreSQL cluster runs as user postgres (needs root)")
def test_short_run_behind_bad_links_catches_up_in_time_order(tmp_path: Path) -> None:
    """Gateways behind the 5g profile (loss, 50-300 ms jitter, reordering, rate cap) with link outages among the
    faults, then a long outage (black hole until 300 readings are queued): nothing lost or duplicated, the catch-up
    timed, and the dashboard API's latest value per metric is the reading with max(measured_at)."""
    from teleconsult.chaos.netem import PROFILES, probe

    reason = probe()
    if reason is not None:
        pytest.skip(f"link emulation: {reason}")
    summary = run(
        ChaosConfig(
            faults=6, seed=5, gateways=2, workers=1, interval_s=2.0, pause_s=(2.0, 3.0), keep_dir=tmp_path,
            patients=2, link=PROFILES["5g"], link_outages=True, link_outage_s=5.0, long_outage=300,
        ),
        lambda _line: None,
    )  # fmt: skip
    assert summary["faults_injected"] == 6
    assert summary["faults_by_kind"]["link_outage"] == 1
    assert (summary["lost"], summary["duplicated"], summary["outbox_left"]) == (0, 0, 0), summary.get("missing_ids")
    link = summary["link"]
    assert link["uplink"]["lost"] > 0  # the profile's loss happened
    assert link["uplink"]["blackholed"] > 0  # and the outages
    catch_up = summary["catch_up"]
    assert catch_up["queued_readings"] >= 300
    assert 0 < catch_up["reconnect_s"] <= catch_up["backlog_stored_s"]
    assert catch_up["drain_readings_per_s"] > 0
    dashboard = summary["dashboard"]
    assert dashboard["series"] >= 2 * 2 * 2  # patients x (heart rate, SpO2 at least)
    assert dashboard["ok"], dashboard["mismatches"]
    assert summary["ok"]
