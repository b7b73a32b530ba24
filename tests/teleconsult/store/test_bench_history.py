"""Smoke run of `tbib bench history`: the last stdout line is one JSON object with the documented keys; the spike of
the 1 Hz patient survives on every tier."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.bench, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[3]
KEYS = {"p95_ms_7d", "p95_ms_30d", "p95_ms_90d", "raw_p95_ms_30d", "ratio_30d", "ingest_cost", "rebuild_s"}


def test_bench_history_smoke(services) -> None:
    env = {**os.environ, "TBIB_TEST_DSN": services.dsn}
    out = subprocess.run(
        [sys.executable, "-m", "teleconsult.cli.main", "bench", "history", "--days", "1", "--patients", "3",
         "--queries", "3", "--raw-queries", "2", "--writer-batches", "2", "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result.keys() >= KEYS
    assert result["rows"] == 86_400 + 2 * 1_440
    assert result["minute_rows"] == 3 * 1_440
    assert {q["source"] for q in result["queries"].values()} == {"1m", "1h", "raw"}
    assert all(q["spike_kept"] for q in result["queries"].values())
