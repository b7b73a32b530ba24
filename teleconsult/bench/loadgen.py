"""Load generator for the ingest benchmark: simulated gateways publishing payload v1 batches over MQTT QoS 1.

Runs in separate processes (:func:`publisher_process`), like real gateways. Reading ids are deterministic so that the
benchmark can check every stored id without shipping millions of ids between processes:
``UUID(int = tag << 64 | gateway_index << 40 | seq)``.
"""

from __future__ import annotations

import socket
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.synchronize import Event
from typing import Any, Final

#: (metric, unit) cycled through by a simulated gateway.
METRICS: Final = (("heart_rate", "/min"), ("spo2", "%"), ("pulse_rate", "/min"))
#: Readings of one metric per period of a simulated patient's slow wave (at the benchmarks' rates a few real seconds).
WAVE_PERIOD: Final = 240


def vital_wave(gw_index: int) -> tuple[tuple[float, ...], ...]:
    """Values of one simulated patient, per metric of :data:`METRICS` (``WAVE_PERIOD`` each, repeated): a resting
    adult on a ward monitor, physiologically plausible and clinically unremarkable, so the background load exercises
    the alert engine's evaluation but raises (almost) nothing.

    - heart rate: a per-patient resting rate of 60-84/min, a slow swing of +-5 and +-1 of jitter (55-90/min);
    - SpO2: a per-patient 96-98 % with +-1 (95-99 %, never above 100): the range is at most 2 points, below the
      ``spo2_falling`` drop of 4, and above the 92 % threshold;
    - pulse rate (the oximeter's): the heart rate +-1.
    Deterministic per gateway (a seeded generator), computed once per gateway.
    """
    import math
    import random

    rng = random.Random(gw_index * 7919 + 17)  # simulated data, not security
    hr_base = 60 + (gw_index * 7) % 25
    spo2_base = 96 + gw_index % 3
    phase = rng.random() * 2 * math.pi
    hr, spo2, pulse = [], [], []
    for k in range(WAVE_PERIOD):
        swing = math.sin(2 * math.pi * k / WAVE_PERIOD + phase)
        h = round(hr_base + 5 * swing) + rng.choice((-1, 0, 0, 1))
        hr.append(float(h))
        pulse.append(float(h + rng.choice((-1, 0, 1))))
        s = spo2_base + round(swing * 0.8) + rng.choice((0, 0, 0, -1, 1))
        spo2.append(float(min(99, max(spo2_base - 1, min(spo2_base + 1, s)))))
    return tuple(hr), tuple(spo2), tuple(pulse)


_WAVES: dict[int, tuple[tuple[float, ...], ...]] = {}


@dataclass(frozen=True, slots=True)
class Job:
    """What one publisher process does."""

    host: str
    port: int
    gateways: list[tuple[int, str, str]]
    """(gateway index, gateway id, device address)"""
    tag: int
    per_message: int
    seconds: float
    rate: float | None
    """messages per second for this process (None: as fast as the broker accepts)."""
    start_epoch: float
    """measured_at of seq 0 (seconds since the epoch); reading seq is measured at start_epoch + seq / 10."""
    max_inflight: int = 1000
    named: bool = False
    """Name each batch (``"batch": {"epoch", "seq"}``) as a gateway with commit receipts does (``docs/mqtt.md``)."""


def reading_id(tag: int, gw_index: int, seq: int) -> uuid.UUID:
    """The deterministic id of reading ``seq`` of gateway ``gw_index`` in run ``tag``."""
    return uuid.UUID(int=(tag << 64) | (gw_index << 40) | seq)


