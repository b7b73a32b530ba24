"""Settings of an ingest worker (``tbib ingest`` flags, the server's configuration)."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Final

from teleconsult.ingest.receipts import ReceiptForm

SHARED_TOPIC: Final = "$share/tbib-ingest/tbib/v1/gw/+/readings"


@dataclass(frozen=True, slots=True)
class IngestConfig:
    """Settings of one ingest worker."""

    dsn: str
    """PostgreSQL connection string (schema upgraded with ``tbib db upgrade``)."""
    mqtt_url: str
    """``mqtt://[user:password@]host:port`` (``mqtts://`` for TLS with the system CAs)."""
    client_id: str = field(default_factory=lambda: f"tbib-ingest-{socket.gethostname()}")
    """Stable per worker instance: the broker keeps its session (and unacknowledged messages) across crashes."""
    topic: str = SHARED_TOPIC
    max_batch_readings: int = 10_000
    """A batch closes at this many readings ..."""
    linger_s: float = 0.05
    """... or this long after its first message."""
    writers: int = 2
    """Concurrent batches (one database connection each)."""
    receive_maximum: int = 3000
    """MQTT v5 Receive Maximum: at most this many unacknowledged messages in flight to this worker."""
    max_payload_bytes: int = 1 << 20
    dead_letter_max_bytes: int = 64 << 10
    session_expiry_s: int = 3600
    keepalive_s: int = 30
    enrolment_refresh_s: float = 0.5
    """Minimum time between two enrolment refreshes triggered by unknown devices."""
    enrolment_max_age_s: float = 10.0
    """The enrolment map (with consent decisions) is reloaded at least this often while messages flow."""
    drain_timeout_s: float = 30.0
    """On stop, how long to keep committing what the broker already assigned to this session."""
    receipts: ReceiptForm | None = "range"
    """Commit receipts: ``"range"`` (batch names, default), ``"ids"`` (every committed id), ``None`` (none)."""
    read_pause_s: float = 0.002
    """MQTT network thread's nap after a read that emptied the socket (:attr:`.link.IngestClient.read_pause_s`)."""
