"""`tbib demo` end to end: embedded PostgreSQL + a Mosquitto process, server, ingest, two simulated gateways; the
printed login works, readings arrive, Ctrl-C stops everything and keeps the data."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from teleconsult.demo.services import mosquitto_binary

pytestmark = pytest.mark.slow


def test_demo_starts_serves_and_stops(tmp_path: Path) -> None:
    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed")
    data = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TBIB_TEST_", "TBIB_DATABASE", "TBIB_MQTT"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "teleconsult.cli.main", "demo", "--data-dir", str(data), "--port", "0",
         "--patients", "2", "--services", "embedded", "--onset", "2", "--full-effect", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if "password:" in line:
                break
        text = "\n".join(lines)
        assert "[6/6]" in text, text
        url = re.search(r"open (http://\S+)/", text)
        password = re.search(r"password: (\S+)", text)
        assert url is not None, text
        assert password is not None, text
        r = httpx.post(f"{url.group(1)}/api/v1/auth/login", json={"username": "dr.demo", "password": password.group(1)})
        assert r.status_code == 200, r.text
        headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
        assert httpx.get(f"{url.group(1)}/", timeout=5).status_code == 200
        for _ in range(120):
            rows = httpx.get(f"{url.group(1)}/api/v1/patients", headers=headers, timeout=5).json()["patients"]
            if len(rows) == 2 and all(row["latest"].get("heart_rate") for row in rows):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"no readings reached the dashboard API: {rows}")
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "stopped. Data kept in" in out
    assert not (data / "pgserver" / "postmaster.pid").exists()  # the embedded PostgreSQL was stopped
    assert (data / "credentials.json").is_file()
