"""Call benchmark: ``python -m teleconsult.bench.call [--calls 20] [--json]`` (``tbib bench call``).

Three processes on loopback, like production: the signaling server (``teleconsult.signaling.standalone`` on uvicorn),
the patient's consult agent (``tbib consult join`` with the test pattern and simulated vitals every 50 ms) and the
doctor (this process: an aiortc peer, then headless Debian Chromium via Playwright).

Measured, over ``--calls`` calls each:
- "doctor clicks call" -> first decoded video frame of the agent, for Chromium <-> agent and aiortc <-> agent;
- vitals latency: reading taken in the agent -> message received by the doctor (first reading taken after the channel
  opened, per call);
- agent CPU % (psutil, % of one core) while sending 640x480 to a receive-only doctor, and while sending and receiving;
- with ``--pg-dsn`` (or ``$TBIB_TEST_DSN``): the aiortc doctor on node A and the agent on node B, two signaling
  processes sharing rooms through PostgreSQL LISTEN/NOTIFY;
- over TURN (our own coturn on loopback, when the ``coturn`` package is installed): Chromium and the agent both
  relay-only, so every packet goes through coturn, over TURN/UDP and over TURN/TCP (``first_frame_relay_*``);
- the vitals panel (``vitals_panel_*``): reading taken in the agent -> drawn in the dashboard's vitals panel on the
  Chromium doctor page (the animation frame that wrote it), readings taken after the channel opened;
- with ``--pg-dsn`` and ``--mqtt-url`` (or ``$TBIB_TEST_MQTT_URL``): ``dashboard_call_to_agent_join_*``, the doctor's
  "Appeler" (``POST .../call``) -> the gateway's agent admitted in the room, through the whole server, Mosquitto and a
  gateway with a simulated strap (:mod:`teleconsult.bench.call_dashboard`);
- baseline in the same run: bare aiortc <-> aiortc in one process, no signaling, no separate processes.
The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import shutil
import statistics
import sys
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import psutil
from aiortc import RTCConfiguration, RTCPeerConnection, VideoStreamTrack

from teleconsult.bench.call_doctor import AiortcDoctor
from teleconsult.signaling.coturn import Coturn, coturn_binary
from teleconsult.signaling.tokens import Role, issue_token

CHROMIUM: Final = "/usr/bin/chromium"
CHROMIUM_ARGS: Final = [
    "--no-sandbox",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
GOALS_MS: Final = {
    "browser_first_frame_p50_ms": 300.0,
    "agent_first_frame_p50_ms": 150.0,
    "vitals_latency_p50_ms": 100.0,
    "first_frame_p50_ms": 500.0,
    "first_frame_relay_udp_p50_ms": 500.0,
    "first_frame_relay_tcp_p50_ms": 500.0,
    "vitals_panel_p95_ms": 300.0,
    "dashboard_call_to_agent_join_p50_ms": 3000.0,
}


def pct(values: Sequence[float], q: float) -> float | None:
    """Percentile ``q`` (0-100), linear interpolation; None when empty."""
    if not values:
        return None
    if len(values) == 1:
        return float(values[0])
    return float(statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]) if q < 100 else max(values)


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


@contextlib.asynccontextmanager
async def _process(args: list[str], env: dict[str, str], ready_prefix: str | None) -> AsyncIterator[tuple[Any, str]]:
    proc = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    line = ""
    try:
        if ready_prefix is not None:
            assert proc.stdout is not None
            raw = await asyncio.wait_for(proc.stdout.readline(), 30)
            line = raw.decode().strip()
            if not line.startswith(ready_prefix):
                raise RuntimeError(f"{args[2]} did not start: {line!r}")
        yield proc, line
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def baseline(calls: int) -> list[float]:
    """Bare aiortc <-> aiortc in one process: offer -> first decoded frame, no signaling."""
    out = []
    consumers: list[asyncio.Future[None]] = []
    for _ in range(calls):
        t0 = time.perf_counter()
        doctor = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        agent = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        first = asyncio.get_running_loop().create_future()

        @doctor.on("track")
        def _track(track: Any, first: asyncio.Future[float] = first) -> None:
            async def consume() -> None:
                await track.recv()
                if not first.done():
                    first.set_result(time.perf_counter())

            consumers.append(asyncio.ensure_future(consume()))

        doctor.addTransceiver("video", direction="recvonly")
        doctor.createDataChannel("vitals")
        await doctor.setLocalDescription(await doctor.createOffer())
        await agent.setRemoteDescription(doctor.localDescription)
        agent.addTrack(VideoStreamTrack())
        await agent.setLocalDescription(await agent.createAnswer())
        await doctor.setRemoteDescription(agent.localDescription)
        out.append((await asyncio.wait_for(first, 10) - t0) * 1000)
        await asyncio.gather(doctor.close(), agent.close())
    for c in consumers:
        c.cancel()
    await asyncio.gather(*consumers, return_exceptions=True)
    return out


async def agent_calls(url: str, token: str, calls: int) -> dict[str, list[float]]:
    """aiortc doctor <-> agent process through signaling."""
    first: list[float] = []
    connected: list[float] = []
    fresh: list[float] = []
    async with AiortcDoctor(url, token) as doctor:
        await asyncio.wait_for(doctor.peer_joined.wait(), 20)
        for _ in range(calls):
            m = await doctor.call("patient")
            await asyncio.wait_for(m.first_frame_event.wait(), 10)
            await asyncio.wait_for(m.fresh_vitals_event.wait(), 10)
            first.append(m.first_frame_ms or 0.0)
            connected.append(((m.connected_at or m.clicked_at) - m.clicked_at) * 1000)
            fresh.append(m.fresh_vitals_latency_ms[0])
            await doctor.hangup()
            await asyncio.sleep(0.2)
    return {"first": first, "connected": connected, "vitals": fresh}


async def agent_cpu(url: str, token: str, pid: int, seconds: float, *, doctor_sends_video: bool) -> float:
    """CPU % (of one core) of the agent process during ``seconds`` of an established call."""
    proc = psutil.Process(pid)
    async with AiortcDoctor(url, token, send_video=doctor_sends_video) as doctor:
        await asyncio.wait_for(doctor.peer_joined.wait(), 20)
        m = await doctor.call("patient")
        await asyncio.wait_for(m.first_frame_event.wait(), 10)
        await asyncio.sleep(1.0)  # encoder warm-up, bitrate ramp
        proc.cpu_percent(None)
        await asyncio.sleep(seconds)
        return float(proc.cpu_percent(None))


async def browser_calls(base: str, token: str, calls: int, extra: str = "") -> dict[str, list[Any]]:
    """Headless Chromium doctor page (with the dashboard's vitals panel) <-> agent process; ``extra``: more fragment
    parameters (``relay=1&turn=udp``)."""
    from playwright.async_api import async_playwright

    first, vitals, vias, routes = [], [], [], []
    panel: list[float] = []
    queued: list[float] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.goto(f"{base}/consult/doctor#token={token}&autoadmit=1&panel=1{extra}")
            await page.wait_for_function("window.tbib && window.tbib.state.peers.patient", timeout=20_000)
            for i in range(calls):
                await page.evaluate("window.tbib.startCall('patient')")
                h = await page.wait_for_function(f"window.tbib.state.calls[{i}].firstFrameMs", timeout=30_000)
                first.append(float(await h.json_value()))
                h = await page.wait_for_function(f"window.tbib.state.calls[{i}].firstVitals", timeout=30_000)
                vitals.append(float((await h.json_value())["latencyMs"]))
                vias.append(await page.evaluate(f"window.tbib.state.calls[{i}].firstFrameVia"))
                await asyncio.sleep(0.5)  # half a second of readings drawn in the panel
                draws = await page.evaluate(
                    f"""() => {{
                        const open = window.tbib.state.calls[{i}].vitalsOpenAt;
                        const draws = window.tbib.panel ? window.tbib.panel.metrics.callDraws : [];
                        return draws.filter(([at]) => at >= open).map(([at, drawn, sent]) => [drawn - at, sent - at]);
                    }}"""
                )
                # A reading the agent kept until its side of the channel opened waited for call set-up, not on the
                # path: counted apart (sent more than 20 ms after it was taken).
                panel += [ms for ms, held in draws if held <= 20]
                queued += [ms for ms, held in draws if held > 20]
                routes.append(await page.evaluate(f"window.tbib.state.calls[{i}].route"))
                await page.evaluate("window.tbib.hangup()")
                await page.evaluate("window.tbib.panel && (window.tbib.panel.metrics.callDraws.length = 0)")
                await asyncio.sleep(0.2)
        finally:
            await browser.close()
    return {
        "first": first,
        "vitals": vitals,
        "via_rvfc": [float(v == "requestVideoFrameCallback") for v in vias],
        "panel": panel,
        "queued": queued,
        "routes": routes,
    }


async def relay_calls(
    py: str, env: dict[str, str], key: bytes, turn_urls: list[str], secret: str, calls: int
) -> dict[str, dict[str, list[Any]]]:
    """Chromium and the agent, both relay-only, through coturn: over TURN/UDP and over TURN/TCP."""
    node_env = {**env, "TBIB_SIGNALING_TURN_URLS": json.dumps(turn_urls), "TBIB_SIGNALING_TURN_SECRET": secret}
    server_args = [py, "-m", "teleconsult.signaling.standalone", "--dashboard-assets"]
    out: dict[str, dict[str, list[Any]]] = {}
    async with _process(server_args, node_env, "SIGNALING ") as (_server, line):
        base = line.split()[1]
        for transport in ("udp", "tcp"):
            now = datetime.now(UTC)
            cid = f"bench-relay-{transport}"
            agent_token = issue_token(key=key, consultation_id=cid, role=Role.AGENT, subject="gw-relay", now=now)
            doctor_token = issue_token(key=key, consultation_id=cid, role=Role.DOCTOR, subject="dr-relay", now=now)
            agent_args = [py, "-m", "gateway_agent.consult_cli", "consult", "join", "--token", agent_token]
            agent_args += ["--server", base, "--no-camera", "--relay-only", "--turn-transport", transport]
            agent_args += ["--demo-vitals", "0.05"]
            async with _process(agent_args, env, None):
                out[transport] = await browser_calls(base, doctor_token, calls, f"&relay=1&turn={transport}")
    return out


async def ping_rtt(url: str, token: str, count: int = 40) -> list[float]:
    """Signaling round trips (ping -> pong) in ms, paced under the rate limit."""
    from websockets.asyncio.client import connect

    out = []
    async with connect(url) as ws:
        await ws.recv()  # hello
        await ws.send(json.dumps({"v": 1, "seq": 1, "type": "join", "token": token}))
        await ws.recv()  # joined
        for seq in range(2, count + 2):
            await asyncio.sleep(0.06)
            t0 = time.perf_counter()
            await ws.send(json.dumps({"v": 1, "seq": seq, "type": "ping"}))
            while json.loads(await ws.recv())["type"] != "pong":
                pass
            out.append((time.perf_counter() - t0) * 1000)
    return out


async def two_node_calls(
    py: str, env: dict[str, str], dsn: str, tokens: dict[str, str], calls: int
) -> tuple[list[float], list[float]]:
    """Doctor on node A, agent on node B, signaling routed through PostgreSQL LISTEN/NOTIFY."""
    node_env = {**env, "TBIB_SIGNALING_PG_DSN": dsn}
    server_args = [py, "-m", "teleconsult.signaling.standalone"]
    async with (
        _process(server_args, node_env, "SIGNALING ") as (_a, line_a),
        _process(server_args, node_env, "SIGNALING ") as (_b, line_b),
    ):
        ws_a = line_a.split()[1].replace("http://", "ws://") + "/ws/v1/signaling"
        agent_args = [py, "-m", "gateway_agent.consult_cli", "consult", "join", "--token", tokens["agent"]]
        agent_args += ["--server", line_b.split()[1], "--no-camera", "--no-ice-servers", "--demo-vitals", "0.05"]
        async with _process(agent_args, env, None):
            first = (await agent_calls(ws_a, tokens["doctor"], calls))["first"]
        return first, await ping_rtt(ws_a, tokens["ping"])


async def run(
    calls: int, cpu_seconds: float, with_browser: bool, pg_dsn: str | None, mqtt_url: str | None = None
) -> dict[str, Any]:
    key = secrets.token_bytes(32)
    env = {**os.environ, "TBIB_SIGNALING_KEY": key.hex(), "PYTHONUNBUFFERED": "1"}
    now = datetime.now(UTC)
    py = sys.executable

    def tok(role: Role, sub: str) -> str:
        return issue_token(key=key, consultation_id="bench", role=role, subject=sub, now=now)

    base_ms = await baseline(calls)
    server_args = [py, "-m", "teleconsult.signaling.standalone", "--dashboard-assets"]
    async with _process(server_args, env, "SIGNALING ") as (_server, line):
        base = line.split()[1]
        ws = base.replace("http://", "ws://") + "/ws/v1/signaling"
        agent_args = [py, "-m", "gateway_agent.consult_cli", "consult", "join", "--token", tok(Role.AGENT, "gw-bench")]
        agent_args += ["--server", base, "--no-camera", "--no-ice-servers", "--demo-vitals", "0.05"]
        async with _process(agent_args, env, None) as (agent, _):
            aio = await agent_calls(ws, tok(Role.DOCTOR, "dr-bench"), calls)
            cpu_send = await agent_cpu(
                ws, tok(Role.DOCTOR, "dr-bench"), agent.pid, cpu_seconds, doctor_sends_video=False
            )
            cpu_both = await agent_cpu(
                ws, tok(Role.DOCTOR, "dr-bench"), agent.pid, cpu_seconds, doctor_sends_video=True
            )
            br: dict[str, list[Any]] = {
                "first": [],
                "vitals": [],
                "via_rvfc": [],
                "panel": [],
                "queued": [],
                "routes": [],
            }
            if with_browser and shutil.which(CHROMIUM):
                br = await browser_calls(base, tok(Role.DOCTOR, "dr-bench"), calls)
        ping_token = issue_token(key=key, consultation_id="bench-ping", role=Role.DOCTOR, subject="dr-3", now=now)
        rtt = await ping_rtt(ws, ping_token)
    two_nodes: list[float] = []
    two_nodes_rtt: list[float] = []
    if pg_dsn:
        later = datetime.now(UTC)
        tokens = {
            "agent": issue_token(key=key, consultation_id="bench-2", role=Role.AGENT, subject="gw-2", now=later),
            "doctor": issue_token(key=key, consultation_id="bench-2", role=Role.DOCTOR, subject="dr-2", now=later),
            "ping": issue_token(key=key, consultation_id="bench-ping", role=Role.DOCTOR, subject="dr-3", now=later),
        }
        two_nodes, two_nodes_rtt = await two_node_calls(py, env, pg_dsn, tokens, calls)
    dash: dict[str, list[float]] = {"joined": [], "first": []}
    if pg_dsn and mqtt_url:
        from teleconsult.bench.call_dashboard import dashboard_calls

        dash = await dashboard_calls(pg_dsn, mqtt_url, calls)
    relay: dict[str, dict[str, list[Any]]] = {}
    if with_browser and shutil.which(CHROMIUM) and coturn_binary() is not None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="tbib-bench-coturn-") as home, Coturn(Path(home)) as turn:
            relay = await relay_calls(py, env, key, turn.urls, turn.secret, calls)
    empty: dict[str, list[Any]] = {"first": [], "routes": []}
    udp, tcp = relay.get("udp", empty), relay.get("tcp", empty)
    result: dict[str, Any] = {
        "bench": "call",
        "calls": calls,
        "browser_first_frame_p50_ms": _r(pct(br["first"], 50)),
        "browser_first_frame_p95_ms": _r(pct(br["first"], 95)),
        "browser_vitals_latency_p50_ms": _r(pct(br["vitals"], 50)),
        "browser_first_frame_via_rvfc": _r(100 * statistics.fmean(br["via_rvfc"])) if br["via_rvfc"] else None,
        "first_frame_p50_ms": _r(pct(br["first"], 50)),
        "first_frame_relay_udp_p50_ms": _r(pct(udp["first"], 50)),
        "first_frame_relay_udp_p95_ms": _r(pct(udp["first"], 95)),
        "first_frame_relay_tcp_p50_ms": _r(pct(tcp["first"], 50)),
        "first_frame_relay_tcp_p95_ms": _r(pct(tcp["first"], 95)),
        "relay_routes": sorted({_route(r) for r in udp["routes"] + tcp["routes"]}),
        "vitals_panel_p50_ms": _r(pct(br["panel"], 50)),
        "vitals_panel_p95_ms": _r(pct(br["panel"], 95)),
        "vitals_panel_readings": len(br["panel"]),
        "vitals_panel_queued_at_setup": len(br["queued"]),
        "vitals_panel_queued_p95_ms": _r(pct(br["queued"], 95)),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "agent_first_frame_p50_ms": _r(pct(aio["first"], 50)),
        "agent_first_frame_p95_ms": _r(pct(aio["first"], 95)),
        "agent_connected_p50_ms": _r(pct(aio["connected"], 50)),
        "vitals_latency_p50_ms": _r(pct(aio["vitals"], 50)),
        "vitals_latency_p95_ms": _r(pct(aio["vitals"], 95)),
        "agent_cpu_pct": _r(cpu_send),
        "agent_cpu_pct_sendrecv": _r(cpu_both),
        "signaling_rtt_p50_ms": _r(pct(rtt, 50)),
        "signaling_rtt_p95_ms": _r(pct(rtt, 95)),
        "two_nodes_signaling_rtt_p50_ms": _r(pct(two_nodes_rtt, 50)),
        "two_nodes_agent_first_frame_p50_ms": _r(pct(two_nodes, 50)),
        "two_nodes_agent_first_frame_p95_ms": _r(pct(two_nodes, 95)),
        "dashboard_call_to_agent_join_p50_ms": _r(pct(dash["joined"], 50)),
        "dashboard_call_to_agent_join_p95_ms": _r(pct(dash["joined"], 95)),
        "dashboard_call_to_first_frame_p50_ms": _r(pct(dash["first"], 50)),
        "baseline_first_frame_p50_ms": _r(pct(base_ms, 50)),
        "baseline_first_frame_p95_ms": _r(pct(base_ms, 95)),
        "cpus": psutil.cpu_count(),
        "python": platform.python_version(),
    }
    b50 = result["baseline_first_frame_p50_ms"]
    if b50:
        for name in ("agent_first_frame_p50_ms", "browser_first_frame_p50_ms", "two_nodes_agent_first_frame_p50_ms"):
            if result[name] is not None:
                result[name.replace("_p50_ms", "_ratio_to_baseline")] = round(result[name] / b50, 2)
    result["goals_met"] = {k: (result[k] is not None and result[k] < v) for k, v in GOALS_MS.items()}
    return result


def _route(r: dict[str, Any] | None) -> str:
    """The browser's selected pair, e.g. ``relay(udp)->relay``."""
    if not r:
        return "unknown"
    local = f"relay({r.get('relayProtocol')})" if r.get("local") == "relay" else str(r.get("local"))
    return f"{local}->{r.get('remote')}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tbib bench call``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="tbib bench call", description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20, help="calls per scenario (default 20)")
    parser.add_argument("--cpu-seconds", type=float, default=5.0, help="CPU sampling window (default 5 s)")
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium scenario")
    parser.add_argument(
        "--pg-dsn",
        default=os.environ.get("TBIB_TEST_DSN"),
        help="also run doctor on node A / agent on node B through this PostgreSQL (default $TBIB_TEST_DSN)",
    )
    parser.add_argument(
        "--mqtt-url",
        default=os.environ.get("TBIB_TEST_MQTT_URL"),
        help="with --pg-dsn: time dashboard call -> gateway agent joined through this broker ($TBIB_TEST_MQTT_URL)",
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    if args.calls < 1:
        parser.error("--calls must be >= 1")
    result = asyncio.run(run(args.calls, args.cpu_seconds, not args.no_browser, args.pg_dsn, args.mqtt_url))
    if not args.json:
        for k, v in result.items():
            print(f"{k:36} {v}")
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
