"""`tbib bench gateway` / ``python -m gateway_agent.bench --json``: gateway footprint and outbox replay rate.

1. Live: a child ``gateway run --simulate N --sim-kinds heart_rate`` (N straps at 1 Hz) for ``--seconds``; its peak RSS
   and CPU (% of one core, after a warm-up that excludes start-up imports) sampled with psutil from this process; a
   subscriber counts the readings that reach the broker.
2. Replay: an outbox holding a backlog (default 3 000 readings = 5 devices x 600 s, and a larger one) is drained by
   the publisher into the broker; readings/s from start to the last PUBACK.
3. Baseline: the same batch payloads published with raw paho (QoS 1, same batch size, same inflight window), no outbox;
   ratios replay / baseline.

The last stdout line is one JSON object. Goals (issue 4): RSS < 80 MB, CPU < 5 %, replay >= 2 000 readings/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion

from devices.readings import Reading
from gateway_agent.outbox import Outbox
from gateway_agent.payload import encode_batch, reading_object, readings_topic
from gateway_agent.publisher import BrokerParams, MqttPublisher

GOALS: Final = {"rss_mb": 80.0, "cpu_pct": 5.0, "replay_readings_per_s": 2000.0}
REPO: Final = Path(__file__).resolve().parents[1]


def _broker_url(arg: str | None) -> str:
    if arg:
        return arg
    for name in ("TBIB_BENCH_MQTT_URL", "TBIB_TEST_MQTT_URL"):
        if os.environ.get(name):
            return os.environ[name]
    script = REPO / "scripts" / "services.sh"
    if script.exists():
        out = subprocess.run([str(script), "up"], check=True, capture_output=True, text=True).stdout  # noqa: S603
        m = re.search(r"^export TBIB_TEST_MQTT_URL='([^']*)'$", out, re.MULTILINE)
        if m:
            return m.group(1)
    raise SystemExit("no broker: pass --broker mqtt://host:port or set TBIB_TEST_MQTT_URL")


class _Counter:
    """A paho subscriber counting readings on one gateway's readings topic."""

    def __init__(self, host: str, port: int, gateway_id: str) -> None:
        self.readings = 0
        self._ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, *_: c.subscribe(readings_topic(gateway_id), qos=1)
        self.client.on_subscribe = lambda *_: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        if not self._ready.wait(10):
            raise SystemExit("subscriber could not subscribe")

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.readings += len(json.loads(msg.payload)["readings"])

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def wait_for(self, n: int, limit_s: float = 30.0) -> int:
        """Wait until ``n`` readings arrived (or ``limit_s``); close; return how many arrived (a delivery check)."""
        deadline = time.monotonic() + limit_s
        while self.readings < n and time.monotonic() < deadline:
            time.sleep(0.02)
        self.close()
        return self.readings


def live(url: str, devices: int, seconds: float, warmup: float, tmp: Path) -> dict[str, Any]:
    """Run the gateway as a child process and sample it."""
    host, port = urlsplit(url).hostname or "127.0.0.1", urlsplit(url).port or 1883
    gw = f"gw-bench-{uuid.uuid4().hex[:8]}"
    counter = _Counter(host, port, gw)
    cmd = [sys.executable, "-m", "gateway_agent.cli", "gateway", "run", "--simulate", str(devices)]
    cmd += ["--sim-kinds", "heart_rate", "--broker", url, "--gateway-id", gw, "--seconds", str(seconds + warmup)]
    cmd += ["--outbox", str(tmp / "live.sqlite3"), "--status-file", str(tmp / "status.json")]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    started = time.monotonic()
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # noqa: S603
    proc = psutil.Process(child.pid)
    peak_rss = 0
    cpu_at_warm: float | None = None
    t_warm = 0.0
    readings_at_warm = 0
    last_cpu, last_t = 0.0, started
    while child.poll() is None:
        try:
            mem = proc.memory_info().rss
            cpu = sum(proc.cpu_times()[:2])
        except psutil.NoSuchProcess:
            break
        now = time.monotonic()
        peak_rss = max(peak_rss, mem)
        if cpu_at_warm is None and now - started >= warmup:
            cpu_at_warm, t_warm, readings_at_warm = cpu, now, counter.readings
        last_cpu, last_t = cpu, now
        time.sleep(0.25)
    _, err = child.communicate()
    time.sleep(0.5)
    counter.close()
    if child.returncode != 0:
        raise SystemExit(f"gateway child failed ({child.returncode}): {err.strip()[-500:]}")
    steady = (last_cpu - cpu_at_warm) / (last_t - t_warm) * 100 if cpu_at_warm is not None else float("nan")
    return {
        "devices": devices,
        "seconds": seconds,
        "warmup_s": warmup,
        "readings_received": counter.readings,
        "readings_per_s": round((counter.readings - readings_at_warm) / max(1e-9, last_t - t_warm), 2),
        "rss_peak_mb": round(peak_rss / 2**20, 1),
        "cpu_pct_one_core": round(steady, 2),
        "cpu_pct_incl_startup": round(last_cpu / max(1e-9, last_t - started) * 100, 2),
    }


