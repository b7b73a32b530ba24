"""`tbib decode`: the real entry point in a subprocess for the exit codes and a few outputs; the bulk of the JSON checks
run the same command in-process (``teleconsult.cli.main.main``) to keep the suite fast."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devices.cli import parse_hex
from teleconsult.cli.main import main

TBIB = Path(sys.executable).with_name("tbib")
RECEIVED = "2026-11-29T10:00:00Z"


def tbib_decode(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TBIB), "decode", *args, "--received-at", RECEIVED],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def decoded(*args: str, subprocess_run: bool = False) -> dict[str, Any]:
    if subprocess_run:
        proc = tbib_decode(*args)
        assert proc.returncode == 0, proc.stderr
        stdout = proc.stdout
    else:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert main(["decode", *args, "--received-at", RECEIVED]) == 0
        stdout = buf.getvalue()
    lines = stdout.strip().splitlines()
    assert len(lines) == 1
    out: dict[str, Any] = json.loads(lines[0])
    return out


def test_real_entry_point() -> None:
    assert decoded("sfloat", "65F0", subprocess_run=True)["value"] == 10.1
    out = decoded("2A37", "16 50 00 04", subprocess_run=True)
    assert (out["heart_rate"], out["sensor_contact"], out["rr_intervals_s"]) == (80, True, [1.0])


@pytest.mark.parametrize(
    ("hex_", "value", "special"),
    [
        ("65F0", 10.1, None),
        ("65 f0", 10.1, None),
        ("65:F0", 10.1, None),
        ("FFF7", 204.7, None),
        ("FF07", None, "NaN"),
        ("0008", None, "NRes"),
        ("FE07", None, "+INF"),
        ("0208", None, "-INF"),
        ("0108", None, "RFU"),
    ],
)
def test_sfloat(hex_: str, value: float | None, special: str | None) -> None:
    out = decoded("sfloat", hex_)
    assert (out["value"], out["special"]) == (value, special)


def test_float() -> None:
    assert decoded("float", "6C0100FF")["value"] == 36.4
    assert decoded("float", "FEFF7F00")["special"] == "+INF"


def test_heart_rate() -> None:
    out = decoded("2A37", "1650000400020003")
    assert out["heart_rate"] == 80
    assert out["sensor_contact"] is True
    assert out["energy_expended_kj"] is None
    assert out["rr_intervals_s"] == [1.0, 0.5, 0.75]
    assert [(r["metric"], r["value"], r["unit"]) for r in out["readings"]][:2] == [
        ("heart_rate", 80.0, "/min"),
        ("rr_interval", 1.0, "s"),
    ]
    assert out["readings"][0]["measured_at"] == RECEIVED
    plain = decoded("2a37", "0048")
    assert (plain["sensor_contact"], plain["rr_intervals_s"]) == (None, None)
    assert decoded("0x2A37", "0448")["sensor_contact"] is False


def test_blood_pressure() -> None:
    out = decoded("2A35", "1E790050005F00E4070B1D0A00004800011800")
    assert out["unit"] == "mm[Hg]"
    assert (out["systolic"], out["diastolic"], out["mean_arterial_pressure"], out["pulse_rate"]) == (121, 80, 95, 72)
    assert out["timestamp"] == {"year": 2020, "month": 11, "day": 29, "hours": 10, "minutes": 0, "seconds": 0}
    assert out["user_id"] == 1
    assert out["measurement_status"] == {
        "body_movement": False,
        "cuff_too_loose": False,
        "irregular_pulse": False,
        "pulse_rate_range": "reserved",
        "improper_position": False,
    }
    groups = {r["group"] for r in out["readings"]}
    assert len(groups) == 1
    metrics = [r["metric"] for r in out["readings"]]
    assert metrics == ["systolic_bp", "diastolic_bp", "mean_arterial_pressure", "pulse_rate"]
    cuff = decoded("2A36", "01A0F0FF07FF07")
    assert (cuff["unit"], cuff["cuff_pressure"], cuff["measurement_status"]) == ("kPa", 16.0, None)


def test_temperature_plx_weight() -> None:
    t = decoded("2A1C", "01DA0300FF")
    assert (t["unit"], t["temperature"], t["timestamp"], t["temperature_type"]) == ("[degF]", 98.6, None, None)
    p = decoded("2A5E", "1F61004800EA070B1D081E00200120000020F0")
    assert (p["spo2"], p["pulse_rate"], p["pulse_amplitude_index"]) == (97, 72, 3.2)
    assert p["measurement_status"] == ["measurement_ongoing", "fully_qualified_data"]
    assert p["device_sensor_status"] == ["low_perfusion_detected"]
    assert p["spo2_fast"] is None
    c = decoded("2A5F", "0360004B0061004C005F004A00")
    assert (c["spo2_fast"], c["pulse_rate_fast"], c["spo2_slow"], c["pulse_rate_slow"]) == (97, 76, 95, 74)
    assert c["measurement_status"] is None
    w = decoded("2A9D", "08B036E500D606")
    assert (w["unit"], w["weight"], w["bmi"], w["height"], w["height_unit"]) == ("kg", 70.0, 22.9, 1.75, "m")


def test_glucose_cgm_racp_date_time() -> None:
    g = decoded("2A18", "1B0100EA070B1D081E0000005FB0114000")
    assert g["sequence_number"] == 1
    assert g["base_time"] == {"year": 2026, "month": 11, "day": 29, "hours": 8, "minutes": 30, "seconds": 0}
    assert (g["time_offset_min"], g["concentration"], g["concentration_unit"]) == (0, 0.00095, "kg/L")
    assert (g["sample_type"], g["sample_location"]) == (1, 1)
    assert g["sensor_status"] == ["result_lower_than_device_can_process"]
    assert g["context_follows"] is True
    assert [(r["metric"], r["value"], r["unit"]) for r in g["readings"]] == [("glucose", 95.0, "mg/dL")]
    cgm = decoded("2AA7", "060078000500" + "080079000A007E77")  # second record with its E2E-CRC
    assert [(r["glucose"], r["time_offset_min"]) for r in cgm["records"]] == [(120, 5), (121, 10)]
    assert [r["crc_ok"] for r in cgm["records"]] == [None, True]
    assert decoded("2AA7", "080079000A007E78")["records"][0]["crc_ok"] is False
    racp = decoded("2A52", "06000106")
    assert (racp["op_code"], racp["request_op_code"], racp["response_code"]) == (
        "response_code",
        "report_stored_records",
        "no_records_found",
    )
    count = decoded("2A52", "05002A00")
    assert (count["op_code"], count["count"]) == ("number_of_stored_records_response", 42)
    dt = decoded("2A08", "EA070B1D081E00")
    assert {k: dt[k] for k in ("year", "month", "day", "hours", "minutes", "seconds")} == {
        "year": 2026,
        "month": 11,
        "day": 29,
        "hours": 8,
        "minutes": 30,
        "seconds": 0,
    }
    assert "readings" not in dt


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (("2A37", "01"), 1, "heart_rate: expected 2 bytes at offset 1, got 0"),
        (("2A37", "0G"), 1, "not hexadecimal"),
        (("2A99", "00"), 2, "unknown characteristic"),
    ],
)
def test_errors_subprocess(args: tuple[str, str], code: int, fragment: str) -> None:
    proc = tbib_decode(*args)
    assert proc.returncode == code
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1
    assert fragment in proc.stderr


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (("2A35", "00"), 1, "systolic: expected 2 bytes at offset 1, got 0"),
        (("2A37", "064"), 1, "odd number"),
        (("sfloat", "65"), 1, "expected 2 bytes"),
        (("2A52", ""), 1, "op_code: expected 1 bytes at offset 0, got 0"),
        (("banana", "00"), 2, "unknown characteristic"),
    ],
)
def test_errors(args: tuple[str, str], code: int, fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", *args]) == code
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1
    assert fragment in captured.err


@pytest.mark.parametrize("text", ["65F0", "65 f0", "65:F0", "0x65F0", "0x65 0xF0", "65-F0"])
def test_parse_hex(text: str) -> None:
    assert parse_hex(text) == b"\x65\xf0"


@pytest.mark.parametrize("text", ["6", "zz", "0x6", "65 F"])
def test_parse_hex_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_hex(text)


def test_hex_in_several_arguments() -> None:
    assert decoded("2A37", "06", "48")["heart_rate"] == 72
    assert decoded("sfloat", "0x65", "0xF0")["value"] == 10.1
