"""Ingest counters and histograms, rendered as Prometheus text exposition format 0.0.4 (no client library).

The server's ``/metrics`` route calls :meth:`IngestMetrics.render`; the standalone worker serves it with
:func:`serve_metrics`. Updates happen on the worker's event loop thread only.
"""

from __future__ import annotations

import asyncio
import bisect
from dataclasses import dataclass, field
from typing import Final

#: Bucket upper bounds in seconds: 1 ms .. ~60 s, about 6 per decade.
LATENCY_BUCKETS: Final[tuple[float, ...]] = (
    *(round(m * 10.0**e, 6) for e in range(-3, 2) for m in (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)),
    100.0,
)


@dataclass(slots=True)
class Histogram:
    """A cumulative-bucket histogram (Prometheus semantics)."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float, times: int = 1) -> None:
        """Record ``value`` ``times`` times."""
        self.counts[bisect.bisect_left(self.bounds, value)] += times
        self.total += value * times
        self.n += times

    def quantile(self, q: float) -> float | None:
        """Approximate quantile by linear interpolation inside the bucket (``None`` when empty)."""
        return quantile_from_buckets(self.bounds, self.counts, q)

    def render(self, name: str, help_text: str) -> list[str]:
        """Prometheus lines for this histogram."""
        out = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        acc = 0
        for bound, c in zip(self.bounds, self.counts, strict=False):
            acc += c
            out.append(f'{name}_bucket{{le="{bound:g}"}} {acc}')
        out.append(f'{name}_bucket{{le="+Inf"}} {self.n}')
        out.append(f"{name}_sum {self.total:.6f}")
        out.append(f"{name}_count {self.n}")
        return out


def quantile_from_buckets(bounds: tuple[float, ...], counts: list[int], q: float) -> float | None:
    """Quantile ``q`` of non-cumulative bucket ``counts`` (last one is +Inf) by linear interpolation."""
    n = sum(counts)
    if n == 0:
        return None
    rank = q * n
    acc = 0
    for i, c in enumerate(counts):
        if acc + c >= rank and c > 0:
            lo = bounds[i - 1] if i > 0 else 0.0
            hi = bounds[i] if i < len(bounds) else bounds[-1]
            return lo + (hi - lo) * ((rank - acc) / c)
        acc += c
    return bounds[-1]


@dataclass(slots=True)
class IngestMetrics:
    """Counters of one ingest worker."""

    messages: int = 0
    accepted: int = 0
    duplicate: int = 0
    rejected: int = 0
    dead_letters: int = 0
    batches: int = 0
    db_errors: int = 0
    mqtt_reconnects: int = 0
    inflight: int = 0
    receipts: int = 0
    receipt_bytes: int = 0
    commit_seconds: Histogram = field(default_factory=Histogram)
    publish_to_commit_seconds: Histogram = field(default_factory=Histogram)

    def render(self) -> str:
        """Prometheus text exposition."""
        lines: list[str] = []
        for name, value, help_text in (
            ("messages", self.messages, "MQTT messages processed"),
            ("readings_accepted", self.accepted, "readings stored (first time)"),
            ("readings_duplicate", self.duplicate, "readings already stored (redelivery or resend)"),
            ("readings_rejected", self.rejected, "readings refused (validation or enrolment)"),
            ("dead_letters", self.dead_letters, "messages written to dead_letters"),
            ("receipts", self.receipts, "commit receipts published to gateways"),
            ("receipt_bytes", self.receipt_bytes, "bytes of commit receipt payloads published"),
            ("batches", self.batches, "committed batches"),
            ("db_errors", self.db_errors, "failed database attempts (retried)"),
            ("mqtt_reconnects", self.mqtt_reconnects, "broker (re)connections"),
        ):
            lines += [f"# HELP tbib_ingest_{name}_total {help_text}", f"# TYPE tbib_ingest_{name}_total counter"]
            lines.append(f"tbib_ingest_{name}_total {value}")
        lines += [
            "# HELP tbib_ingest_inflight messages received, not yet acknowledged",
            "# TYPE tbib_ingest_inflight gauge",
        ]
        lines.append(f"tbib_ingest_inflight {self.inflight}")
        lines += self.commit_seconds.render("tbib_ingest_commit_seconds", "batch transaction time (COPY to COMMIT)")
        lines += self.publish_to_commit_seconds.render(
            "tbib_ingest_publish_to_commit_seconds", "gateway sent_at to COMMIT, per message (gateway clock)"
        )
        return "\n".join(lines) + "\n"


async def serve_metrics(metrics: IngestMetrics, host: str, port: int) -> asyncio.Server:
    """A tiny HTTP/1.0 server answering every GET with the Prometheus text (``port`` 0 picks a free port)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            body = metrics.render().encode()
            writer.write(
                b"HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)
