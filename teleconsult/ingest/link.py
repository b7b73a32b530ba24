"""The ingest worker's MQTT link: paho for the session, a lean read path for PUBLISH, batched PUBACKs.

paho (pinned in ``constraints.txt``) keeps everything it is good at: connect and reconnect, TLS and user/password,
MQTT 5 properties of CONNECT, SUBSCRIBE/UNSUBSCRIBE, keepalive, QoS 1 publishing of commit receipts with their
retransmission. What it costs on the ingest hot path was measured (``docs/benchmarks/ingest.md``): per incoming
PUBLISH, three or more ``recv`` calls (command byte, length bytes, body), an MQTT 5 ``Properties`` object, an
``MQTTMessage``, a callback; per PUBACK, one queue entry, one wake-up byte on paho's socket pair and one ``send``.

:class:`IngestClient` changes only that:
- :meth:`IngestClient.loop_read` (paho's documented hook for external loops, called by its own network thread)
  reads what the socket holds in large chunks, parses every complete packet in the buffer, and hands each run of
  consecutive QoS 0/1 PUBLISH packets to :attr:`IngestClient.on_publishes` in one call as :class:`Delivery` tuples
  (properties skipped: the worker uses none). Any other packet (CONNACK, SUBACK, UNSUBACK, PUBACK of a receipt,
  PINGRESP, DISCONNECT, a QoS 2 PUBLISH) goes through paho's own handler, in stream order: publishes before it are
  delivered first (the worker's drain on stop relies on UNSUBACK coming after them).
- :meth:`IngestClient.ack_many` queues the PUBACKs of a committed batch as one packet write.
"""

from __future__ import annotations

import ssl
import struct
import time
from collections.abc import Callable, Iterable
from typing import Final, NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.exception import MalformedPacket

PUBLISH: Final = 0x30
PUBACK: Final = 0x40
READ_CHUNK: Final = 1 << 17
"""Bytes asked of the socket per ``recv`` (a TLS socket returns at most one record)."""
MAX_READS: Final = 32
"""``recv`` calls per :meth:`IngestClient.loop_read` at most (then paho's select comes round again)."""
_PUBACK_HEAD: Final = bytes((PUBACK, 2))
_TOPICS: dict[bytes, str] = {}
"""Decoded topics (one per gateway: the same few thousand come back all the time)."""
_TOPICS_MAX: Final = 100_000


#: One PUBLISH received: ``(packet id, QoS, topic, payload)``, a plain tuple (one is made per message; a NamedTuple
#: instance costs several times more to make).
Delivery = tuple[int, int, str, bytes]


class Other(NamedTuple):
    """Any other packet, for paho's own handler: its fixed-header byte and its body."""

    header: int
    body: bytes


class Malformed(ValueError):
    """A packet that breaks MQTT framing: the connection is closed (paho reconnects)."""


def _varint(buf: bytes | bytearray | memoryview, pos: int, end: int) -> tuple[int, int] | None:
    """MQTT variable byte integer at ``pos``: (value, position after it), ``None`` if incomplete before ``end``."""
    value = 0
    mult = 1
    for i in range(4):
        if pos + i >= end:
            return None
        byte = buf[pos + i]
        value += (byte & 0x7F) * mult
        if not byte & 0x80:
            return value, pos + i + 1
        mult *= 128
    raise Malformed("variable byte integer longer than 4 bytes")


def parse_publish(header: int, body: bytes | bytearray | memoryview, v5: bool) -> Delivery:
    """A PUBLISH packet's fields from its fixed-header byte and its body (everything after the remaining length)."""
    n = len(body)
    if n < 2:
        raise Malformed("PUBLISH shorter than its topic length")
    tlen = (body[0] << 8) | body[1]
    p = 2 + tlen
    qos = (header >> 1) & 3
    if qos == 3:
        raise Malformed("PUBLISH with QoS 3")
    mid = 0
    if qos:
        if p + 2 > n:
            raise Malformed("PUBLISH shorter than its packet id")
        mid = (body[p] << 8) | body[p + 1]
        p += 2
    if v5:
        props = _varint(body, p, n)
        if props is None:
            raise Malformed("PUBLISH properties length beyond the packet")
        p = props[1] + props[0]
    if p > n:
        raise Malformed("PUBLISH header beyond the packet")
    raw = bytes(body[2 : 2 + tlen])
    topic = _TOPICS.get(raw)
    if topic is None:
        try:
            topic = raw.decode()
        except UnicodeDecodeError as exc:
            raise Malformed("PUBLISH topic is not UTF-8") from exc
        if len(_TOPICS) < _TOPICS_MAX:
            _TOPICS[raw] = topic
    return (mid, qos, topic, bytes(body[p:]))


