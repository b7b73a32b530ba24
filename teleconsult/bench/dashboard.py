"""Dashboard benchmark: ``python -m teleconsult.bench.dashboard [--patients 500] [--json]`` (``tbib bench dashboard``).

The real server (uvicorn, this process) on a fresh database of the project's PostgreSQL (``--dsn``, else
``$TBIB_DATABASE_URL`` / ``$TBIB_TEST_DSN``), and headless Debian Chromium (Playwright) on loopback:

- **time to interactive** of the patient list: navigation start -> the snapshot loaded (``GET /patients`` and
  ``/patients/alerts``), every row in the DOM and the live socket connected (``window.tbib.metrics.listInteractiveMs``,
  after two animation frames), for a doctor with ``--patients`` patients and, as the baseline, one with 10;
- **frame budget** while every patient's heart rate, SpO2 and systolic BP change once per second (an UPDATE of
  ``latest_readings`` per second, the statement ingest runs, whose trigger notifies the live feed): for
  ``--seconds`` the page records every ``requestAnimationFrame`` delta and every long task (> 50 ms,
  PerformanceObserver); the baseline is the same page with no updates.

The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import secrets
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import urlsplit

import psycopg
import uvicorn

from teleconsult.api.app import create_app
from teleconsult.security.passwords import hash_password
from teleconsult.settings import Settings
from teleconsult.store.migrate import upgrade

CHROMIUM: Final = "/usr/bin/chromium"
CHROMIUM_ARGS: Final = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: A frame delta above 1.5 vsync periods (60 Hz) means at least one frame was dropped.
DROPPED_MS: Final = 25.0
PASSWORD: Final = "bench-dashboard-password"  # noqa: S105 - a throwaway account in a throwaway database
METRICS: Final = (
    ("heart_rate", "/min", 60.0, 120.0),
    ("spo2", "%", 88.0, 99.0),
    ("systolic_bp", "mm[Hg]", 100.0, 170.0),
)

FRAME_PROBE: Final = """
window.__bench = { frames: [], longTasks: [], running: false };
try {
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) window.__bench.longTasks.push({ start: e.startTime, duration: e.duration });
  }).observe({ type: "longtask", buffered: true });
} catch (e) {}
window.__benchStart = () => {
  const b = window.__bench; b.frames = []; b.longTasks = []; b.running = true;
  let last = performance.now();
  const tick = (now) => { b.frames.push(now - last); last = now; if (b.running) requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
};
window.__benchStop = () => { window.__bench.running = false; return window.__bench; };
"""


def _with_db(dsn: str, name: str) -> str:
    return urlsplit(dsn)._replace(path="/" + name).geturl()


def make_database(admin_dsn: str) -> tuple[str, str]:
    """A fresh migrated database (TimescaleDB when available); returns (dsn, name)."""
    name = f"tbib_bench_dash_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
        tsdb = conn.execute("select 1 from pg_available_extensions where name = 'timescaledb'").fetchone()
        preload = conn.execute("show shared_preload_libraries").fetchone()
    dsn = _with_db(admin_dsn, name)
    if tsdb and preload and "timescaledb" in str(preload[0]):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("create extension if not exists timescaledb")
    upgrade(dsn)
    return dsn, name


def seed(dsn: str, doctor: str, patients: int, *, alerts: int) -> list[uuid.UUID]:
    """A doctor with ``patients`` patients, their latest vitals, and ``alerts`` open alerts."""
    rng = random.Random(patients)
    now = datetime.now(UTC)
    ids = [uuid.uuid4() for _ in range(patients)]
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        row = conn.execute(
            "insert into users (username, display_name, role, password_hash) values (%s, %s, 'doctor', %s)"
            " returning id",
            (doctor, doctor, hash_password(PASSWORD)),
        ).fetchone()
        assert row is not None
        with conn.cursor().copy("copy patients (id, display_name) from stdin") as cp:
            for i, pid in enumerate(ids):
                cp.write_row((pid, f"Patient {i:04d}"))
        with conn.cursor().copy("copy care_team (clinician_id, patient_id, valid_from) from stdin") as cp:
            for pid in ids:
                cp.write_row((row[0], pid, now - timedelta(days=1)))
        with conn.cursor().copy(
            "copy latest_readings (patient_id, metric, value, unit, measured_at, reading_id) from stdin"
        ) as cp:
            for pid in ids:
                for metric, unit, lo, hi in (*METRICS, ("body_temperature", "Cel", 36.0, 38.5)):
                    cp.write_row((pid, metric, round(rng.uniform(lo, hi), 1), unit, now, uuid.uuid4()))
        for pid in ids[:alerts]:
            conn.execute(
                "insert into alerts (patient_id, rule, severity, state, raised_at, updated_at)"
                " values (%s, 'spo2', %s, 'open', %s, %s)",
                (pid, rng.choice(["medium", "high"]), now, now),
            )
    return ids


class Server:
    """uvicorn in a thread on a free port."""

    def __init__(self, settings: Settings) -> None:
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = ""

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(20)


class Updater:
    """Changes every patient's vitals once per second (one UPDATE of latest_readings, as ingest does)."""

    def __init__(self, dsn: str, ids: Sequence[uuid.UUID]) -> None:
        self.dsn = dsn
        self.ids = list(ids)
        self.stop = threading.Event()
        self.rounds = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                t0 = time.monotonic()
                conn.execute(
                    "update latest_readings set value = case metric"
                    " when 'heart_rate' then 60 + random() * 60 when 'spo2' then 88 + random() * 11"
                    " else 100 + random() * 70 end, measured_at = now(), reading_id = gen_random_uuid()"
                    " where patient_id = any(%s) and metric in ('heart_rate', 'spo2', 'systolic_bp')",
                    (self.ids,),
                )
                self.rounds += 1
                self.stop.wait(max(0.0, 1.0 - (time.monotonic() - t0)))

    def __enter__(self) -> Updater:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def _pct(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


async def _login(page: Any, url: str, doctor: str) -> None:
    await page.goto(f"{url}/")
    await page.fill("#username", doctor)
    await page.fill("#password", PASSWORD)
    await page.press("#password", "Enter")
    await page.wait_for_function("window.tbib && window.tbib.metrics.listInteractiveMs !== null", timeout=60_000)


async def _tti(browser: Any, url: str, doctor: str, runs: int) -> dict[str, Any]:
    context = await browser.new_context(viewport={"width": 1400, "height": 900}, bypass_csp=True)
    page = await context.new_page()
    await _login(page, url, doctor)  # the session cookie; then cold reloads
    samples, rows = [], 0
    for _ in range(runs):
        await page.reload()
        await page.wait_for_function(
            "window.tbib && window.tbib.metrics.listInteractiveMs !== null && window.tbib.feed.state === 'live'",
            timeout=60_000,
        )
        samples.append(
            float(await page.evaluate("Math.max(window.tbib.metrics.listInteractiveMs, window.tbib.metrics.liveAt)"))
        )
        rows = int(await page.evaluate("document.querySelectorAll('table.patients tbody tr').length"))
    await context.close()
    return {"rows": rows, "p50_ms": statistics.median(samples), "max_ms": max(samples), "samples_ms": samples}


async def _frames(browser: Any, url: str, doctor: str, seconds: float, updater: Updater | None) -> dict[str, Any]:
    context = await browser.new_context(viewport={"width": 1400, "height": 900}, bypass_csp=True)
    await context.add_init_script(FRAME_PROBE)
    page = await context.new_page()
    await _login(page, url, doctor)
    await page.wait_for_function("window.tbib.feed.state === 'live'")
    await page.wait_for_timeout(1500)
    frames_before = int(await page.evaluate("window.tbib.feed.stats.frames"))
    await page.evaluate("window.__benchStart()")
    if updater is not None:
        updater.__enter__()
    try:
        await page.wait_for_timeout(seconds * 1000)
    finally:
        if updater is not None:
            updater.__exit__()
    data = await page.evaluate("window.__benchStop()")
    list_metrics = await page.evaluate("window.tbib.view.metrics")
    await_metrics = await page.evaluate("window.tbib.metrics")
    feed_frames = int(await page.evaluate("window.tbib.feed.stats.frames")) - frames_before
    await context.close()
    deltas = [float(d) for d in data["frames"][1:]]
    long_tasks = [float(t["duration"]) for t in data["longTasks"]]
    return {
        "frames": len(deltas),
        "fps": len(deltas) / seconds,
        "frame_p50_ms": _pct(deltas, 0.5),
        "frame_p95_ms": _pct(deltas, 0.95),
        "frame_p99_ms": _pct(deltas, 0.99),
        "frame_max_ms": max(deltas, default=0.0),
        "dropped_frames_pct": 100.0 * sum(d > DROPPED_MS for d in deltas) / max(1, len(deltas)),
        "frames_over_50ms": sum(d > 50 for d in deltas),
        "long_tasks": len(long_tasks),
        "long_task_total_ms": sum(long_tasks),
        "list_renders": int(list_metrics["renders"]),
        "last_list_render_ms": float(list_metrics["lastRenderMs"]),
        "max_list_render_ms": float(list_metrics.get("maxRenderMs", 0.0)),
        "max_vitals_apply_ms": float(await_metrics.get("vitalsApplyMaxMs", 0.0)),
        "feed_frames": feed_frames,
        "update_rounds": updater.rounds if updater is not None else 0,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    admin = args.dsn or os.environ.get("TBIB_DATABASE_URL") or os.environ.get("TBIB_TEST_DSN")
    if not admin:
        raise SystemExit("tbib bench dashboard: pass --dsn or set TBIB_TEST_DSN (scripts/services.sh up prints it)")
    dsn, name = make_database(admin)
    try:
        big, small = "bench-big", "bench-small"
        ids = seed(dsn, big, args.patients, alerts=max(1, args.patients // 25))
        seed(dsn, small, 10, alerts=1)
        settings = Settings(
            env="test",
            database_url=dsn,
            secret_key=secrets.token_urlsafe(48),
            cookie_secure=False,
            access_token_ttl_s=3600,
            ext={"alerts": {"enabled": False}, "signaling": {"enabled": False}},
        )
        with Server(settings) as server:
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                try:
                    tti_big = await _tti(browser, server.url, big, args.runs)
                    tti_small = await _tti(browser, server.url, small, args.runs)
                    idle = await _frames(browser, server.url, big, args.seconds, None)
                    busy = await _frames(browser, server.url, big, args.seconds, Updater(dsn, ids))
                finally:
                    await browser.close()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')
    return {
        "benchmark": "dashboard",
        "patients": args.patients,
        "tti_p50_ms": round(tti_big["p50_ms"], 1),
        "tti_max_ms": round(tti_big["max_ms"], 1),
        "tti_rows": tti_big["rows"],
        "baseline_tti_p50_ms_10_patients": round(tti_small["p50_ms"], 1),
        "tti_ratio_vs_10": round(tti_big["p50_ms"] / max(tti_small["p50_ms"], 1e-9), 2),
        "updates_per_s": 3 * args.patients,
        "seconds": args.seconds,
        "busy": {k: round(v, 2) if isinstance(v, float) else v for k, v in busy.items()},
        "idle_baseline": {k: round(v, 2) if isinstance(v, float) else v for k, v in idle.items()},
        "frame_p99_ratio_vs_idle": round(busy["frame_p99_ms"] / max(idle["frame_p99_ms"], 1e-9), 2),
        "chromium": CHROMIUM,
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tbib bench dashboard``."""
    p = argparse.ArgumentParser(prog="tbib bench dashboard", description=__doc__.split("\n\n")[0])
    p.add_argument("--patients", type=int, default=500)
    p.add_argument("--runs", type=int, default=5, help="cold loads per time-to-interactive figure (default 5)")
    p.add_argument("--seconds", type=float, default=30.0, help="frame-budget window (default 30 s)")
    p.add_argument("--dsn", help="admin DSN of a PostgreSQL cluster (a database is created and dropped)")
    p.add_argument("--json", action="store_true", help="only the JSON line")
    args = p.parse_args(argv)
    result = asyncio.run(run(args))
    if not args.json:
        print(f"time to interactive, {result['patients']} patients: p50 {result['tti_p50_ms']} ms "
              f"(10 patients: {result['baseline_tti_p50_ms_10_patients']} ms)")  # fmt: skip
        b = result["busy"]
        print(f"{result['updates_per_s']} vital updates/s: {b['fps']:.1f} fps, frame p99 {b['frame_p99_ms']} ms, "
              f"long tasks {b['long_tasks']} ({b['long_task_total_ms']} ms)")  # fmt: skip
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
