"""Broker failover on the chosen cluster (docs/scale-out.md): the tests' fresh 3-node RabbitMQ cluster, gateway-style
paho QoS 1 publishers with the three MQTT URLs, two AMQP consumers on the quorum queue, kill -9 of the node the
publishers 0 and 3 are on (and the queue's first leader) with readings in flight.

Asserts: nothing the broker acknowledged is lost (by reading id, against the publishers' PUBACK log); every duplicate
is an at-least-once redelivery (a batch the publishers re-sent after the kill, or a delivery the broker flagged as
redelivered) -- the ingest's idempotent write by reading id removes those; the publishers fail over in < 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import pytest

from teleconsult.bench.broker import make_jobs, run_phase

from .conftest import Cluster

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]


def test_kill_one_rabbitmq_node_loses_nothing(rabbit_cluster: Cluster) -> None:
    cl = rabbit_cluster.nodes
    rabbit_cluster.up()  # whole again if an earlier test killed a node
    assert all(n.pid() is not None for n in cl)
    urls = [n.mqtt_url for n in cl]
    args = argparse.Namespace(gateways=8, publishers=4, per_message=10, window=20)
    jobs = make_jobs(urls, args, int(time.time()) & 0xFFFFFFFF, 8.0, 25.0)  # 4 x 25 batches/s = 1 000 readings/s
    pids = [p for n in cl if (p := n.pid()) is not None]
    res = asyncio.run(run_phase("rabbitmq", urls, [n.client_url for n in cl], jobs, pids, cl[0], 4.0))
    print(res)

    assert cl[0].pid() is None, "the node was not killed"
    assert res["unacked_at_end"] == 0, "publishers could not deliver every batch after the failover"
    assert res["acked_readings"] >= 6000, res  # the run carried load before and after the kill
    assert res["lost"] == 0, res
    # at-least-once: a repeat is only a re-sent batch or a redelivery flagged by the broker
    assert res["duplicated"] <= res["resent_batches"] * args.per_message + res["redelivered_readings"], res
    assert res["publisher_reconnects"] >= 2, "publishers 0 and 3 were on the killed node"
    assert res["publishers_recovered"] == f"{args.publishers}/{args.publishers}", res
    assert res["failover_s_max"] is not None, res
    assert res["failover_s_max"] < 10.0, res
