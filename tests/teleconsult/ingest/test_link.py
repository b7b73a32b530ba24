"""The ingest worker's lean MQTT read path and batched PUBACKs (teleconsult.ingest.link), without a broker: packets
split at every byte boundary, stream order kept around packets paho handles itself, malformed framing refused."""

from __future__ import annotations

import socket
import struct

import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from teleconsult.ingest.link import IngestClient, Malformed, Other, pubacks, split_packets


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish(topic: str, payload: bytes, mid: int = 0, qos: int = 1, props: bytes = b"") -> bytes:
    t = topic.encode()
    body = struct.pack(">H", len(t)) + t + (struct.pack(">H", mid) if qos else b"") + varint(len(props)) + props
    body += payload
    return bytes([0x30 | qos << 1]) + varint(len(body)) + body


PINGRESP = bytes([0xD0, 0])


def test_publishes_come_out_whole_at_any_split() -> None:
    big = b"x" * 300  # a two-byte remaining length
    stream = publish("tbib/v1/gw/a/readings", b"{}", 1) + publish("tbib/v1/gw/b/readings", big, 2, props=b"\x01\x01")
    stream += publish("t", b"q0", qos=0) + PINGRESP
    want = [
        (1, 1, "tbib/v1/gw/a/readings", b"{}"),
        (2, 1, "tbib/v1/gw/b/readings", big),
        (0, 0, "t", b"q0"),
        Other(0xD0, b""),
    ]
    for cut in range(len(stream) + 1):
        buf = bytearray(stream[:cut])
        first, used = split_packets(buf, v5=True)
        del buf[:used]
        buf += stream[cut:]
        rest, used2 = split_packets(buf, v5=True)
        assert first + rest == want
        assert used + used2 == len(stream)


def test_mqtt_311_publish_has_no_properties() -> None:
    t = b"topic"
    body = struct.pack(">H", len(t)) + t + struct.pack(">H", 7) + b"payload"
    packets, used = split_packets(bytearray(bytes([0x32]) + varint(len(body)) + body), v5=False)
    assert packets == [(7, 1, "topic", b"payload")]
    assert used == 2 + len(body)


@pytest.mark.parametrize(
    "stream",
    [
        bytes([0x32, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]),  # remaining length over 4 bytes
        bytes([0x36, 2, 0, 0]),  # QoS 3
        bytes([0x32, 3, 0, 9, 0x41]),  # topic longer than the packet
        bytes([0x32, 4, 0, 1, 0xFF, 0x00]) + b"",  # topic not UTF-8 (and no room for the packet id)
    ],
)
def test_malformed_framing_is_refused(stream: bytes) -> None:
    with pytest.raises(Malformed):
        split_packets(bytearray(stream), v5=True)


def test_pubacks_are_back_to_back_puback_packets() -> None:
    assert pubacks([1, 258]) == bytes([0x40, 2, 0, 1, 0x40, 2, 1, 2])
    assert pubacks([]) == b""


def test_loop_read_delivers_runs_in_stream_order_around_other_packets() -> None:
    client = IngestClient(CallbackAPIVersion.VERSION2, client_id="t", protocol=MQTTProtocolVersion.MQTTv5)
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    seen: list[object] = []
    client._sock = ours  # type: ignore[assignment]  # what paho's connect leaves
    client._ping_t = 123.0  # a PINGREQ is out: paho's own handler clears it on PINGRESP
    client.on_publishes = lambda run: seen.append(([d[0] for d in run], client._ping_t))
    try:
        stream = publish("a", b"1", 1) + publish("a", b"2", 2) + PINGRESP + publish("a", b"3", 3)
        broker.sendall(stream[:-2])
        assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
        assert seen == [([1, 2], 123.0)]  # delivered before paho handled the PINGRESP
        assert client._ping_t == 0
        broker.sendall(stream[-2:])
        assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
        assert seen[1] == ([3], 0)
        client.ack_many([1, 2, 3])  # without paho's thread, the write happens right away: one send for the three
        assert broker.recv(100) == pubacks([1, 2, 3])
    finally:
        ours.close()
        broker.close()
