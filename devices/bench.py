"""Decoder throughput: measurements decoded per second on one core, per characteristic and overall, with a baseline.

Run ``python -m devices.bench --json``: human-readable lines, then the last stdout line is one JSON object. The
baseline is ``struct.Struct("<NB").unpack`` of the same bytes (the cheapest possible "parse" in Python), so ``ratio``
= decoder rate / baseline rate tells how much of the cost is our field logic. Each rate is the best of 3 runs.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import struct
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from devices.datetime_field import DateTime
from devices.gatt import CHARACTERISTICS
from devices.gatt.blood_pressure import BloodPressureMeasurement, BloodPressureStatus, IntermediateCuffPressure
from devices.gatt.cgm import CgmMeasurement, CgmRecord
from devices.gatt.glucose import GlucoseMeasurement, GlucoseSensorStatus
from devices.gatt.heart_rate import HeartRateMeasurement
from devices.gatt.plx import (
    PlxContinuousMeasurement,
    PlxDeviceSensorStatus,
    PlxMeasurementStatus,
    PlxSpotCheckMeasurement,
)
from devices.gatt.temperature import TemperatureMeasurement
from devices.gatt.weight import WeightMeasurement
from devices.ieee11073 import Number
from devices.readings import to_readings

_TS = DateTime(2026, 11, 29, 8, 30, 0)

#: A typical notification per measurement characteristic (the fields real devices send).
SAMPLES: dict[int, object] = {
    0x2A37: HeartRateMeasurement(72, True, None, (840, 852)),
    0x2A35: BloodPressureMeasurement(
        Number(138, 0), Number(85, 0), Number(103, 0), timestamp=_TS, pulse_rate=Number(72, 0), user_id=1,
        measurement_status=BloodPressureStatus(),
    ),
    0x2A36: IntermediateCuffPressure(Number(150, 0)),
    0x2A1C: TemperatureMeasurement(Number(369, -1), timestamp=_TS, temperature_type=6),
    0x2A1E: TemperatureMeasurement(Number(368, -1), intermediate=True),
    0x2A5E: PlxSpotCheckMeasurement(
        Number(97, 0), Number(72, 0), _TS, PlxMeasurementStatus.VALIDATED_DATA, PlxDeviceSensorStatus(0), Number(21, -1)
    ),
    0x2A5F: PlxContinuousMeasurement(Number(97, 0), Number(72, 0), measurement_status=PlxMeasurementStatus(0)),
    0x2A9D: WeightMeasurement(70.0, False, _TS, 1, 22.9, 1.75),
    0x2A18: GlucoseMeasurement(
        12, _TS, 0, Number(95, -5), False, 1, 1, GlucoseSensorStatus(0), False
    ),
    0x2AA7: CgmMeasurement((CgmRecord(Number(120, 0), 5, trend=Number(-5, -1), e2e_crc=True, crc_ok=True),)),
}  # fmt: skip


def _rate(fn: Callable[[], object], seconds: float, repeats: int = 3) -> float:
    """Best calls-per-second of ``fn`` over ``repeats`` runs of ``seconds / repeats`` (batches of 200 calls)."""
    best = 0.0
    for _ in range(repeats):
        calls = 0
        start = time.perf_counter()
        deadline = start + seconds / repeats
        while True:
            for _ in range(200):
                fn()
            calls += 200
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, calls / (now - start))
    return best


def measure(seconds: float = 0.3) -> dict[str, Any]:
    """Run the benchmark; returns the JSON object."""
    received = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
    per: dict[str, Any] = {}
    wires: list[tuple[Callable[[bytes], object], bytes]] = []
    for uuid16, sample in SAMPLES.items():
        codec = CHARACTERISTICS[uuid16]
        wire = codec.encode(sample)
        assert codec.decode(wire) == sample
        wires.append((codec.decode, wire))
        unpack = struct.Struct(f"<{len(wire)}B").unpack
        decode_rate = _rate(functools.partial(codec.decode, wire), seconds)
        baseline_rate = _rate(functools.partial(unpack, wire), seconds)
        readings_rate = _rate(functools.partial(to_readings, sample, received_at=received), seconds)
        per[f"{uuid16:04X}"] = {
            "name": codec.name,
            "bytes": len(wire),
            "decode_per_s": round(decode_rate),
            "baseline_struct_unpack_per_s": round(baseline_rate),
            "ratio_vs_baseline": round(decode_rate / baseline_rate, 4),
            "decode_to_readings_per_s": round(1.0 / (1.0 / decode_rate + 1.0 / readings_rate)),
        }
    mixed_baseline = [struct.Struct(f"<{len(w)}B").unpack for _, w in wires]

    def mixed() -> None:
        for decode, wire in wires:
            decode(wire)

    def mixed_base() -> None:
        for (_, wire), unpack in zip(wires, mixed_baseline, strict=True):
            unpack(wire)

    n = len(wires)
    overall = _rate(mixed, seconds * 2) * n
    overall_base = _rate(mixed_base, seconds * 2) * n
    return {
        "benchmark": "devices.decode",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "single_core": True,
        "seconds_per_measure": seconds,
        "per_characteristic": per,
        "overall_decode_per_s": round(overall),
        "overall_baseline_struct_unpack_per_s": round(overall_base),
        "overall_ratio_vs_baseline": round(overall / overall_base, 4),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m devices.bench [--json] [--seconds S]``."""
    parser = argparse.ArgumentParser(prog="python -m devices.bench", description=__doc__)
    parser.add_argument("--json", action="store_true", help="end with one JSON object on the last line")
    parser.add_argument("--seconds", type=float, default=0.3, help="time per measurement (default 0.3)")
    args = parser.parse_args(argv)
    result = measure(args.seconds)
    out = sys.stdout
    for key, row in result["per_characteristic"].items():
        out.write(
            f"{key} {row['name']:<28} {row['decode_per_s']:>10,} decodes/s  "
            f"baseline {row['baseline_struct_unpack_per_s']:>10,}/s  ratio {row['ratio_vs_baseline']:.3f}\n"
        )
    out.write(
        f"overall (mixed stream): {result['overall_decode_per_s']:,} measurements/s, baseline "
        f"{result['overall_baseline_struct_unpack_per_s']:,}/s, ratio {result['overall_ratio_vs_baseline']:.3f}\n"
    )
    if args.json:
        out.write(json.dumps(result, separators=(",", ":")) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