def build_message(job: Job, gw_index: int, gateway_id: str, address: str, first_seq: int) -> bytes:
    """One payload v1 batch of ``job.per_message`` readings starting at ``first_seq`` (cheap: the generator shares
    the machine with what it measures)."""
    hi = f"{job.tag:016x}"
    id_head = f"{hi[:8]}-{hi[8:12]}-{hi[12:]}-"
    device = f'"device":{{"address":"{address}","model":"SIM-1","serial":"S{gw_index}"}}'
    parts = []
    base_ms = int(job.start_epoch * 1000)
    second = -1
    stamp = ""
    waves = _WAVES.get(gw_index)
    if waves is None:
        waves = _WAVES[gw_index] = vital_wave(gw_index)
    n_metrics = len(METRICS)
    for seq in range(first_seq, first_seq + job.per_message):
        m = seq % n_metrics
        metric, unit = METRICS[m]
        value = waves[m][(seq // n_metrics) % WAVE_PERIOD]
        lo = f"{(gw_index << 40) | seq:016x}"
        t_ms = base_ms + seq * 100
        if t_ms // 1000 != second:
            second = t_ms // 1000
            stamp = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        t = f"{stamp}.{t_ms % 1000:03d}Z"
        parts.append(
            f'{{"id":"{id_head}{lo[:4]}-{lo[4:]}",{device},"metric":"{metric}","value":{value},'
            f'"unit":"{unit}","measured_at":"{t}","device_time":null,"received_at":"{t}","group":null,"flags":null}}'
        )
    sent_at = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    named = (
        f'"batch":{{"epoch":"{job.tag:08x}{gw_index:08x}","seq":[{first_seq + 1},{first_seq + job.per_message}]}},'
        if job.named
        else ""
    )
    head = f'{{"v":1,"gateway_id":"{gateway_id}","sent_at":"{sent_at}",{named}"readings":['
    return (head + ",".join(parts) + "]}").encode()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def connect_packet(client_id: str, keepalive: int = 60) -> bytes:
    """MQTT 5.0 CONNECT (clean start, no properties), spec 3.1."""
    body = _utf8("MQTT") + bytes([5, 0x02]) + keepalive.to_bytes(2, "big") + b"\x00" + _utf8(client_id)
    return b"\x10" + _varint(len(body)) + body


def publish_packet(topic: str, packet_id: int, payload: bytes) -> bytes:
    """MQTT 5.0 PUBLISH, QoS 1, no properties, spec 3.3."""
    head = _utf8(topic) + packet_id.to_bytes(2, "big") + b"\x00"
    return b"\x32" + _varint(len(head) + len(payload)) + head + payload


class RawPublisher:
    """A minimal blocking MQTT 5 QoS 1 publisher: the load generator must cost little CPU on the box it measures
    (paho spends ~100 us of Python per publish; this ~5 us). Counts PUBACKs; never more than ``window`` in flight."""

    def __init__(self, host: str, port: int, client_id: str, window: int) -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(connect_packet(client_id))
        self.buf = b""
        kind, body = self._read_packet()
        if kind != 0x20 or len(body) < 2 or body[1] != 0:
            raise ConnectionError(f"CONNACK refused: {body[:2].hex()}")
        self.window = min(window, self._receive_maximum(body))
        self.inflight = 0
        self.next_id = 1

    @staticmethod
    def _receive_maximum(connack: bytes) -> int:
        # CONNACK: flags, reason, properties (varint length, then id/value pairs); 0x21 Receive Maximum (u16)
        i, mult, plen = 2, 1, 0
        while True:
            b = connack[i]
            plen += (b & 0x7F) * mult
            mult *= 128
            i += 1
            if not b & 0x80:
                break
        end = i + plen
        while i < end:
            pid = connack[i]
            if pid == 0x21:
                return int.from_bytes(connack[i + 1 : i + 3], "big")
            if pid in (0x24, 0x25, 0x28, 0x29, 0x2A):  # one-byte properties
                i += 2
            elif pid in (0x13, 0x22):  # two-byte
                i += 3
            elif pid in (0x11, 0x27):  # four-byte
                i += 5
            else:  # a string or a pair: stop parsing, keep the default
                break
        return 65535

    def _fill(self, block: bool) -> bool:
        try:
            data = self.sock.recv(65536, 0 if block else socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        if not data:
            raise ConnectionError("broker closed the connection")
        self.buf += data
        return True

    def _read_packet(self) -> tuple[int, bytes]:
        while True:
            parsed = self._parse()
            if parsed is not None:
                return parsed
            self._fill(True)

    def _parse(self) -> tuple[int, bytes] | None:
        buf = self.buf
        if len(buf) < 2:
            return None
        n, mult, i = 0, 1, 1
        while True:
            if i >= len(buf):
                return None
            b = buf[i]
            n += (b & 0x7F) * mult
            mult *= 128
            i += 1
            if not b & 0x80:
                break
        if len(buf) < i + n:
            return None
        self.buf = buf[i + n :]
        return buf[0] & 0xF0, buf[i : i + n]

    def _drain(self, block: bool) -> None:
        if self._fill(block):
            while (p := self._parse()) is not None:
                if p[0] == 0x40:
                    self.inflight -= 1

    def publish(self, packets: list[tuple[str, bytes]]) -> None:
        """Send these (topic, payload) messages, waiting for PUBACKs whenever the window is full."""
        out: list[bytes] = []
        for topic, payload in packets:
            while self.inflight >= self.window:
                if out:
                    self.sock.sendall(b"".join(out))
                    out = []
                self._drain(True)
            out.append(publish_packet(topic, self.next_id, payload))
            self.next_id = self.next_id % 65535 + 1
            self.inflight += 1
        if out:
            self.sock.sendall(b"".join(out))
        self._drain(False)

    def close(self) -> None:
        """Wait for every PUBACK, then DISCONNECT."""
        while self.inflight > 0:
            self._drain(True)
        self.sock.sendall(b"\xe0\x00")
        self.sock.close()


def publisher_process(job: Job, go: Event, results: Any) -> None:
    """Publish until ``job.seconds`` have passed; put ``{gateway index: messages sent}`` and timings on ``results``."""
    client = RawPublisher(job.host, job.port, f"bench-pub-{uuid.uuid4().hex[:10]}", job.max_inflight)
    sent = {g: 0 for g, _, _ in job.gateways}
    go.wait()
    began = time.time()
    deadline = time.monotonic() + job.seconds
    n = 0
    while time.monotonic() < deadline:
        burst = []
        for gw_index, gw_id, address in job.gateways:
            payload = build_message(job, gw_index, gw_id, address, sent[gw_index] * job.per_message)
            burst.append((f"tbib/v1/gw/{gw_id}/readings", payload))
            sent[gw_index] += 1
        client.publish(burst)
        n += len(burst)
        if job.rate is not None:
            ahead = began + n / job.rate - time.time()
            if ahead > 0:
                time.sleep(ahead)
    last = time.time()
    client.close()
    results.put({"sent": sent, "began": began, "last_publish": last, "cpu_s": time.process_time()})


def cpu_seconds_by_role(pids: dict[str, list[int]]) -> dict[str, float]:
    """Cumulative CPU seconds (user + system) per role; processes that vanished count as 0."""
    import psutil  # dev extra: benchmarks only

    out: dict[str, float] = {}
    for role, group in pids.items():
        total = 0.0
        for pid in group:
            try:
                t = psutil.Process(pid).cpu_times()
            except psutil.Error:
                continue
            total += t.user + t.system
        out[role] = total
    return out
