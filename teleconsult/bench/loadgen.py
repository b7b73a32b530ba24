"""Load generator for the ingest benchmark: simulated gateways publishing payload v1 batches over MQTT QoS 1.

Runs in separate processes (:func:`publisher_process`), like real gateways. Reading ids are deterministic so that the
benchmark can check every stored id without shipping millions of ids between processes:
``UUID(int = tag << 64 | gateway_index << 40 | seq)``.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.synchronize import Event
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

#: (metric, unit, base value) cycled through by a simulated gateway.
METRICS: Final = (("heart_rate", "/min", 72.0), ("spo2", "%", 97.0), ("pulse_rate", "/min", 71.0))
_READING: Final = (
    '{{"id":"{id}","device":{{"address":"{address}","model":"SIM-1","serial":"S{gw}"}},"metric":"{metric}",'
    '"value":{value},"unit":"{unit}","measured_at":"{t}","device_time":null,"received_at":"{t}",'
    '"group":null,"flags":null}}'
)


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


def reading_id(tag: int, gw_index: int, seq: int) -> uuid.UUID:
    """The deterministic id of reading ``seq`` of gateway ``gw_index`` in run ``tag``."""
    return uuid.UUID(int=(tag << 64) | (gw_index << 40) | seq)


def build_message(job: Job, gw_index: int, gateway_id: str, address: str, first_seq: int) -> bytes:
    """One payload v1 batch of ``job.per_message`` readings starting at ``first_seq``."""
    parts = []
    for seq in range(first_seq, first_seq + job.per_message):
        metric, unit, base = METRICS[seq % len(METRICS)]
        t = datetime.fromtimestamp(job.start_epoch + seq / 10, UTC).isoformat(timespec="milliseconds")
        parts.append(
            _READING.format(
                id=reading_id(job.tag, gw_index, seq),
                address=address,
                gw=gw_index,
                metric=metric,
                value=base + (seq % 7),
                unit=unit,
                t=t.replace("+00:00", "Z"),
            )
        )
    sent_at = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    return (f'{{"v":1,"gateway_id":"{gateway_id}","sent_at":"{sent_at}","readings":[' + ",".join(parts) + "]}").encode()


def publisher_process(job: Job, go: Event, results: Any) -> None:
    """Publish until ``job.seconds`` have passed; put ``{gateway index: messages sent}`` and timings on ``results``."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"bench-pub-{uuid.uuid4().hex[:10]}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.max_inflight_messages_set(job.max_inflight)
    client.connect(job.host, job.port, keepalive=60)
    client.loop_start()
    sent = {g: 0 for g, _, _ in job.gateways}
    pending: deque[mqtt.MQTTMessageInfo] = deque()
    go.wait()
    began = time.time()
    deadline = time.monotonic() + job.seconds
    n = 0
    while time.monotonic() < deadline:
        for gw_index, gw_id, address in job.gateways:
            payload = build_message(job, gw_index, gw_id, address, sent[gw_index] * job.per_message)
            pending.append(client.publish(f"tbib/v1/gw/{gw_id}/readings", payload, qos=1))
            sent[gw_index] += 1
            n += 1
            while len(pending) > job.max_inflight:
                pending.popleft().wait_for_publish(30)
        if job.rate is not None:
            ahead = began + n / job.rate - time.time()
            if ahead > 0:
                time.sleep(ahead)
    last = time.time()
    while pending:
        pending.popleft().wait_for_publish(60)
    client.disconnect()
    client.loop_stop()
    results.put({"sent": sent, "began": began, "last_publish": last})
