"""`tbib demo` end to end (embedded PostgreSQL + its own Mosquitto with the ACL on, server, ingest, two real
``gateway_agent`` processes over the simulated bleak backend): the printed login works, readings arrive through the
authenticated broker, and Ctrl-C stops everything within 10 s in every phase, start-up included; a second Ctrl-C
stops at once. Every process the demo starts is found by a marker in its environment: none may outlive the demo.

Ctrl-C is delivered to a demo started with SIGINT *ignored* (as a background job of a non-interactive shell or a
CI runner starts it): Python then installs no KeyboardInterrupt handler of its own, and only the demo's explicit
handler makes it stop — the cause of a first-run timeout of this test on a fresh machine.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from tests.dashboard.demo_run import DemoRun

pytestmark = pytest.mark.slow

ARGS = ("--patients", "2", "--services", "embedded", "--onset", "2", "--full-effect", "20", "--history-hours", "0.5")
#: The promise: stopped, every child reaped, within 10 s of Ctrl-C.
STOP_S = 10.0
#: Start-up of a demo on a loaded 2-core machine (first run: initdb of the embedded PostgreSQL).
START_S = 120.0


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One demo data dir for the module: the first test interrupts its very first start (initdb), later tests must
    start cleanly from whatever that left."""
    return tmp_path_factory.mktemp("demo") / "data"


@pytest.fixture
def demo(data_dir: Path) -> Iterator[Callable[..., DemoRun]]:
    runs: list[DemoRun] = []

    def start(*extra: str, ignore_sigint: bool = True) -> DemoRun:
        run = DemoRun(data_dir, *ARGS, *extra, ignore_sigint=ignore_sigint)
        runs.append(run)
        return run

    try:
        yield start
    finally:
        for run in runs:
            run.close()


def _stop_and_check(run: DemoRun, *, code: int = 0, within: float = STOP_S) -> float:
    sent = run.interrupt()
    exit_code = run.wait_exit(timeout=within + 20)  # beyond the promise only to report the figure, not to hang
    took = time.monotonic() - sent
    assert took < within, f"stopped {took:.1f} s after Ctrl-C (promise: {within:.0f} s):\n{run.text}"
    assert exit_code == code, run.text
    assert run.leftovers() == [], run.text
    return took


def test_interrupt_during_first_start_then_start_again(demo: Callable[..., DemoRun], data_dir: Path) -> None:
    """Ctrl-C while the embedded PostgreSQL runs initdb for the first time; the next start must not trip over it."""
    run = demo()
    run.wait_for("[1/6]", START_S)
    time.sleep(0.8)  # inside initdb (~2 s here)
    _stop_and_check(run)
    assert not (data_dir / "pgserver" / "postmaster.pid").exists()
    again = demo()
    again.wait_for("[2/6]", START_S)
    assert "error" not in again.text, again.text
    _stop_and_check(again)


@pytest.mark.parametrize("phase", [1, 2, 3, 4, 5, 6])
def test_ctrl_c_in_each_start_up_phase(demo: Callable[..., DemoRun], phase: int) -> None:
    run = demo()
    run.wait_for(f"[{phase}/6]", START_S)
    _stop_and_check(run)
    assert "stopped. Data kept in" in run.text


def test_second_ctrl_c_stops_at_once(demo: Callable[..., DemoRun]) -> None:
    run = demo()
    run.wait_for("password:", START_S)
    run.proc.send_signal(signal.SIGINT)
    run.wait_for("stopping", STOP_S)
    took = _stop_and_check(run, code=130, within=3.0)
    assert "second interrupt: stopping at once" in run.text, (took, run.text)


def _anonymous_connect(url: str) -> ReasonCode | None:
    host, port = re.match(r"mqtt://([^:/]+):(\d+)", url).groups()  # type: ignore[union-attr]
    result: list[ReasonCode] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="anonymous-probe", protocol=mqtt.MQTTv5)
    client.on_connect = lambda _c, _u, _f, rc, _p: result.append(rc)
    client.connect(host, int(port))
    deadline = time.monotonic() + 10
    while not result and time.monotonic() < deadline:
        client.loop(0.2)
    client.disconnect()
    return result[0] if result else None


def test_demo_starts_serves_and_stops(demo: Callable[..., DemoRun], data_dir: Path) -> None:
    run = demo()
    run.wait_for("password:", START_S)
    text = run.text
    assert "[6/6]" in text, text
    assert "ACL on" in text, text
    url = re.search(r"open (http://\S+)/", text)
    password = re.search(r"password: (\S+)", text)
    assert url is not None, text
    assert password is not None, text
    base = url.group(1)
    r = httpx.post(f"{base}/api/v1/auth/login", json={"username": "dr.demo", "password": password.group(1)}, timeout=30)
    assert r.status_code == 200, r.text
    headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
    assert httpx.get(f"{base}/", timeout=10).status_code == 200
    # The demo pharmacy's pharmacist logs in and belongs to it (the e-prescription loop can be tried end to end).
    run.wait_for("pharmacie.demo", 10)
    r = httpx.post(
        f"{base}/api/v1/auth/login", json={"username": "pharmacie.demo", "password": password.group(1)}, timeout=30
    )
    assert r.status_code == 200, r.text
    me = httpx.get(
        f"{base}/api/v1/pharmacy/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"}, timeout=10
    )
    assert me.status_code == 200, me.text
    assert "démonstration" in me.text
    rows: list[dict[str, object]] = []
    for _ in range(120):
        rows = httpx.get(f"{base}/api/v1/patients", headers=headers, timeout=10).json()["patients"]
        if len(rows) == 2 and all(row["latest"].get("heart_rate") for row in rows):  # type: ignore[attr-defined]
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"no readings reached the dashboard API: {rows}")
    # The real gateway agent ran, with its own broker identity; the broker refuses anonymous clients.
    for gw in ("gw-demo-01", "gw-demo-02"):
        status = json.loads((data_dir / "gateways" / gw / "status.json").read_text())
        assert status["gateway_id"] == gw
        assert status["link"]["readings_acked"] > 0, status
        assert (data_dir / "gateways" / gw / "credentials.toml").stat().st_mode & 0o077 == 0
    broker_log = (data_dir / "mosquitto" / "mosquitto.log").read_text()
    assert "u'gw-demo-01'" in broker_log
    conf = (data_dir / "mosquitto" / "mosquitto.conf").read_text()
    port = re.search(r"^listener (\d+) 127\.0\.0\.1$", conf, re.MULTILINE)
    assert port is not None
    refused = _anonymous_connect(f"mqtt://127.0.0.1:{port.group(1)}")
    assert refused is not None
    assert refused.is_failure, refused
    _stop_and_check(run)
    assert "stopped. Data kept in" in run.text
    assert not (data_dir / "pgserver" / "postmaster.pid").exists()  # the embedded PostgreSQL was stopped
    assert (data_dir / "credentials.json").is_file()


def test_ctrl_c_reaches_a_demo_started_normally(demo: Callable[..., DemoRun]) -> None:
    """The same with SIGINT at its default disposition (a terminal)."""
    run = demo(ignore_sigint=False)
    run.wait_for("password:", START_S)
    _stop_and_check(run)
