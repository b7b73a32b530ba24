"""Smoke check of the call benchmark: the last stdout line is one JSON object with the promised keys."""

from __future__ import annotations

import json

import pytest

from teleconsult.bench.call import main, pct

pytestmark = [pytest.mark.bench, pytest.mark.slow]


def test_percentiles() -> None:
    assert pct([], 50) is None
    assert pct([5.0], 95) == 5.0
    assert pct([1.0, 2.0, 3.0, 4.0], 50) == 2.5


def test_bench_call_prints_one_json_line_last(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--calls", "2", "--cpu-seconds", "0.5", "--json", "--pg-dsn", ""]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(last)
    for key in (
        "browser_first_frame_p50_ms",
        "browser_first_frame_p95_ms",
        "agent_first_frame_p50_ms",
        "vitals_latency_p50_ms",
        "agent_cpu_pct",
        "baseline_first_frame_p50_ms",
    ):
        assert key in result
    assert result["agent_first_frame_p50_ms"] > 0
    assert result["vitals_latency_p50_ms"] >= 0
    assert result["agent_cpu_pct"] > 0
    # issue 19: first frame direct and over TURN (both peers relay-only), the vitals panel on the doctor's screen
    assert result["first_frame_p50_ms"] > 0
    assert result["first_frame_relay_udp_p50_ms"] > 0
    assert result["first_frame_relay_tcp_p50_ms"] > 0
    assert result["relay_routes"] == ["relay(tcp)->relay", "relay(udp)->relay"]
    assert result["vitals_panel_readings"] > 0
    assert result["vitals_panel_p95_ms"] >= 0
    assert set(result["goals_met"]) >= {"first_frame_relay_udp_p50_ms", "vitals_panel_p95_ms"}