def _objects(n: int, devices: int = 5) -> list[tuple[str, dict[str, Any]]]:
    """``n`` heart-rate reading objects as the gateway stores them (5 devices, 1 Hz)."""
    t0 = datetime.now(UTC) - timedelta(seconds=n // devices)
    out = []
    for i in range(n):
        address = f"C0:DE:01:00:00:{i % devices:02X}"
        at = t0 + timedelta(seconds=i // devices)
        reading = Reading("heart_rate", 60.0 + i % 40, "/min", at, None, {"sensor_contact": True}, str(uuid.uuid4()))
        out.append((address, reading_object(reading, address=address, model="HRM", serial="SN1", received_at=at)))
    return out


async def _replay(url: str, path: Path, n: int, batch: int, window: int) -> dict[str, Any]:
    host, port = urlsplit(url).hostname or "127.0.0.1", urlsplit(url).port or 1883
    with Outbox(path) as box:
        objs = _objects(n)
        for start in range(0, n, 1000):
            box.append(objs[start : start + 1000])
        gw = f"gw-bench-replay-{uuid.uuid4().hex[:8]}"
        counter = _Counter(host, port, gw)
        pub = MqttPublisher(
            box,
            BrokerParams(host, port, gw),
            gateway_id=gw,
            max_readings=batch,
            max_delay=0.0,
            window=window,
            receipts=False,  # broker path only (PUBACK mode): no ingest here to send commit receipts
        )
        t0 = time.perf_counter()
        await pub.start()
        async with asyncio.timeout(max(60.0, n / 200)):
            await pub.drain()
        elapsed = time.perf_counter() - t0
        await pub.stop()
        assert box.depth() == 0
    delivered = await asyncio.to_thread(counter.wait_for, n)
    return {"backlog": n, "seconds": round(elapsed, 3), "readings_per_s": round(n / elapsed, 1), "delivered": delivered}


def replay(url: str, n: int, batch: int, window: int, tmp: Path) -> dict[str, Any]:
    """Drain an outbox of ``n`` readings into the broker; includes connect time."""
    return asyncio.run(_replay(url, tmp / f"replay-{n}.sqlite3", n, batch, window))


def baseline(url: str, n: int, batch: int, window: int) -> dict[str, Any]:
    """Raw paho: the same batch payloads, QoS 1, ``window`` in flight, no outbox; until the last PUBACK."""
    host, port = urlsplit(url).hostname or "127.0.0.1", urlsplit(url).port or 1883
    gw = f"gw-bench-raw-{uuid.uuid4().hex[:8]}"
    counter = _Counter(host, port, gw)
    bodies = [json.dumps({"id": str(uuid.uuid4()), **o}, separators=(",", ":")) for _a, o in _objects(n)]
    payloads = [encode_batch(gw, datetime.now(UTC), bodies[i : i + batch]) for i in range(0, n, batch)]
    done = threading.Event()
    acked = [0]

    def on_publish(*_a: Any) -> None:
        acked[0] += 1
        if acked[0] == len(payloads):
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=gw, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(window)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    connected = threading.Event()
    client.on_connect = lambda *_a: connected.set()
    t0 = time.perf_counter()
    client.connect(host, port)
    client.loop_start()
    connected.wait(10)
    for p in payloads:
        client.publish(readings_topic(gw), p, qos=1)
    done.wait(max(60.0, n / 200))
    elapsed = time.perf_counter() - t0
    client.disconnect()
    client.loop_stop()
    delivered = counter.wait_for(n)
    return {"backlog": n, "seconds": round(elapsed, 3), "readings_per_s": round(n / elapsed, 1), "delivered": delivered}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; the last stdout line is one JSON object."""
    p = argparse.ArgumentParser(prog="tbib bench gateway", description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--json", action="store_true", help="print only the JSON result line")
    p.add_argument("--broker", help="broker URL (default: TBIB_TEST_MQTT_URL or the project services)")
    p.add_argument("--devices", type=int, default=5, help="simulated 1 Hz devices (default 5)")
    p.add_argument("--seconds", type=float, default=60.0, help="live measurement duration after warm-up (default 60)")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds excluded from the CPU figure (default 5)")
    p.add_argument("--backlog", type=int, default=3000, help="replay backlog (default 3000 = 5 devices x 600 s)")
    p.add_argument("--large-backlog", type=int, default=30000, help="a larger replay backlog (0 to skip)")
    p.add_argument("--batch", type=int, default=100, help="readings per batch (default 100)")
    p.add_argument("--window", type=int, default=20, help="batches in flight (default 20)")
    args = p.parse_args(argv)
    url = _broker_url(args.broker)

    def say(text: str) -> None:
        if not args.json:
            sys.stderr.write(text + "\n")

    with tempfile.TemporaryDirectory(prefix="tbib-bench-gw-") as d:
        tmp = Path(d)
        say(f"live: {args.devices} simulated devices at 1 Hz for {args.seconds:.0f} s (+{args.warmup:.0f} s warm-up)")
        live_res = live(url, args.devices, args.seconds, args.warmup, tmp)
        say(f"  {live_res}")
        backlogs = [args.backlog] + ([args.large_backlog] if args.large_backlog else [])
        replays, baselines = [], []
        for n in backlogs:
            replays.append(replay(url, n, args.batch, args.window, tmp))
            baselines.append(baseline(url, n, args.batch, args.window))
            say(f"  replay {replays[-1]}  raw paho {baselines[-1]}")
    ratios = {
        f"replay_vs_raw_paho_{r['backlog']}": round(r["readings_per_s"] / b["readings_per_s"], 3)
        for r, b in zip(replays, baselines, strict=True)
    }
    result = {
        "bench": "gateway",
        "broker": url,
        "batch": args.batch,
        "window": args.window,
        "live": live_res,
        "replay": replays,
        "baseline_raw_paho": baselines,
        "ratios": ratios,
        "goals": GOALS,
        "meets_goals": {
            "rss": live_res["rss_peak_mb"] < GOALS["rss_mb"],
            "cpu": live_res["cpu_pct_one_core"] < GOALS["cpu_pct"],
            "replay": replays[0]["readings_per_s"] >= GOALS["replay_readings_per_s"],
        },
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
