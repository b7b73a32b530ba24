"""Payload v1 encoding (contract: ARCHITECTURE.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from devices.readings import Reading
from gateway_agent.payload import (
    encode_batch,
    encode_event,
    flags_object,
    reading_object,
    readings_topic,
    rfc3339,
    status_topic,
)


def test_topics() -> None:
    assert readings_topic("gw-1") == "tbib/v1/gw/gw-1/readings"
    assert status_topic("gw-1") == "tbib/v1/gw/gw-1/status"


def test_rfc3339_utc_z_milliseconds() -> None:
    assert rfc3339(datetime(2026, 11, 29, 10, 0, 1, 120_999, tzinfo=UTC)) == "2026-11-29T10:00:01.120Z"
    paris = timezone(timedelta(hours=1))
    assert rfc3339(datetime(2026, 11, 29, 11, 0, 0, tzinfo=paris)) == "2026-11-29T10:00:00.000Z"
    with pytest.raises(ValueError, match="naive"):
        rfc3339(datetime(2026, 11, 29, 10, 0))


def test_reading_object_shape() -> None:
    at = datetime(2026, 11, 29, 7, 0, 3, tzinfo=UTC)
    r = Reading("systolic_bp", 138, "mm[Hg]", at, datetime(2026, 11, 29, 8, 0, 0), {"cuff_too_loose": True}, "g-1")
    obj = reading_object(r, address="AA:BB:CC:DD:EE:FF", model="BP", serial="S1", received_at=at + timedelta(hours=2))
    assert obj == {
        "device": {"address": "AA:BB:CC:DD:EE:FF", "model": "BP", "serial": "S1"},
        "metric": "systolic_bp",
        "value": 138.0,
        "unit": "mm[Hg]",
        "measured_at": "2026-11-29T07:00:03.000Z",
        "device_time": "2026-11-29T08:00:00",
        "received_at": "2026-11-29T09:00:03.000Z",
        "group": "g-1",
        "flags": {"cuff_too_loose": True},
    }
    assert isinstance(obj["value"], float)


def test_flags_object_forms() -> None:
    assert flags_object(None) == {}
    assert flags_object({"a": 1, "b": "x"}) == {"a": 1, "b": "x"}
    assert flags_object(["low_perfusion"]) == {"low_perfusion": True}


def test_encode_batch_is_valid_json_with_stored_bodies() -> None:
    bodies = ['{"id":"1","value":1.0}', '{"id":"2","value":2.0}']
    raw = encode_batch("gw-1", datetime(2026, 11, 29, 10, 0, tzinfo=UTC), bodies)
    assert json.loads(raw) == {
        "v": 1,
        "gateway_id": "gw-1",
        "sent_at": "2026-11-29T10:00:00.000Z",
        "readings": [{"id": "1", "value": 1.0}, {"id": "2", "value": 2.0}],
    }
    assert json.loads(encode_batch("gw-1", datetime(2026, 11, 29, tzinfo=UTC), []))["readings"] == []


def test_encode_event() -> None:
    ev = json.loads(encode_event("gw-1", datetime(2026, 11, 29, tzinfo=UTC), "outbox_overflow", dropped=3))
    assert ev == {
        "v": 1,
        "gateway_id": "gw-1",
        "at": "2026-11-29T00:00:00.000Z",
        "event": "outbox_overflow",
        "dropped": 3,
    }