def split_packets(buf: bytearray, v5: bool) -> tuple[list[Delivery | Other], int]:
    """The complete packets at the start of ``buf`` and how many bytes they take. A QoS 0/1 PUBLISH comes out as a
    :class:`Delivery`; any other packet as ``(fixed-header byte, body)`` for paho's handler."""
    out: list[Delivery | Other] = []
    pos = 0
    n = len(buf)
    view = memoryview(buf)
    try:
        while pos + 2 <= n:
            header = buf[pos]
            length = _varint(buf, pos + 1, n)
            if length is None:
                break
            start = length[1]
            end = start + length[0]
            if end > n:
                break
            if header & 0xF0 == PUBLISH and (header >> 1) & 3 != 2:  # QoS 0 or 1 (3 is refused there)
                out.append(parse_publish(header, view[start:end], v5))
            else:
                out.append(Other(header, bytes(view[start:end])))
            pos = end
    finally:
        view.release()
    return out, pos


def pubacks(mids: Iterable[int]) -> bytes:
    """The PUBACK packets (reason: success, no properties) of ``mids``, back to back."""
    pack = struct.Struct(">H").pack
    return b"".join(_PUBACK_HEAD + pack(m) for m in mids)


class IngestClient(mqtt.Client):
    """A paho client with the lean read path and batched acknowledgements described in the module docstring."""

    on_publishes: Callable[[list[Delivery]], None] | None = None
    """Called on paho's network thread with each run of consecutive PUBLISH packets (stream order)."""
    read_pause_s: float = 0.0
    """After a read that delivered messages and left the socket empty, the network thread naps this long so that
    the next read takes what arrived meanwhile in one chunk: fewer wake-ups, reads and hand-offs per message, for at
    most this much latency (acks and receipts queued meanwhile go out right after)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._rbuf = bytearray()
        self._rbuf_sock: object = None

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        sock = self._sock
        if sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        if sock is not self._rbuf_sock:  # a new connection: a partial packet of the old one is void
            self._rbuf = bytearray()
            self._rbuf_sock = sock
        buf = self._rbuf
        got = 0
        full = False
        tls = isinstance(sock, ssl.SSLSocket)
        lost = False  # the connection ended: what came before the end is handled first (a CONNACK refusal, say)
        for _ in range(MAX_READS):
            try:
                data = self._sock_recv(READ_CHUNK)
            except BlockingIOError:
                break
            except OSError:
                lost = True
                break
            if not data:
                lost = True
                break
            buf += data
            got += len(data)
            if len(data) < READ_CHUNK and not tls:
                break  # the kernel had no more: spare the recv that would say so (TLS: one record per recv)
        else:
            full = True
        if not got:
            return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST) if lost else MQTTErrorCode.MQTT_ERR_SUCCESS
        with self._msgtime_mutex:
            self._last_bytes_received = mqtt.time_func()
        try:
            packets, used = split_packets(buf, self._protocol == mqtt.MQTTv5)
        except Malformed as exc:
            self._easy_log(mqtt.MQTT_LOG_ERR, "malformed packet from the broker: %s", exc)
            return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_PROTOCOL)
        del buf[:used]
        run: list[Delivery] = []
        for p in packets:
            if not isinstance(p, Other):
                run.append(p)
                continue
            if run:
                self._deliver(run)
                run = []
            rc = self._handle_other(*p)
            if rc > 0:
                return self._loop_rc_handle(rc)
            if self._sock is not sock:  # the handler closed the connection (a DISCONNECT from the broker)
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        if run:
            self._deliver(run)
        if lost:
            return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
        if run and self.read_pause_s > 0 and not full:
            time.sleep(self.read_pause_s)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _deliver(self, run: list[Delivery]) -> None:
        callback = self.on_publishes
        if callback is None:
            return
        with self._in_callback_mutex:
            try:
                callback(run)
            except Exception as err:
                self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_publishes: %s", err)
                if not self.suppress_exceptions:
                    raise

    def _handle_other(self, header: int, body: bytes) -> MQTTErrorCode:
        """One non-fast-path packet through paho's own dispatch (its ``_in_packet`` state, as its reader leaves it)."""
        self._in_packet = {
            "command": header,
            "have_remaining": 1,
            "remaining_count": [],
            "remaining_mult": 1,
            "remaining_length": len(body),
            "packet": bytearray(body),
            "to_process": 0,
            "pos": 0,
        }
        try:
            rc = self._packet_handle()
        except MalformedPacket as exc:
            self._easy_log(mqtt.MQTT_LOG_DEBUG, "Received malformed packet: %s", exc)
            rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
        self._in_packet = {
            "command": 0,
            "have_remaining": 0,
            "remaining_count": [],
            "remaining_mult": 1,
            "remaining_length": 0,
            "packet": bytearray(b""),
            "to_process": 0,
            "pos": 0,
        }
        return rc

    def ack_many(self, mids: Iterable[int]) -> None:
        """PUBACK every QoS 1 message of ``mids`` (of the current connection) in one write."""
        packet = pubacks(mids)
        if packet:
            self._packet_queue(PUBACK, packet, 0, 0)
