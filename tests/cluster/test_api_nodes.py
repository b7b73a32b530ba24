"""Two `tbib server` nodes behind a private HAProxy (docs/scale-out.md, "API nodes"): a real Mosquitto, a real
`tbib ingest`, load-generator gateways, alert probes and dashboard websocket clients that reconnect and replay like
live.js; kill -9 of the node that is not the alert leader, then of the leader's node (`tbib bench cluster`, small).

Asserts: every alert event in the store reached every dashboard exactly once (events missed while a socket was down
were replayed), every probe was raised (also across the leader's handover), the leader moved to the survivor, the
dashboards that lost their node reconnected and replayed in < 5 s, no acknowledged reading lost or stored twice, and
vitals reached the dashboards with one node and with two.
"""

from __future__ import annotations

import pytest

from teleconsult.bench.cluster import parse_args, run

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(400)]


def test_kill_api_node_then_alert_leader_loses_nothing() -> None:
    # 12 probe patients, a probe every 0.25 s: alert events arrive while sockets are down (the replay is exercised)
    args = parse_args(
        ["--dashboards", "12", "--rate", "500", "--gateways", "10", "--phase", "5", "--after-kill", "6",
         "--probe-patients", "12", "--probe-gap", "0.25", "--probe-hold", "2", "--http-concurrency", "4"]
    )  # fmt: skip
    res = run(args)
    print(res)

    readings = res["readings"]
    assert readings["sent"] > 5000, readings
    assert (readings["lost"], readings["duplicated"], readings["unexpected"]) == (0, 0, 0), readings
    alerts = res["alerts"]
    assert alerts["probes"] >= 40, alerts
    assert alerts["events"] >= 2 * alerts["probes"] - 12, alerts  # raised + cleared of each probe
    assert (alerts["missing"], alerts["duplicated"], alerts["unknown"]) == (0, 0, 0), alerts
    assert alerts["probes_not_raised"] == 0, alerts
    phases = res["phases"]
    for name in ("single", "cluster"):
        assert phases[name]["vitals_frames_per_s"] > 0, phases[name]
        assert phases[name]["alert_latency"]["frames"] > 0, phases[name]
    assert phases["single"]["nodes_up"] == 1
    assert phases["cluster"]["nodes_up"] == 2
    replayed = 0
    for name in ("api_node", "alert_leader"):
        kill = phases[name]
        assert kill["sockets_lost"] >= 1, kill  # the balancer had put dashboards on the killed node
        assert kill["all_reconnected"], kill
        assert kill["not_replayed"] == 0, kill
        assert kill["reconnect_replay_s"]["max"] < 5.0, kill
        replayed += kill["events_missed_then_replayed"]
    assert replayed > 0, phases  # some events happened while sockets were down and came back by replay
    leader = phases["alert_leader"]
    assert leader["new_leader"] is not None, leader
    assert leader["new_leader"] != leader["killed"], leader
    assert leader["leader_handover_s"] < 5.0, leader
    assert res["ok"], res
