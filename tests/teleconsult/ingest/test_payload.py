"""Payload v1 validation core: verdicts for good and bad batches, COPY rows, and the pydantic model agreeing."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from teleconsult.ingest.payload import (
    CONSENT_WITHDRAWN,
    R_ID,
    BatchV1,
    Decoded,
    Rejected,
    copy_rows,
    decode_batch,
    explain,
    gateway_of_topic,
)
from tests.teleconsult.ingest.helpers import VOCAB, batch, reading

NOW = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
T = NOW - timedelta(minutes=5)


@dataclass(frozen=True)
class B:
    device_id: uuid.UUID
    patient_id: uuid.UUID
    monitoring_consent: bool = True


def decode(payload: bytes, gw: str = "gw-1") -> Decoded | Rejected:
    return decode_batch(f"tbib/v1/gw/{gw}/readings", payload, vocab=VOCAB, now=NOW, max_bytes=1 << 20)


def test_topic_parsing() -> None:
    assert gateway_of_topic("tbib/v1/gw/gw-1/readings") == "gw-1"
    assert gateway_of_topic("tbib/v1/gw/a/b/readings") is None
    assert gateway_of_topic("tbib/v1/gw//readings") is None
    assert gateway_of_topic("other") is None


def test_valid_batch_becomes_copy_rows() -> None:
    r = reading("AA:01", T, value=72)
    r["flags"] = {"note": "tab\there \\ back"}
    r["group"] = str(uuid.uuid4())
    d = decode(batch("gw-1", [r]))
    assert isinstance(d, Decoded)
    assert d.rejects == []
    binding = B(uuid.uuid4(), uuid.uuid4())
    lines, rejects = copy_rows(d, {("gw-1", "AA:01"): binding})
    assert rejects == []
    fields = lines[0].rstrip("\n").split("\t")
    assert fields[:5] == [str(binding.patient_id), str(binding.device_id), "heart_rate", "72.0", "/min"]
    assert fields[7] == r["id"]
    assert fields[8] == r["group"]
    # JSON escapes the tab; COPY text format needs the backslashes doubled
    assert fields[9] == json.dumps(r["flags"], separators=(",", ":")).replace("\\", "\\\\")


def test_withdrawn_consent_refuses_the_patients_readings_only() -> None:
    d = decode(batch("gw-1", [reading("AA:01", T), reading("AA:02", T)]))
    assert isinstance(d, Decoded)
    latest: dict[tuple[str, str], object] = {}
    withdrawn = B(uuid.uuid4(), uuid.uuid4(), monitoring_consent=False)
    kept = B(uuid.uuid4(), uuid.uuid4())
    lines, rejects = copy_rows(d, {("gw-1", "AA:01"): withdrawn, ("gw-1", "AA:02"): kept}, latest)  # type: ignore[arg-type]
    assert [line.split("\t")[0] for line in lines] == [str(kept.patient_id)]
    assert rejects == [f"reading {d.readings[0][R_ID]}: {CONSENT_WITHDRAWN}"]
    assert [k[0] for k in latest] == [str(kept.patient_id)]


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda r: r.update(metric="mood"), "unknown metric 'mood'"),
        (lambda r: r.update(unit="bpm"), "wrong unit 'bpm' for heart_rate"),
        (lambda r: r.update(value="70"), "value must be a finite number"),
        (lambda r: r.update(value=True), "value must be a finite number"),
        (lambda r: r.update(id="not-a-uuid"), "id must be a UUID string"),
        (lambda r: r.update(measured_at="2026-11-29T10:00:00"), "measured_at must be an ISO 8601 time"),
        (lambda r: r.update(measured_at="2026-12-29T10:00:00Z"), "more than 24 h in the future"),
        (lambda r: r.update(device={"address": ""}), "device.address"),
        (lambda r: r.update(device="AA:01"), "device.address"),
        (lambda r: r.update(flags=[1]), "flags must be an object"),
        (lambda r: r.update(flags={"x": "\u0000"}), "NUL"),
    ],
)
def test_bad_reading_is_refused_with_reason(mutate, reason: str) -> None:
    good = reading("AA:01", T)
    bad = reading("AA:01", T)
    mutate(bad)
    d = decode(batch("gw-1", [good, bad]))
    assert isinstance(d, Decoded)
    assert [r[R_ID] for r in d.readings] == [good["id"]]
    assert len(d.rejects) == 1
    assert d.rejects[0].startswith("readings[1]: ")
    assert reason in d.rejects[0]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "invalid JSON"),
        (b"[]", "must be a JSON object"),
        (batch("gw-1", [], v=2), "unsupported payload version"),
        (batch("gw-1", [], v=True), "unsupported payload version"),
        (batch("gw-2", []), "does not match the topic"),
        (b'{"v":1,"gateway_id":"gw-1","sent_at":"2026-11-29T10:00:00Z","readings":{}}', "readings must be a list"),
        (b"x" * (2 << 20), "payload too large"),
    ],
    # Ids, not the payloads: these carry sent_at = now, and pytest-xdist needs the same ids on every worker.
    ids=["not-json", "array", "v2", "v-true", "other-gateway", "readings-object", "too-large"],
)
def test_bad_message_is_rejected_whole(payload: bytes, reason: str) -> None:
    d = decode(payload)
    assert isinstance(d, Rejected)
    assert reason in d.reason
    assert d.gateway_id == "gw-1"


def test_device_of_another_gateway_is_refused() -> None:
    d = decode(batch("gw-1", [reading("BB:01", T)]))
    assert isinstance(d, Decoded)
    lines, rejects = copy_rows(d, {("gw-2", "BB:01"): B(uuid.uuid4(), uuid.uuid4())})
    assert lines == []
    assert "not enrolled to gateway 'gw-1'" in rejects[0]


def test_pydantic_model_accepts_the_same_batch() -> None:
    payload = batch("gw-1", [reading("AA:01", T)])
    assert explain(payload) == "valid"
    assert BatchV1.model_validate_json(payload).readings[0].metric == "heart_rate"
    assert "v" in explain(batch("gw-1", [], v=3))


@given(st.binary(max_size=300))
def test_fuzz_only_verdicts_escape(data: bytes) -> None:
    assert isinstance(decode(data), Decoded | Rejected)


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.integers()
        | st.text(max_size=5),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
        max_leaves=20,
    )
)
def test_fuzz_reading_shapes(junk: object) -> None:
    doc = {"v": 1, "gateway_id": "gw-1", "sent_at": "2026-11-29T10:00:00Z", "readings": [junk]}
    d = decode(json.dumps(doc).encode())
    assert isinstance(d, Decoded)
    assert len(d.readings) + len(d.rejects) == 1


def test_huge_integer_value_is_refused_not_crashing() -> None:
    r = reading("AA:01", T)
    r["value"] = 10**400
    d = decode(json.dumps({"v": 1, "gateway_id": "gw-1", "sent_at": "2026-11-29T10:00:00Z", "readings": [r]}).encode())
    assert isinstance(d, Decoded | Rejected)


def test_the_gateway_agents_own_payload_is_accepted() -> None:
    """Contract check against gateway_agent.payload (the real publisher) and devices.codes (the real vocabulary)."""
    import orjson

    from devices.readings import Reading
    from gateway_agent.payload import encode_batch, reading_object
    from teleconsult.ingest.payload import default_vocabulary

    group = str(uuid.uuid4())
    bodies = []
    for metric, value, unit in (("systolic_bp", 138.0, "mm[Hg]"), ("diastolic_bp", 85.0, "mm[Hg]")):
        r = Reading(metric, value, unit, T, datetime(2026, 11, 29, 10, 54, 58), {"cuff_too_loose": True}, group)
        obj = {"id": str(uuid.uuid4()), **reading_object(r, address="AA:01", model="BP", serial="1", received_at=T)}
        bodies.append(orjson.dumps(obj).decode())
    payload = encode_batch("gw-1", NOW, bodies)
    d = decode_batch("tbib/v1/gw/gw-1/readings", payload, vocab=default_vocabulary(), now=NOW)
    assert isinstance(d, Decoded)
    assert d.rejects == []
    assert len(d.readings) == 2
