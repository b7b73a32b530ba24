"""Smoke check of the decoder benchmark (``python -m devices.bench --json``)."""

from __future__ import annotations

import json

import pytest

from devices.bench import SAMPLES, main


@pytest.mark.bench
def test_bench_json_last_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--json", "--seconds", "0.003"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(last)
    assert set(result["per_characteristic"]) == {f"{u:04X}" for u in SAMPLES}
    assert result["overall_decode_per_s"] > 0
    assert 0 < result["overall_ratio_vs_baseline"] < 10
