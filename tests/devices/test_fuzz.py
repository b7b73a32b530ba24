"""Hypothesis fuzzing: whatever bytes a device sends, decoders raise DecodeError or return a value that renders to JSON
and normalizes to readings. The slow test runs >= 100 000 inputs in total and counts them."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.errors import DecodeError
from devices.gatt import CHARACTERISTICS, CharacteristicCodec
from devices.ieee11073 import float_from_bytes, sfloat_from_bytes
from devices.readings import to_readings
from devices.render import number_json, to_json
from tests.devices import strategies as S

RECEIVED = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
TOTAL_REQUIRED = 100_000

VALID: dict[int, st.SearchStrategy[Any]] = {
    0x2A08: S.date_times,
    0x2A37: S.heart_rates(),
    0x2A35: S.blood_pressures,
    0x2A36: S.cuff_pressures,
    0x2A1C: S.temperatures(),
    0x2A1D: S.temperature_types,
    0x2A1E: S.temperatures(intermediate=True),
    0x2A5E: S.plx_spot_checks,
    0x2A5F: S.plx_continuous(),
    0x2A60: S.plx_features,
    0x2A9D: S.weights(),
    0x2A9E: S.weight_features,
    0x2A18: S.glucose_measurements(),
    0x2A34: S.glucose_contexts(),
    0x2A51: S.glucose_features,
    0x2AA7: S.cgm_measurements,
    0x2A52: S.racp_messages(),
    0x2A2B: S.current_times,
    0x2A19: S.battery_levels,
}


@st.composite
def fuzz_batch(draw: st.DrawFn, codec: CharacteristicCodec) -> list[bytes]:
    """One valid encoding, every truncation of it, every single-byte corruption of it, a tail of garbage, and random
    byte strings: ~2 x len + 10 inputs per hypothesis example."""
    valid: bytes = draw(VALID[codec.uuid16].map(codec.encode))
    noise = draw(st.binary(min_size=1, max_size=8))
    mask = noise[0] | 0x01
    out = [valid, valid + noise]
    out += [valid[:i] for i in range(len(valid))]
    out += [valid[:i] + bytes([valid[i] ^ mask]) + valid[i + 1 :] for i in range(len(valid))]
    out += draw(st.lists(st.binary(max_size=48), min_size=8, max_size=8))
    return out


def _check(codec: CharacteristicCodec, data: bytes) -> None:
    try:
        value = codec.decode(data)
    except DecodeError:
        return
    to_json(value)
    if codec.is_measurement:
        to_readings(value, received_at=RECEIVED, clock_offset=timedelta(hours=-1))


def _check_number(decode: Callable[[bytes], Any], data: bytes) -> None:
    try:
        number_json(decode(data))
    except DecodeError:
        return


def test_all_registered_characteristics_have_a_valid_strategy() -> None:
    assert set(VALID) == set(CHARACTERISTICS)


def _fuzz_one(check: Callable[[bytes], None], inputs: st.SearchStrategy[list[bytes]], examples: int) -> int:
    """Run one hypothesis search; returns how many byte inputs were actually checked."""
    count = 0

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(batch=inputs)
    def run(batch: list[bytes]) -> None:
        nonlocal count
        for data in batch:
            count += 1
            check(data)

    run()
    return count


def _run_all(per_target: int) -> int:
    """Fuzz every decoder with ``per_target`` examples; returns the number of inputs actually run."""
    total = 0
    targets: list[tuple[str, Callable[[bytes], None], st.SearchStrategy[list[bytes]]]] = [
        (codec.name, functools.partial(_check, codec), fuzz_batch(codec)) for codec in CHARACTERISTICS.values()
    ]
    numbers = st.lists(st.binary(max_size=5), min_size=32, max_size=32)
    targets.append(("sfloat", functools.partial(_check_number, sfloat_from_bytes), numbers))
    targets.append(("float", functools.partial(_check_number, float_from_bytes), numbers))
    for _name, check, inputs in targets:
        total += _fuzz_one(check, inputs, per_target)
    return total


def test_fuzz_quick() -> None:
    assert _run_all(20) >= 20 * len(CHARACTERISTICS) * 10


@pytest.mark.slow
def test_fuzz_only_decode_error_escapes() -> None:
    """>= 100 000 inputs across all decoders: rounds of 200 hypothesis examples per decoder until the count is met."""
    total = rounds = 0
    while total < TOTAL_REQUIRED:
        total += _run_all(200)
        rounds += 1
    print(f"fuzz inputs run: {total} across {len(CHARACTERISTICS) + 2} decoders in {rounds} round(s)")
    assert total >= TOTAL_REQUIRED
