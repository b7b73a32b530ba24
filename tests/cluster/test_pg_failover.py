"""PostgreSQL failover under a gateway load (docs/scale-out.md "PostgreSQL failover"): a fresh Patroni + etcd + HAProxy
pair of the test's own (``scripts/pgcluster.sh`` in a temporary state dir, always brought down), a private Mosquitto, a
real ``tbib ingest`` worker writing through HAProxy, real gateways over simulated devices, the alert engine leader;
kill -9 of the leader's Patroni and postmaster with readings in flight.

Asserts, counted from the gateways' capture logs (what the devices produced), not from the database alone: 0 readings
lost, 0 duplicated, nothing left in the outboxes; writes come back through HAProxy and through the libpq multi-host
DSN in < 30 s; the alert engine leads again on the new primary; the killed node rejoins.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from teleconsult.bench.pgfailover import PgFailoverConfig, run

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]


def test_kill_postgres_leader_loses_nothing(tmp_path: Path) -> None:
    for exe in ("/usr/lib/postgresql/15/bin/postgres", "/usr/sbin/mosquitto"):
        if not Path(exe).exists():
            pytest.fail(f"{exe} missing: make setup installs PostgreSQL 15 and Mosquitto")
    if shutil.which("patroni") is None and not Path("/usr/bin/patroni").exists():
        # scripts/pgcluster.sh installs patroni, etcd-server and haproxy when root; say so otherwise
        import os

        if os.geteuid() != 0:
            pytest.fail("patroni is not installed: apt-get install patroni etcd-server haproxy (or run as root)")
    res = run(PgFailoverConfig(gateways=3, load_s=6.0, throughput_s=2.0, keep_dir=tmp_path), print)
    print(res)

    assert res["killed"] != res["leader_after"], res  # the replica was promoted
    assert res["recovered"], res
    assert res["readings_expected"] > 100, res  # the gateways carried load before and after the kill
    assert res["readings_stored_before_kill"] > 0, res
    assert (res["lost"], res["duplicated"], res["unexpected"], res["outbox_left"]) == (0, 0, 0, 0), res["lost_ids"]
    assert res["failover_s_haproxy"] is not None, res
    assert res["failover_s_multihost"] is not None, res
    assert res["failover_s_haproxy"] < 30.0, res
    assert res["failover_s_multihost"] < 30.0, res
    assert res["alert_leader_back_s"] is not None, res
    assert res["alert_leader_back_s"] < 45.0, res
    assert res["ok"], res
