"""NEWS2: every band edge of every parameter, both SpO2 scales, air/oxygen, partial scores, risk, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from teleconsult.alerts.errors import InvalidObservationError
from teleconsult.alerts.news2 import (
    PARAMETERS,
    Consciousness,
    News2Result,
    Observations,
    Risk,
    charted,
    score,
)

FULL_NORMAL = Observations(
    respiratory_rate=16,
    spo2=97,
    supplemental_oxygen=False,
    systolic_bp=120,
    pulse=70,
    consciousness=Consciousness.ALERT,
    temperature=37.0,
)


def only(name: str, **kw: object) -> int:
    result = score(Observations(**kw))  # type: ignore[arg-type]
    return result.components[name]


# (value, points) on both sides of every edge of the RCP 2017 chart
RESPIRATION = [(0, 3), (8, 3), (9, 1), (11, 1), (12, 0), (20, 0), (21, 2), (24, 2), (25, 3), (60, 3)]
SPO2_SCALE1 = [(50, 3), (91, 3), (92, 2), (93, 2), (94, 1), (95, 1), (96, 0), (100, 0)]
SYSTOLIC = [(60, 3), (90, 3), (91, 2), (100, 2), (101, 1), (110, 1), (111, 0), (219, 0), (220, 3), (300, 3)]
PULSE = [(20, 3), (40, 3), (41, 1), (50, 1), (51, 0), (90, 0), (91, 1)]
PULSE += [(110, 1), (111, 2), (130, 2), (131, 3), (200, 3)]
TEMPERATURE = [
    (30.0, 3),
    (35.0, 3),
    (35.1, 1),
    (36.0, 1),
    (36.1, 0),
    (38.0, 0),
    (38.1, 1),
    (39.0, 1),
    (39.1, 2),
    (42.0, 2),
]


@pytest.mark.parametrize(("value", "points"), RESPIRATION)
def test_respiratory_rate_edges(value: int, points: int) -> None:
    assert only("respiratory_rate", respiratory_rate=value) == points


@pytest.mark.parametrize(("value", "points"), SPO2_SCALE1)
@pytest.mark.parametrize("oxygen", [None, False, True])
def test_spo2_scale1_edges_independent_of_oxygen(value: int, points: int, oxygen: bool | None) -> None:
    assert only("spo2", spo2=value, supplemental_oxygen=oxygen) == points


@pytest.mark.parametrize(
    ("value", "oxygen", "points"),
    [
        (70, None, 3),
        (83, True, 3),
        (84, False, 2),
        (85, None, 2),
        (86, True, 1),
        (87, False, 1),
        (88, None, 0),
        (88, True, 0),
        (92, True, 0),
        (92, None, 0),
        (93, False, 0),
        (100, False, 0),
        (93, True, 1),
        (94, True, 1),
        (95, True, 2),
        (96, True, 2),
        (97, True, 3),
        (100, True, 3),
    ],
)
def test_spo2_scale2_edges(value: int, oxygen: bool | None, points: int) -> None:
    assert only("spo2", spo2=value, supplemental_oxygen=oxygen, spo2_scale=2) == points


@pytest.mark.parametrize("value", [93, 97, 100])
def test_spo2_scale2_high_saturation_without_oxygen_status_is_missing(value: int) -> None:
    result = score(Observations(spo2=value, spo2_scale=2))
    assert "spo2" not in result.components
    assert "spo2" in result.missing
    assert "air_or_oxygen" in result.missing


def test_scale2_is_never_automatic() -> None:
    # 88 % on air is 3 points on scale 1 and 0 on scale 2: the default is scale 1
    assert only("spo2", spo2=88) == 3
    assert only("spo2", spo2=88, spo2_scale=2) == 0


@pytest.mark.parametrize(("oxygen", "points"), [(False, 0), (True, 2)])
def test_air_or_oxygen(oxygen: bool, points: int) -> None:
    assert only("air_or_oxygen", supplemental_oxygen=oxygen) == points


@pytest.mark.parametrize(("value", "points"), SYSTOLIC)
def test_systolic_edges(value: int, points: int) -> None:
    assert only("systolic_bp", systolic_bp=value) == points


@pytest.mark.parametrize(("value", "points"), PULSE)
def test_pulse_edges(value: int, points: int) -> None:
    assert only("pulse", pulse=value) == points


@pytest.mark.parametrize(
    ("level", "points"),
    [
        (Consciousness.ALERT, 0),
        (Consciousness.CONFUSION, 3),
        (Consciousness.VOICE, 3),
        (Consciousness.PAIN, 3),
        (Consciousness.UNRESPONSIVE, 3),
    ],
)
def test_consciousness(level: Consciousness, points: int) -> None:
    assert only("consciousness", consciousness=level) == points


@pytest.mark.parametrize(("value", "points"), TEMPERATURE)
def test_temperature_edges(value: float, points: int) -> None:
    assert only("temperature", temperature=value) == points


@pytest.mark.parametrize(
    ("value", "points"),
    [
        (35.04, 3),  # charted 35.0
        (35.05, 1),  # charted 35.1 (half away from zero, on the decimal value)
        (36.04, 1),
        (36.05, 0),
        (38.04, 0),
        (38.05, 1),
        (39.04, 1),
        (39.05, 2),
    ],
)
def test_temperature_between_edges_rounds_to_one_decimal(value: float, points: int) -> None:
    assert only("temperature", temperature=value) == points


@pytest.mark.parametrize(
    ("name", "kw", "value", "points"),
    [
        ("respiratory_rate", "respiratory_rate", 20.4, 0),
        ("respiratory_rate", "respiratory_rate", 20.5, 2),
        ("spo2", "spo2", 95.5, 0),
        ("systolic_bp", "systolic_bp", 110.5, 0),
        ("pulse", "pulse", 90.5, 1),
        ("pulse", "pulse", 40.49, 3),
    ],
)
def test_whole_number_parameters_round_half_up(name: str, kw: str, value: float, points: int) -> None:
    assert only(name, **{kw: value}) == points


def test_charted_uses_decimal_representation() -> None:
    assert str(charted(36.05, 1)) == "36.1"
    assert str(charted(2.675, 2)) == "2.68"
    assert str(charted(20.5, 0)) == "21"


def test_full_normal_set() -> None:
    result = score(FULL_NORMAL)
    assert result == News2Result(
        total=0,
        components=dict.fromkeys(PARAMETERS, 0),
        missing=(),
        partial=False,
        risk=Risk.LOW,
    )
    assert list(result.components) == list(PARAMETERS)


def test_partial_score_lists_missing_sorted_and_never_counts_them_normal() -> None:
    result = score(Observations(spo2=90, pulse=120, temperature=38.5))
    assert result.components == {"spo2": 3, "pulse": 2, "temperature": 1}
    assert result.missing == ("air_or_oxygen", "consciousness", "respiratory_rate", "systolic_bp")
    assert result.partial is True
    assert result.total == 6
    assert result.risk is Risk.MEDIUM


def test_empty_observations() -> None:
    result = score(Observations())
    assert result.total == 0
    assert result.components == {}
    assert result.missing == tuple(sorted(PARAMETERS))
    assert result.partial


def _with(**kw: object) -> Observations:
    base = {
        "respiratory_rate": 16,
        "spo2": 97,
        "supplemental_oxygen": False,
        "systolic_bp": 120,
        "pulse": 70,
        "consciousness": Consciousness.ALERT,
        "temperature": 37.0,
    }
    base.update(kw)
    return Observations(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("obs", "total", "risk"),
    [
        (_with(), 0, Risk.LOW),
        (_with(pulse=95, temperature=38.5, respiratory_rate=22), 4, Risk.LOW),  # 1+1+2
        (_with(respiratory_rate=8), 3, Risk.LOW_MEDIUM),  # single parameter 3
        (_with(consciousness=Consciousness.CONFUSION), 3, Risk.LOW_MEDIUM),
        (_with(respiratory_rate=8, pulse=95), 4, Risk.LOW_MEDIUM),
        (_with(supplemental_oxygen=True, spo2=94, pulse=95), 4, Risk.LOW),  # 2+1+1
        (_with(supplemental_oxygen=True, spo2=94, pulse=95, temperature=38.5), 5, Risk.MEDIUM),
        (_with(respiratory_rate=8, pulse=111), 5, Risk.MEDIUM),  # a 3 inside an aggregate 5 is medium
        (_with(respiratory_rate=22, pulse=111, spo2=95, temperature=38.5), 6, Risk.MEDIUM),
        (_with(respiratory_rate=25, pulse=111, spo2=94), 6, Risk.MEDIUM),
        (_with(respiratory_rate=25, pulse=111, spo2=93), 7, Risk.HIGH),
        (
            _with(
                respiratory_rate=30,
                spo2=85,
                supplemental_oxygen=True,
                systolic_bp=85,
                pulse=140,
                consciousness=Consciousness.UNRESPONSIVE,
                temperature=40.0,
            ),
            19,  # the maximum: 3+3+2+3+3+3+2
            Risk.HIGH,
        ),
    ],
)
def test_totals_and_risk(obs: Observations, total: int, risk: Risk) -> None:
    result = score(obs)
    assert (result.total, result.risk) == (total, risk)
    assert result.total == sum(result.components.values())


def test_maximum_scale2() -> None:
    result = score(_with(spo2=98, supplemental_oxygen=True, spo2_scale=2))
    assert result.components["spo2"] == 3
    assert result.components["air_or_oxygen"] == 2
    assert result.total == 5


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"spo2": 101}, "spo2"),
        ({"spo2": -1}, "spo2"),
        ({"pulse": float("nan")}, "pulse"),
        ({"temperature": float("inf")}, "temperature"),
        ({"temperature": 99.0}, "temperature"),
        ({"respiratory_rate": -3}, "respiratory_rate"),
        ({"systolic_bp": 1000}, "systolic_bp"),
        ({"spo2_scale": 3}, "spo2_scale"),
        ({"pulse": True}, "pulse"),
        ({"consciousness": "alert"}, "consciousness"),
    ],
)
def test_invalid_values_name_the_field(kw: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidObservationError) as info:
        score(Observations(**kw))  # type: ignore[arg-type]
    assert info.value.field == field
    assert isinstance(info.value, ValueError)


@given(
    rr=st.none() | st.floats(0, 120),
    spo2=st.none() | st.floats(0, 100),
    oxygen=st.none() | st.booleans(),
    sbp=st.none() | st.floats(0, 400),
    pulse=st.none() | st.floats(0, 350),
    acvpu=st.none() | st.sampled_from(list(Consciousness)),
    temp=st.none() | st.floats(20, 45),
    scale=st.sampled_from([1, 2]),
)
def test_invariants(rr, spo2, oxygen, sbp, pulse, acvpu, temp, scale) -> None:
    result = score(Observations(rr, spo2, oxygen, sbp, pulse, acvpu, temp, scale))
    assert set(result.components).isdisjoint(result.missing)
    assert set(result.components) | set(result.missing) == set(PARAMETERS)
    assert list(result.missing) == sorted(result.missing)
    assert result.partial == bool(result.missing)
    assert result.total == sum(result.components.values())
    assert all(0 <= v <= 3 for v in result.components.values())


# --- CLI (real subprocess) -----------------------------------------------------------------------------------------


def tbib(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "teleconsult.cli.main", "news2", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_full_set() -> None:
    out = tbib(
        "--respiratory-rate",
        "22",
        "--spo2",
        "93",
        "--supplemental-oxygen",
        "no",
        "--systolic",
        "105",
        "--pulse",
        "115",
        "--consciousness",
        "alert",
        "--temperature",
        "38.5",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("\n") == 1
    assert json.loads(out.stdout) == {
        "total": 8,
        "components": {
            "respiratory_rate": 2,
            "spo2": 2,
            "air_or_oxygen": 0,
            "systolic_bp": 1,
            "pulse": 2,
            "consciousness": 0,
            "temperature": 1,
        },
        "missing": [],
        "partial": False,
        "risk": "high",
    }


def test_cli_omitted_options_are_missing() -> None:
    out = tbib("--spo2", "91", "--pulse", "80")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "total": 3,
        "components": {"spo2": 3, "pulse": 0},
        "missing": ["air_or_oxygen", "consciousness", "respiratory_rate", "systolic_bp", "temperature"],
        "partial": True,
        "risk": "low-medium",
    }


def test_cli_scale2_on_oxygen() -> None:
    out = tbib("--spo2", "97", "--spo2-scale", "2", "--supplemental-oxygen", "yes", "--temperature", "36.05")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["components"] == {"spo2": 3, "air_or_oxygen": 2, "temperature": 0}
    assert result["total"] == 5
    assert result["risk"] == "medium"


def test_cli_implausible_value_is_one_line_exit_1() -> None:
    out = tbib("--spo2", "120")
    assert out.returncode == 1
    assert out.stdout == ""
    assert out.stderr.strip().count("\n") == 0
    assert "spo2" in out.stderr


@pytest.mark.parametrize(
    "args",
    [["--spo2", "abc"], ["--consciousness", "drowsy"], ["--spo2-scale", "3"], ["--supplemental-oxygen", "maybe"]],
)
def test_cli_malformed_option_is_argparse_error(args: list[str]) -> None:
    out = tbib(*args)
    assert out.returncode == 2
    assert out.stdout == ""
