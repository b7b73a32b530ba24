"""The gateway process: BLE manager -> outbox -> MQTT publisher, plus a status file for the home installer.

Status file (JSON, rewritten atomically every ``status_interval`` seconds and at exit)::

    {"gateway_id": "gw-1", "updated_at": "...Z", "pid": 123, "running": true,
     "link": {"state": "connected", "broker": "mqtts://...", "last_error": null, "connects": 1, ...},
     "outbox": {"path": "...", "depth": 0, "dropped": 0, "max_readings": 1000000},
     "devices": [{"address": "...", "device_id": "...", "kind": "...", "connected": true, "readings": 12,
                  "decode_errors": 0, "last_reading": {...}, "last_error": null, "clock_offset_s": -3.2, ...}]}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from paho.mqtt.enums import MQTTProtocolVersion

from gateway_agent.ble import BleManager
from gateway_agent.calls import CallRunner, LiveReadings, TeeSink
from gateway_agent.commands import CommandVerifier, parse_public_key
from gateway_agent.config import GatewaySettings
from gateway_agent.outbox import Outbox
from gateway_agent.payload import rfc3339
from gateway_agent.publisher import BrokerParams, LinkState, MqttPublisher

log = logging.getLogger(__name__)


def broker_params(settings: GatewaySettings) -> BrokerParams:
    """Broker connection parameters from the settings (reads the credentials file)."""
    creds = settings.credentials()
    return BrokerParams(
        host=settings.broker_host,
        port=settings.broker_port,
        client_id=settings.gateway_id,
        tls=settings.tls,
        ca_file=str(settings.ca_file) if settings.ca_file else None,
        client_cert=str(settings.client_cert) if settings.client_cert else None,
        client_key=str(settings.client_key) if settings.client_key else None,
        username=creds.username if creds else None,
        password=creds.password if creds else None,
        keepalive=settings.keepalive_s,
        session_expiry=settings.session_expiry_s,
        fallbacks=settings.broker_fallbacks,
        protocol=MQTTProtocolVersion.MQTTv311 if settings.mqtt_version == "3.1.1" else MQTTProtocolVersion.MQTTv5,
    )


class Gateway:
    """Wire the parts together; :meth:`run` until ``stop`` is set."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        scanner_kwargs: Mapping[str, Any] | None = None,
        client_kwargs: Mapping[str, Any] | None = None,
        clock: Callable[[], datetime] | None = None,
        status_interval: float = 1.0,
        spot_recheck_s: float = 30.0,
    ) -> None:
        self.settings = settings
        self.outbox = Outbox(
            settings.outbox.path, max_readings=settings.outbox.max_readings, capture_log=settings.outbox.capture_log
        )
        b, r = settings.batching, settings.receipts
        self.publisher = MqttPublisher(
            self.outbox,
            broker_params(settings),
            gateway_id=settings.gateway_id,
            max_readings=b.max_readings,
            max_delay=b.max_delay_ms / 1000.0,
            window=b.inflight_window,
            receipts=r.enabled,
            receipt_timeout=r.timeout_s,
            fallback_after=r.fallback_after,
        )
        self.live = LiveReadings()
        self.calls = self._call_runner(settings) if settings.commands.enabled else None
        if self.calls is not None:
            self.publisher.on_command = self.calls.handle
        self.ble = BleManager(
            settings.devices,
            TeeSink(self.outbox, self.live),
            on_appended=self._appended,
            on_event=self.publisher.publish_event,
            clock=clock,
            scanner_kwargs=scanner_kwargs,
            client_kwargs=client_kwargs,
            spot_recheck_s=spot_recheck_s,
        )
        self.status_interval = status_interval
        self.flush_timeout = settings.stop_flush_s
        """At stop, seconds to wait for the PUBACKs of what is still in the outbox (the rest is replayed next run)."""
        self.started_at = datetime.now(UTC)

    def _call_runner(self, settings: GatewaySettings) -> CallRunner:
        """Signed ``join`` commands start the consult agent (``docs/teleconsultation.md``)."""
        c = settings.commands
        verifier = CommandVerifier(
            gateway_id=settings.gateway_id,
            public_keys=[parse_public_key(k) for k in c.server_keys],
            max_lifetime=c.max_lifetime_s,
            skew=c.skew_s,
        )
        return CallRunner(verifier, self.publisher.publish_event, camera=c.camera, microphone=c.microphone,
                          state_file=c.state_file, readings=self.live.iterate)  # fmt: skip

    def _appended(self, _n: int) -> None:
        while (event := self.outbox.next_event()) is not None:
            log.warning("outbox full: dropped %d oldest readings (%d in total)", event.dropped, event.total_dropped)
            self.publisher.publish_event("outbox_overflow", **asdict(event))
        self.publisher.notify()

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; then stop BLE sessions, publish ``offline``, close the outbox."""
        await self.publisher.start()
        ble_task = asyncio.create_task(self.ble.run(), name="ble")
        try:
            while not stop.is_set():
                self.write_status(running=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.status_interval)
                if ble_task.done():
                    ble_task.result()  # surface an unexpected crash of the BLE manager
        finally:
            if self.calls is not None:
                await self.calls.aclose()
            self.ble.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(ble_task, 10)
            if self.publisher.state is LinkState.CONNECTED:  # flush what the last seconds captured, briefly
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.publisher.drain(), self.flush_timeout)
            await self.publisher.stop()
            self.write_status(running=False)
            self.outbox.close()

    def status(self, *, running: bool) -> dict[str, Any]:
        """The status document."""
        pub = self.publisher
        return {
            "gateway_id": self.settings.gateway_id,
            "updated_at": rfc3339(datetime.now(UTC)),
            "started_at": rfc3339(self.started_at),
            "pid": os.getpid(),
            "running": running,
            "link": {
                "state": pub.state.value,
                "broker": self.settings.broker_url,
                "last_error": str(pub.last_error) if pub.last_error else None,
                "inflight_batches": pub.planner.inflight(),
                "receipt_mode": pub.tracker.mode.value,
                "awaiting_receipt_batches": pub.tracker.pending(),
                **asdict(pub.stats),
            },
            "outbox": {
                "path": str(self.outbox.path),
                "depth": self.outbox.depth(),
                "sent": self.outbox.sent_depth(),
                "dropped": self.outbox.dropped(),
                "max_readings": self.outbox.max_readings,
            },
            "ble": {"scanner_error": self.ble.scanner_error},
            "commands": None if self.calls is None else asdict(self.calls.stats),
            "devices": [st.to_json() for st in self.ble.status.values()],
        }

    def write_status(self, *, running: bool) -> None:
        """Write the status file atomically (temp file + rename); no-op when no status file is configured."""
        path = self.settings.status_file
        if path is None:
            return
        try:
            write_json_atomic(path, self.status(running=running))
        except OSError as exc:
            log.warning("cannot write status file %s: %s", path, exc)


def write_json_atomic(path: Path, obj: object) -> None:
    """Write JSON to ``path`` via a temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
