"""Smoke run of `tbib bench prescriptions` at a small scale: never over-dispensed, counters match the dispense
records, about half of the attempts refused with 409, the tampered row rejected."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.bench, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[3]


def test_bench_prescriptions_smoke(services) -> None:
    env = {**os.environ, "TBIB_TEST_DSN": services.dsn}
    out = subprocess.run(
        [sys.executable, "-m", "teleconsult.cli.main", "bench", "prescriptions", "--prescriptions", "10",
         "--attempts", "40", "--concurrency", "6", "--lines", "2", "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert (r["over_dispensed"], r["counter_mismatch"]) == (0, 0)
    assert r["boxes_dispensed"] == 2 * r["succeeded"] <= r["boxes_prescribed"] == 80
    assert sum(r["statuses"].values()) == 40
    assert set(r["statuses"]) <= {"201", "409 already_dispensed"}
    assert r["statuses"].get("409 already_dispensed", 0) > 0
    assert r["tamper_view_invalid"] is True
    assert r["tamper_dispense_rejected"] is True
    assert r["dispense_p95_ms"] > 0
