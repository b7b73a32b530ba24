"""Fuzzing: whatever a client sends, the core answers with frames (never raises) and keeps the connection."""

from __future__ import annotations

import contextlib
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from teleconsult.errors import SignalingProtocolError
from teleconsult.signaling.messages import parse_frame
from teleconsult.signaling.rooms import Close, Send
from teleconsult.signaling.tokens import Role

from .helpers import Driver

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
frames = st.fixed_dictionaries(
    {"v": st.sampled_from([1, 1, 1, 2, "1"]), "type": st.sampled_from(
        ["join", "admit", "deny", "offer", "answer", "candidate", "renegotiate-request", "bye", "ping", "x"]
    )},
    optional={
        "seq": st.integers(-2, 2**60),
        "seat": st.sampled_from(["doctor", "patient", "interpreter", "x"]),
        "to": st.sampled_from(["doctor", "patient", "interpreter", None]),
        "sdp": st.text(max_size=50),
        "candidate": json_values,
        "token": st.text(max_size=50),
        "end": json_values,
        "reason": json_values,
    },
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_parser_only_raises_protocol_errors(raw: bytes | str) -> None:
    with contextlib.suppress(SignalingProtocolError):
        parse_frame(raw)


@settings(max_examples=300, deadline=None)
@given(st.lists(frames, max_size=12))
def test_core_never_raises_and_answers_every_frame(batch: list[dict[str, object]]) -> None:
    d = Driver()
    d.join(1, Role.DOCTOR)
    d.join(2, Role.AGENT, sub="gw-1")
    d.send(1, "admit", seat="patient")
    for frame in batch:
        out = d.raw(2, json.dumps(frame))
        if 2 in d.closed:
            break
        assert all(isinstance(a, Send | Close) or a.kind for a in out)
    assert all(f["v"] == 1 and isinstance(f["seq"], int) for f in d.inbox.get(2, []))
