"""Commit receipts in the ingest benchmark: a subscriber standing for the gateways, and the with/without summary."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


class ReceiptSink:
    """One MQTT subscriber to every gateway's receipts (the broker delivers each receipt once, as to its gateway)."""

    def __init__(self, mqtt_url: str) -> None:
        url = urlsplit(mqtt_url)
        self.count = 0
        self.bytes = 0
        ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-rcpt-{uuid.uuid4().hex[:6]}")

        def on_message(_c: Any, _u: Any, msg: Any) -> None:
            self.count += 1
            self.bytes += len(msg.payload)

        self.client.on_message = on_message
        self.client.on_subscribe = lambda *_a: ready.set()
        self.client.connect(url.hostname or "127.0.0.1", url.port or 1883)
        self.client.subscribe("tbib/v1/gw/+/receipts", qos=1)
        self.client.loop_start()
        ready.wait(10)

    def close(self) -> dict[str, int]:
        time.sleep(0.5)
        self.client.disconnect()
        self.client.loop_stop()
        return {"receipts": self.count, "bytes": self.bytes}


def receipt_summary(
    without: dict[str, Any],
    with_: dict[str, Any],
    ids: dict[str, Any] | None,
    sink: dict[str, int],
    abba: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Throughput and bytes with and without commit receipts (same run, same load, 10 readings per message).

    ``abba``: the second pair (with, without) run after the first (without, with): ``abba`` in the result averages each
    form over both positions (the phase that runs second into a fuller table is slower, whatever it carries)."""

    def server_us(p: dict[str, Any]) -> float:
        return round(float(sum(v for k, v in p["cpu_us_per_reading"].items() if k != "publishers")), 2)

    def form(p: dict[str, Any]) -> dict[str, Any]:
        n = max(p["receipts"], 1)
        return {
            "readings_per_s": p["readings_per_s"],
            "ratio_to_without": round(p["readings_per_s"] / max(without["readings_per_s"], 1), 3),
            "server_cpu_us_per_reading": server_us(p),
            # CPU-bound capacity ratio (robust to other load on the machine): without / with, per reading
            "cpu_ratio_to_without": round(server_us(without) / max(server_us(p), 1e-9), 3),
            "receipts": p["receipts"],
            "bytes_per_receipt": round(p["receipt_bytes"] / n, 1),
            "receipt_bytes_per_reading": round(p["receipt_bytes"] / max(p["readings"], 1), 2),
            "batches_per_receipt": round(p["messages"] / n, 1),
        }

    both: dict[str, Any] | None = None
    if abba:
        w2, wo2 = abba
        with_mean = (with_["readings_per_s"] + w2["readings_per_s"]) / 2
        without_mean = (without["readings_per_s"] + wo2["readings_per_s"]) / 2
        cpu_with = (server_us(with_) + server_us(w2)) / 2
        cpu_without = (server_us(without) + server_us(wo2)) / 2
        both = {
            "order": "without, with, with, without",
            "without_readings_per_s": [without["readings_per_s"], wo2["readings_per_s"]],
            "with_readings_per_s": [with_["readings_per_s"], w2["readings_per_s"]],
            "ratio_to_without": round(with_mean / max(without_mean, 1), 3),
            "cpu_ratio_to_without": round(cpu_without / max(cpu_with, 1e-9), 3),
            "second_with_phase_receipts": w2["receipts"],
        }
    return {
        "abba": both,
        "without_readings_per_s": without["readings_per_s"],
        "without_server_cpu_us_per_reading": server_us(without),
        "range": form(with_),
        "ids": form(ids) if ids is not None else None,
        "delivered_to_subscriber": sink,
    }
