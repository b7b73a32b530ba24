"""Smoke run of `tbib bench ingest`: the last stdout line is one JSON object with the documented keys, 0 lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.teleconsult.ingest.helpers import REPO

pytestmark = [pytest.mark.bench, pytest.mark.slow]

KEYS = {
    "readings_per_s",
    "copy_limit_readings_per_s",
    "naive_readings_per_s",
    "ratio_to_copy",
    "lost",
    "duplicated",
    "p50_publish_to_commit_ms",
    "p99_publish_to_commit_ms",
    "history_p95_ms",
    "backlog_readings_per_s",
}


def test_bench_ingest_smoke(services) -> None:
    env = {**os.environ, "TBIB_TEST_DSN": services.dsn}
    out = subprocess.run(
        [sys.executable, "-m", "teleconsult.cli.main", "bench", "ingest", "--seconds", "2", "--backlog-seconds", "1",
         "--latency-seconds", "1", "--gateways", "4", "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result.keys() >= KEYS
    assert (result["lost"], result["duplicated"], result["unexpected"]) == (0, 0, 0)
    assert result["readings_per_s"] > 0
    receipts = result["receipts"]
    assert receipts["range"]["receipts"] > 0  # named batches got receipts ...
    assert result["steady"]["receipts"] == 0  # ... unnamed ones (old gateways) none
    published = receipts["range"]["receipts"] + receipts["ids"]["receipts"]
    published += receipts["abba"]["second_with_phase_receipts"]
    assert receipts["abba"]["cpu_ratio_to_without"] > 0
    assert receipts["delivered_to_subscriber"]["receipts"] == published
    assert 0 < receipts["range"]["bytes_per_receipt"] < receipts["ids"]["bytes_per_receipt"]
