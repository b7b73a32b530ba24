"""``tbib bench broker``: the same gateway-style MQTT QoS 1 load through a 3-node RabbitMQ cluster (quorum queue), a
3-node NATS cluster (JetStream R3 stream) and the single Mosquitto of the same run (the baseline); kill -9 one cluster
node with readings in flight; count lost/duplicated readings by id against the publishers' own PUBACK log.

Phases per broker: ``throughput`` (publishers as fast as PUBACKs allow, ``window`` batches in flight each; no kill),
then, for the clusters, ``failover`` (a fixed batch rate; the first node is killed -9 at mid-run, the publishers fail
over to the next URL and re-publish what was not acknowledged). Consumers are the server side: competing consumers
(2 AMQP consumers on the quorum queue, 2 pull subscriptions on one durable JetStream consumer, a shared subscription
on Mosquitto), each connected to a different node, reconnecting to another one when theirs dies.

The clusters come from ``scripts/services.sh cluster up``; Mosquitto from ``scripts/services.sh up mosquitto`` (or
``TBIB_TEST_MQTT_URL``). The killed node is started again at the end (``cluster up``). Last stdout line with ``--json``:
one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from typing import Any

from teleconsult.bench.broker_cluster import REPO, Kind, Node, nodes
from teleconsult.bench.broker_consumers import Consumed, consume
from teleconsult.bench.broker_pub import PubJob, batch_readings, publisher_process

BrokerKind = Kind | str  # "rabbitmq", "nats", "mosquitto"


def _cpu(pids: list[int]) -> dict[int, float]:
    """CPU seconds (user + system) per live process."""
    import psutil  # dev extra: benchmarks only

    out = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        out[pid] = t.user + t.system
    return out


def _loadavg() -> list[str]:
    with open("/proc/loadavg") as f:
        return f.read().split()[:3]


def _mosquitto_url() -> tuple[str, int | None]:
    url = os.environ.get("TBIB_TEST_MQTT_URL")
    if url is None:
        out = subprocess.run(  # noqa: S603
            [str(REPO / "scripts" / "services.sh"), "up", "mosquitto"], check=True, capture_output=True, text=True
        ).stdout
        for line in out.splitlines():
            if "TBIB_TEST_MQTT_URL=" in line:
                url = line.split("=", 1)[1].strip("'")
    if url is None:
        raise SystemExit("bench broker: no Mosquitto (scripts/services.sh up mosquitto printed no TBIB_TEST_MQTT_URL)")
    pid_file = REPO / ".cache" / "services" / "mosquitto" / "mosquitto.pid"
    try:
        pid: int | None = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        pid = None
    return url, pid


def make_jobs(urls: list[str], args: argparse.Namespace, tag: int, seconds: float, rate: float | None) -> list[PubJob]:
    """One :class:`PubJob` per publisher process; ``rate`` in batches/s per process (None: window-bound)."""
    per = args.gateways // args.publishers
    return [
        PubJob(
            index=k,
            urls=urls,
            gateways=list(range(k * per, (k + 1) * per)),
            tag=tag,
            per_message=args.per_message,
            seconds=seconds,
            rate=rate,
            window=args.window,
        )
        for k in range(args.publishers)
    ]


def _count(jobs: list[PubJob], logs: list[dict[str, Any]], got: Consumed) -> dict[str, Any]:
    """lost (acknowledged, never delivered), duplicated (delivered more than once), by reading id."""
    per = jobs[0].per_message
    expected: set[tuple[int, int]] = set()
    for job, rec in zip(jobs, logs, strict=True):
        for batch, _t in rec["acks"]:
            gw, first = batch_readings(job, batch)
            expected.update((gw, s) for s in range(first, first + per))
    delivered = set(got.counts)
    return {
        "acked_readings": len(expected),
        "delivered_readings": len(delivered),
        "lost": len(expected - delivered),
        "duplicated": sum(n - 1 for n in got.counts.values() if n > 1),
        "unacked_delivered": len(delivered - expected),
    }


def _failover_times(logs: list[dict[str, Any]], kill_at: float) -> list[float | None]:
    """Per publisher: the longest wait between two PUBACKs from the last one before the kill on (the link to a dead
    node, the reconnect, the re-sent batches, a leader election); None when the publisher never got all its batches
    acknowledged (it did not recover within the run and its 60 s drain)."""
    out: list[float | None] = []
    for rec in logs:
        times = sorted(t for _b, t in rec["acks"])
        before = [t for t in times if t <= kill_at]
        window = ([before[-1]] if before else [kill_at]) + [t for t in times if t > kill_at]
        if rec["unacked"] or len(window) < 2:
            out.append(None)
            continue
        out.append(round(max(b - a for a, b in itertools.pairwise(window)), 3))
    return out


async def run_phase(
    kind: BrokerKind,
    urls: list[str],
    consumer_urls: list[str],
    jobs: list[PubJob],
    pids: list[int],
    kill: Node | None,
    kill_after: float,
) -> dict[str, Any]:
    """One run of ``jobs`` through the ``kind`` broker at ``urls`` (consumers on ``consumer_urls``); with ``kill``,
    that node is killed -9 ``kill_after`` seconds in. Returns the counts (see the module docstring)."""
    ctx = mp.get_context("fork")
    go, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=publisher_process, args=(j, go, results), daemon=True) for j in jobs]
    got = Consumed(tag=jobs[0].tag)
    stop = asyncio.Event()
    consumers = asyncio.create_task(consume(kind, consumer_urls, got, stop))
    await asyncio.sleep(1.0)  # consumers attached
    for p in procs:
        p.start()
    await asyncio.sleep(0.5)
    cpu0 = _cpu(pids)
    t0 = time.time()
    go.set()
    kill_at = None
    if kill is not None:
        await asyncio.sleep(kill_after)
        kill_at = time.time()
        kill.kill9()
    logs: list[dict[str, Any]] = []
    while len(logs) < len(procs):
        try:
            logs.append(await asyncio.to_thread(results.get, True, 120.0))
        except Exception as exc:
            stop.set()
            raise SystemExit(f"bench broker: a publisher did not report: {exc!r}") from exc
    elapsed = max(r.get("last_publish", t0) for r in logs) - t0
    cpu1 = _cpu(pids)
    for p in procs:
        p.join(10)
    errors = [r["error"] for r in logs if "error" in r]
    if errors:
        stop.set()
        await consumers
        raise SystemExit(f"bench broker: publisher failed: {errors}")
    logs.sort(key=lambda r: r["index"])
    want = sum(len(r["acks"]) for r in logs) * jobs[0].per_message
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline and len(got.counts) < want:  # noqa: ASYNC110 (delivery catches up)
        await asyncio.sleep(0.25)
    await asyncio.sleep(1.0)  # late duplicates
    stop.set()
    await consumers
    acked = sum(len(r["acks"]) for r in logs) * jobs[0].per_message
    out: dict[str, Any] = {
        **_count(jobs, logs, got),
        "seconds": round(elapsed, 2),
        "acked_readings_per_s": round(acked / elapsed) if elapsed > 0 else 0,
        "broker_cpu_s": round(sum(cpu1[p] - cpu0[p] for p in cpu1 if p in cpu0), 2),
        "publisher_cpu_s": round(sum(r["cpu_s"] for r in logs), 2),
        "unacked_at_end": sum(r["unacked"] for r in logs),
        "resent_batches": sum(r["resent"] for r in logs),
        "consumer_reconnects": got.reconnects,
        "redelivered_readings": got.redelivered,
        "per_publisher": [
            {"acked_batches": len(r["acks"]), "unacked": r["unacked"], "reconnects": len(r["reconnects"])} for r in logs
        ],
    }
    if kill is not None:
        out["broker_cpu_s_note"] = "surviving nodes only"
    if out["broker_cpu_s"] > 0:
        out["readings_per_broker_cpu_s"] = round(acked / out["broker_cpu_s"])
    if kill is not None and kill_at is not None:
        ft = _failover_times(logs, kill_at)
        out["killed"] = kill.name
        out["failover_s_per_publisher"] = ft
        done = [t for t in ft if t is not None]
        out["failover_s_max"] = max(done) if len(done) == len(ft) else None
        out["publishers_recovered"] = f"{len(done)}/{len(ft)}"
        out["publisher_reconnects"] = sum(len(r["reconnects"]) for r in logs)
    return out


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"loadavg_before": await asyncio.to_thread(_loadavg)}
    tag = int(time.time()) & 0xFFFFFFFF
    brokers: list[str] = args.brokers.split(",")
    for kind in brokers:
        tag += 1
        if kind == "mosquitto":
            url, pid = _mosquitto_url()
            urls, consumer_urls, pids, kill_node = [url], [url], [pid] if pid else [], None
        else:
            cl = nodes("rabbitmq" if kind == "rabbitmq" else "nats")
            missing = [n.name for n in cl if n.pid() is None]
            if missing:
                raise SystemExit(f"bench broker: {kind} nodes not running: {missing} (scripts/services.sh cluster up)")
            urls = [n.mqtt_url for n in cl]
            consumer_urls = [n.client_url for n in cl]
            pids = [p for n in cl if (p := n.pid()) is not None]
            kill_node = cl[0]
        res: dict[str, Any] = {}
        res["throughput"] = await run_phase(
            kind, urls, consumer_urls, make_jobs(urls, args, tag, args.seconds, None), pids, None, 0
        )
        if kill_node is not None and not args.no_kill:
            tag += 1
            rate = args.failover_rate / args.publishers
            res["failover"] = await run_phase(
                kind,
                urls,
                consumer_urls,
                make_jobs(urls, args, tag, args.failover_seconds, rate),
                pids,
                kill_node,
                args.failover_seconds / 2,
            )
            restart = await asyncio.to_thread(
                subprocess.run,
                [str(REPO / "scripts" / "cluster.sh"), "up", kind],
                check=False,
                capture_output=True,
                text=True,
            )
            res["restarted"] = restart.returncode == 0
        if kind == "rabbitmq" and args.ingest_dsn:
            from teleconsult.bench.broker_ingest import ingest_phase

            tag += 1
            cl = nodes("rabbitmq")
            jobs = make_jobs(urls, args, tag, args.seconds, None)
            res["ingest"] = await asyncio.to_thread(ingest_phase, cl, args.ingest_dsn, jobs, args.ingest_workers)
        report[kind] = res
        print(f"bench broker: {kind}: {json.dumps(res)}", file=sys.stderr)
    base = report.get("mosquitto", {}).get("throughput", {}).get("acked_readings_per_s")
    if base:
        report["throughput_ratio_to_mosquitto"] = {
            k: round(report[k]["throughput"]["acked_readings_per_s"] / base, 3) for k in brokers if k != "mosquitto"
        }
    report["loadavg_after"] = await asyncio.to_thread(_loadavg)
    report["config"] = {k: v for k, v in vars(args).items() if k != "json"}
    return report


def main(argv: list[str]) -> int:
    """Entry point of ``tbib bench broker``."""
    p = argparse.ArgumentParser(prog="tbib bench broker", description=__doc__)
    p.add_argument("--brokers", default="mosquitto,rabbitmq,nats", help="comma list of mosquitto, rabbitmq, nats")
    p.add_argument("--publishers", type=int, default=4, help="publisher processes (MQTT connections)")
    p.add_argument("--gateways", type=int, default=20, help="simulated gateways spread over the publishers")
    p.add_argument("--per-message", type=int, default=20, help="readings per MQTT batch")
    p.add_argument("--window", type=int, default=50, help="batches in flight per publisher")
    p.add_argument("--seconds", type=float, default=8.0, help="throughput phase length")
    p.add_argument("--failover-seconds", type=float, default=16.0, help="failover phase length (kill at half)")
    p.add_argument("--failover-rate", type=float, default=200.0, help="batches/s of all publishers, failover phase")
    p.add_argument("--no-kill", action="store_true", help="throughput phases only")
    p.add_argument("--ingest-dsn", help="also run tbib ingest --amqp-url on the RabbitMQ cluster (scratch database)")
    p.add_argument("--ingest-workers", type=int, default=1, help="tbib ingest processes of that phase")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
    args = p.parse_args(argv)
    if args.gateways < args.publishers:
        p.error("--gateways must be >= --publishers")
    report = asyncio.run(_run(args))
    if args.json:
        print(json.dumps(report))
    else:
        print(json.dumps(report, indent=1))
    failed = any(
        report[k].get("failover", {}).get("lost", 0) or report[k]["throughput"]["lost"] for k in args.brokers.split(",")
    )
    return 1 if failed else 0
