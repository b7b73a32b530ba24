"""Publisher processes of ``tbib bench broker``: paho-mqtt QoS 1 like the gateway's publish path, with failover.

Each process is one gateway-style MQTT connection carrying the batches of a few simulated gateways (payload v1,
deterministic reading ids from :mod:`teleconsult.bench.loadgen`). It keeps every batch it published until the broker's
PUBACK (the gateway's outbox), and when the link drops it connects to the next broker URL of its list and re-publishes
every batch not yet acknowledged, in order. Its log (batch -> PUBACK time) is the ground truth of the run: a batch
acknowledged by a broker and never delivered to a consumer is lost.

MQTT 3.1.1: RabbitMQ 3.10's ``rabbitmq_mqtt`` and NATS 2.9 speak 3.1.1 only (MQTT 5 arrived in RabbitMQ 3.13, NATS
has none); Mosquitto is driven with the same protocol so that the baseline is like for like.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from teleconsult.bench.loadgen import Job, build_message


@dataclass(frozen=True, slots=True)
class PubJob:
    """What one publisher process does."""

    index: int
    urls: list[str]
    """broker MQTT URLs; the process starts on ``urls[index % len(urls)]`` and fails over to the next."""
    gateways: list[int]
    tag: int
    per_message: int
    seconds: float
    rate: float | None
    """batches per second for this process (None: as fast as PUBACKs allow, ``window`` in flight)."""
    window: int = 50


@dataclass(slots=True)
class _Link:
    client: mqtt.Client
    mids: dict[int, int]
    """paho mid -> batch number"""
    early: dict[int, bool]
    """PUBACKs that arrived before ``publish()`` returned their mid (paho's network thread is fast): mid -> success"""
    up: threading.Event
    lost: threading.Event


class _Publisher:
    def __init__(self, job: PubJob) -> None:
        self.job = job
        self.lock = threading.Condition()
        self.pending: OrderedDict[int, tuple[str, bytes]] = OrderedDict()
        self.acks: list[tuple[int, float]] = []
        """(batch number, PUBACK time)"""
        self.url_i = job.index % len(job.urls)
        self.reconnects: list[tuple[float, float, str]] = []
        """(link lost at, connected again at, url)"""
        self.resent = 0
        self.link: _Link | None = None

    def _connect(self) -> _Link:
        while True:
            url = self.job.urls[self.url_i % len(self.job.urls)]
            self.url_i += 1
            parts = urlsplit(url)
            link = _Link(
                mqtt.Client(
                    CallbackAPIVersion.VERSION2,
                    client_id=f"bench-{self.job.tag:x}-{self.job.index}-{uuid.uuid4().hex[:6]}",
                    protocol=mqtt.MQTTv311,
                    clean_session=True,
                ),
                {},
                {},
                threading.Event(),
                threading.Event(),
            )
            link.client.max_inflight_messages_set(self.job.window + 5)
            link.client.max_queued_messages_set(0)
            link.client.on_connect = lambda _c, _u, _f, rc, _p, lk=link: (lk.up if not rc.is_failure else lk.lost).set()
            link.client.on_disconnect = lambda _c, _u, _f, _rc, _p, lk=link: lk.lost.set()
            link.client.on_publish = lambda _c, _u, mid, rc, _p, lk=link: self._on_publish(lk, mid, rc)
            try:
                link.client.connect(parts.hostname or "127.0.0.1", parts.port or 1883, keepalive=5)
            except OSError:
                time.sleep(0.2)
                continue
            link.client.loop_start()
            deadline = time.monotonic() + 5.0
            while not (link.up.is_set() or link.lost.is_set()) and time.monotonic() < deadline:
                time.sleep(0.005)
            if link.up.is_set() and not link.lost.is_set():
                return link
            link.client.loop_stop()
            link.client.disconnect()

    def _on_publish(self, link: _Link, mid: int, rc: Any) -> None:
        now = time.time()
        with self.lock:
            batch = link.mids.pop(mid, None)
            if batch is None:
                link.early[mid] = not rc.is_failure
            else:
                self._acked(batch, not rc.is_failure, now)

    def _acked(self, batch: int, success: bool, now: float) -> None:
        if success and batch in self.pending:
            del self.pending[batch]
            self.acks.append((batch, now))
        self.lock.notify_all()

    def _send(self, link: _Link, batch: int, topic: str, payload: bytes) -> None:
        info = link.client.publish(topic, payload, qos=1)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            link.lost.set()
            return
        with self.lock:
            early = link.early.pop(info.mid, None)
            if early is None:
                link.mids[info.mid] = batch
            else:
                self._acked(batch, early, time.time())

    def _failover(self) -> _Link:
        lost_at = time.time()
        if self.link is not None:
            self.link.client.loop_stop()
            self.link.client.disconnect()
        link = self._connect()
        self.reconnects.append((lost_at, time.time(), self.job.urls[(self.url_i - 1) % len(self.job.urls)]))
        with self.lock:
            again = list(self.pending.items())
        for batch, (topic, payload) in again:  # the outbox replay: same batches, same reading ids
            self._send(link, batch, topic, payload)
        self.resent += len(again)
        self.link = link
        return link

    def run(self, go: Any) -> dict[str, Any]:
        job = self.job
        lj = Job("", 0, [], job.tag, job.per_message, 0.0, None, time.time(), named=True)
        self.link = link = self._connect()
        go.wait()
        began = time.time()
        deadline = time.monotonic() + job.seconds
        batch = 0
        while time.monotonic() < deadline:
            if link.lost.is_set():
                link = self._failover()
                continue
            with self.lock:
                if len(self.pending) >= job.window:
                    self.lock.wait(0.05)
                    continue
            gw = job.gateways[batch % len(job.gateways)]
            first_seq = (batch // len(job.gateways)) * job.per_message
            topic = f"tbib/v1/gw/bench-gw-{gw}/readings"
            payload = build_message(lj, gw, f"bench-gw-{gw}", f"AA:00:00:00:{gw // 256:02X}:{gw % 256:02X}", first_seq)
            with self.lock:
                self.pending[batch] = (topic, payload)
            self._send(link, batch, topic, payload)
            batch += 1
            if job.rate is not None:
                ahead = began + batch / job.rate - time.time()
                if ahead > 0:
                    time.sleep(ahead)
        last_publish = time.time()
        drain_deadline = time.monotonic() + 60.0
        while time.monotonic() < drain_deadline:
            if link.lost.is_set():
                link = self._failover()
            with self.lock:
                if not self.pending:
                    break
                self.lock.wait(0.1)
        link.client.loop_stop()
        link.client.disconnect()
        return {
            "index": job.index,
            "batches": batch,
            "acks": self.acks,
            "unacked": len(self.pending),
            "reconnects": self.reconnects,
            "resent": self.resent,
            "began": began,
            "last_publish": last_publish,
            "cpu_s": time.process_time(),
        }


def batch_readings(job: PubJob, batch: int) -> tuple[int, int]:
    """(gateway index, first reading seq) of batch number ``batch`` of ``job``."""
    return job.gateways[batch % len(job.gateways)], (batch // len(job.gateways)) * job.per_message


def publisher_process(job: PubJob, go: Any, results: Any) -> None:
    """Publish for ``job.seconds``, drain, put the log on ``results``."""
    try:
        results.put(_Publisher(job).run(go))
    except Exception as exc:  # noqa: BLE001 (reported by the parent, which fails the run)
        results.put({"index": job.index, "error": repr(exc)})
