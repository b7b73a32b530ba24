"""Smoke run of `tbib bench alerts` (small load): the last stdout line is the JSON with the required keys."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.bench, pytest.mark.slow]


def test_bench_alerts_smoke(services: object) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "teleconsult.cli.main", "bench", "alerts", "--json", "--dashboards", "5", "--rate",
         "500", "--probes", "3", "--gateways", "5", "--publishers", "1"],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("p50_ms", "p99_ms", "background_readings_per_s", "dashboards"):
        assert key in result
    assert result["dashboards"] == 5
    assert result["frames"] == result["expected_frames"] == 15
    assert result["p50_ms"] is not None
