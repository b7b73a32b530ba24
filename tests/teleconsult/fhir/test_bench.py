"""Smoke run of `tbib bench fhir` at a small scale: the last stdout line is one JSON object with the documented keys,
0 lost, replay adds no row, every validated resource is valid."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.bench, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[3]
KEYS = {"search_p95_ms", "import_obs_per_s", "replay_new_rows", "invalid_resources", "everything_page_p95_ms", "lost"}


def test_bench_fhir_smoke(services) -> None:
    env = {**os.environ, "TBIB_TEST_DSN": services.dsn}
    out = subprocess.run(
        [sys.executable, "-m", "teleconsult.cli.main", "bench", "fhir", "--rows", "20000", "--background-patients",
         "5", "--searches", "3", "--everything-days", "1", "--everything-pages", "3", "--import-obs", "1000", "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result.keys() >= KEYS
    assert result["search_entries"] == 1000
    assert (result["lost"], result["replay_new_rows"], result["invalid_resources"]) == (0, 0, 0)
    assert result["validated_resources"] > 2000
    assert result["everything_pages"] == 3
