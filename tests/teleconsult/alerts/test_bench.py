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
    hops = result["hops"]
    assert set(hops) == {"publish_to_ingest_tx", "ingest_tx_to_commit_notified", "commit_notified_to_engine",
                         "engine_to_store_tx", "store_tx_to_store_notified", "store_notified_to_hub",
                         "hub_to_first_send", "hub_to_last_send", "first_send_to_client", "last_send_to_client",
                         "store_tx_to_socket", "fanout_first_to_last_socket"}  # fmt: skip
    assert all(h["p50_ms"] is not None for h in hops.values())  # every hop timed, the server's delivery trace too
    assert result["baseline"]["frames"] == 3
    assert result["background_committed_per_s"] > 0
    assert result["background_alert_events_per_s"] == 0  # plausible background vitals raise nothing


def test_bench_fanout_smoke(services: object) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "teleconsult.cli.main", "bench", "fanout", "--json", "--sockets", "30", "--patients",
         "6", "--seconds", "2", "--alert-rate", "20", "--vitals-interval", "0.5", "--live-interval", "0.2"],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["sockets"] == 30
    assert result["patients"] == 6
    # 40 alerts round-robin over 6 patients, 5 sockets each: every expected frame arrived, and only to its care team
    assert result["frames"] == result["expected_frames"] == 40 * 5
    assert result["baseline"]["frames"] == result["baseline"]["expected_frames"] == 40
    assert result["vitals_final_ok"] == 30  # coalesced vitals: every socket ends with its patient's newest value
    assert result["resyncs"] == 0
    assert result["p99_ms"] is not None
