"""The msgspec fast path of decode_batch agrees with the general path: it answers only for all-valid messages, and
then exactly as the general path does (same readings, COPY rows, newest per key, batch name)."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from teleconsult.bench.loadgen import Job, build_message
from teleconsult.ingest.fastdecode import decode_valid
from teleconsult.ingest.payload import Decoded, decode_batch, decode_general, default_vocabulary
from tests.teleconsult.ingest.helpers import VOCAB, batch, reading

NOW = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
T = NOW - timedelta(minutes=5)


def both(payload: bytes, gw: str = "gw-1") -> tuple[Decoded | None, object]:
    return decode_valid(gw, payload, VOCAB, NOW), decode_general(gw, payload, vocab=VOCAB, now=NOW)


def test_valid_batch_takes_the_fast_path_with_the_same_result() -> None:
    r = reading("AA:01", T, value=72)
    r["flags"] = {"note": "tab\there \\ back"}
    r["group"] = str(uuid.uuid4())
    later = reading("AA:01", T + timedelta(seconds=1), value=73.5)
    later["received_at"] = None
    payload = batch("gw-1", [r, later, reading("AA:02", T, metric="spo2", unit="%", value=97)])
    fast, general = both(payload)
    assert fast is not None
    assert fast == general
    assert decode_batch("tbib/v1/gw/gw-1/readings", payload, vocab=VOCAB, now=NOW) == general


def test_named_batches_and_empty_readings_agree() -> None:
    doc = {"v": 1, "gateway_id": "gw-1", "sent_at": "2026-11-29T09:59:00Z", "readings": []}
    doc["batch"] = {"epoch": "0123456789abcdef", "seq": [1, 10]}
    fast, general = both(json.dumps(doc).encode())
    assert fast is not None
    assert fast == general
    assert fast.batch is not None


def test_the_load_generators_messages_take_the_fast_path() -> None:
    job = Job("h", 1, [], 0x51, 10, 1, None, time.time() - 3600, named=True)
    vocab = default_vocabulary()
    now = datetime.now(UTC)
    for i in range(20):
        payload = build_message(job, i, f"gw-{i}", f"AA:00:{i:02X}", i * 10)
        fast = decode_valid(f"gw-{i}", payload, vocab, now)
        assert fast is not None
        assert fast == decode_general(f"gw-{i}", payload, vocab=vocab, now=now)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r: r.update(metric="mood"),
        lambda r: r.update(value=True),
        lambda r: r.update(value="70"),
        lambda r: r.update(id="not-a-uuid"),
        lambda r: r.update(id=f"{uuid.uuid4()},{uuid.uuid4()}"),  # a comma inside: two UUIDs are not one
        lambda r: r.update(id=str(uuid.uuid4()).replace("-", "")),
        lambda r: r.update(measured_at="2026-11-29T10:00:00"),
        lambda r: r.update(measured_at="2026-12-29T10:00:00Z"),
        lambda r: r.update(received_at="yesterday"),
        lambda r: r.update(device={"address": ""}),
        lambda r: r.update(group="nope"),
        lambda r: r.update(flags={"x": "\u0000"}),
    ],
)
def test_one_bad_reading_sends_the_message_to_the_general_path(mutate) -> None:
    bad = reading("AA:01", T)
    mutate(bad)
    fast, general = both(batch("gw-1", [reading("AA:01", T), bad]))
    assert fast is None
    assert isinstance(general, Decoded)
    assert len(general.rejects) == 1


@pytest.mark.parametrize(
    "payload",
    [
        b"{not json",
        b"[]",
        batch("gw-1", [], v=True),
        batch("gw-1", [], v=1.0),
        batch("gw-2", []),
        b'{"v":1,"gateway_id":"gw-1","sent_at":"2026-11-29T10:00:00","readings":[]}',
    ],
    # Ids, not the payloads: these carry sent_at = now, and pytest-xdist needs the same ids on every worker.
    ids=["not-json", "array", "v-true", "v-float", "other-gateway", "naive-sent-at"],
)
def test_envelope_problems_are_left_to_the_general_path(payload: bytes) -> None:
    assert decode_valid("gw-1", payload, VOCAB, NOW) is None


_values = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "value": _values,
            "metric": st.sampled_from(["heart_rate", "spo2", "mood"]) | _values,
            "unit": st.sampled_from(["/min", "%"]) | _values,
            "measured_at": st.sampled_from(["2026-11-29T09:55:00Z", "2026-11-29T09:55:00.5+01:00", "x"]) | _values,
            "received_at": st.sampled_from(["2026-11-29T09:55:01Z"]) | _values,
            "group": st.just(str(uuid.UUID(int=7))) | _values,
            "flags": st.dictionaries(st.text(max_size=3), _values, max_size=2) | _values,
            "device": st.fixed_dictionaries({"address": st.text(max_size=3)}) | _values,
            "id": st.just(str(uuid.UUID(int=9))) | _values,
        },
    )
)
def test_fuzz_fast_path_never_disagrees(changes: dict[str, object]) -> None:
    r = reading("AA:01", T)
    r.update(changes)
    try:
        payload = batch("gw-1", [r])
    except (TypeError, ValueError):
        return
    fast, general = both(payload)
    if fast is not None:
        assert fast == general
    elif isinstance(general, Decoded):
        assert general.rejects or not general.readings  # a fully valid message would have been taken
