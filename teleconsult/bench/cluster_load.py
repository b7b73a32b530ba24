"""The load of `tbib bench cluster`: people in a scratch database, gateway publishers, alert probes, HTTP requests.

- :func:`setup_people`: ``doctors`` doctors, each on the care team of every patient (the background gateways' and the
  probe patients'), with access tokens signed by the benchmark's secret.
- :func:`publisher_until`: a load-generator process (deterministic reading ids, :mod:`teleconsult.bench.loadgen`)
  that publishes at a fixed rate until told to stop, then reports what the broker acknowledged.
- :class:`Probes`: probe patients' cuffs publish a systolic 230 mmHg (raises ``systolic_bp`` at once) and, ``hold_s``
  later, 120 mmHg (clears it); each probe is an alert that must reach every dashboard.
- :func:`http_rate`: ``GET /api/v1/patients`` through the balancer with ``concurrency`` clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from multiprocessing.synchronize import Event
from typing import Any
from urllib.parse import urlsplit

import psycopg

from teleconsult.bench.loadgen import Job, RawPublisher, build_message
from teleconsult.security import tokens
from teleconsult.security.models import Role

SECRET = "bench-secret-key-0123456789-abcdefghijklmnopqrstu"  # noqa: S105 - throwaway database of the benchmark


def probe_gateway(k: int) -> tuple[str, str]:
    """(gateway id, cuff address) of probe patient ``k``."""
    return f"bench-probe-gw-{k:02d}", f"PR:0B:E0:00:00:{k:02X}"


def setup_probes(dsn: str, n: int) -> list[uuid.UUID]:
    """``n`` probe patients, each with a gateway and a blood-pressure cuff, consenting to monitoring."""
    out = []
    with psycopg.connect(dsn) as conn:
        for k in range(n):
            gw, addr = probe_gateway(k)
            pid = uuid.uuid4()
            conn.execute("insert into patients (id, display_name) values (%s, %s)", (pid, f"Probe {k}"))
            conn.execute("insert into gateways (id, patient_id) values (%s, %s)", (gw, pid))
            conn.execute(
                "insert into devices (gateway_id, patient_id, address, model, kind)"
                " values (%s, %s, %s, 'SIM-BP', 'bp')",
                (gw, pid, addr),
            )
            conn.execute(
                "insert into consents (patient_id, purpose, granted, note) values (%s, 'remote_monitoring', true, 'b')",
                (pid,),
            )
            out.append(pid)
    return out


def setup_people(dsn: str, doctors: int, patients: list[uuid.UUID]) -> list[str]:
    """``doctors`` doctors on the care team of every one of ``patients``; returns their access tokens."""
    now = datetime.now(UTC)
    out: list[str] = []
    with psycopg.connect(dsn) as conn:
        for i in range(doctors):
            row = conn.execute(
                "insert into users (username, role, password_hash) values (%s, 'doctor', 'x') returning id",
                (f"bench-dr-{i:04d}",),
            ).fetchone()
            assert row is not None
            user = uuid.UUID(str(row[0]))
            with conn.cursor() as cur:
                cur.executemany(
                    "insert into care_team (clinician_id, patient_id, valid_from) values (%s, %s, %s)",
                    [(user, p, now - timedelta(days=1)) for p in patients],
                )
            session = uuid.uuid4()
            conn.execute(
                "insert into auth_sessions (id, user_id, refresh_hash, created_at, last_used_at, expires_at)"
                " values (%s, %s, %s, %s, %s, %s)",
                (session, user, b"\0" * 32, now, now, now + timedelta(hours=4)),
            )
            out.append(
                tokens.issue_access_token(
                    secret=SECRET,
                    issuer="tbib",
                    user_id=user,
                    session_id=session,
                    role=Role.DOCTOR,
                    now=now,
                    ttl_s=4 * 3600,
                )
            )
    return out


def publisher_until(job: Job, go: Event, stop: Event, results: Any) -> None:
    """Publish ``job.rate`` messages/s from ``go`` until ``stop``; put ``{"sent": {gateway index: messages}}``."""
    client = RawPublisher(job.host, job.port, f"bench-cl-{uuid.uuid4().hex[:10]}", job.max_inflight)
    sent = {g: 0 for g, _, _ in job.gateways}
    go.wait()
    began = time.time()
    n = 0
    while not stop.is_set():
        burst = []
        for gw_index, gw_id, address in job.gateways:
            burst.append((f"tbib/v1/gw/{gw_id}/readings",
                          build_message(job, gw_index, gw_id, address, sent[gw_index] * job.per_message)))  # fmt: skip
            sent[gw_index] += 1
        client.publish(burst)
        n += len(burst)
        if job.rate is not None and (ahead := began + n / job.rate - time.time()) > 0:
            time.sleep(min(ahead, 0.5))
    client.close()
    results.put({"sent": sent, "began": began, "last_publish": time.time()})


def _payload(k: int, value: float, at: datetime) -> bytes:
    gw, addr = probe_gateway(k)
    t = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    reading = {"id": str(uuid.uuid4()), "device": {"address": addr, "model": "SIM-BP", "serial": f"P{k}"},
               "metric": "systolic_bp", "value": value, "unit": "mm[Hg]", "measured_at": t, "device_time": None,
               "received_at": t, "group": None, "flags": None}  # fmt: skip
    return json.dumps({"v": 1, "gateway_id": gw, "sent_at": t, "readings": [reading]}).encode()


class Probes:
    """Alert probes (see the module docstring): ``published`` maps (patient index, measured_at in ms) to the wall
    time of the high reading's PUBACK."""

    def __init__(self, mqtt_url: str, patients: int, gap_s: float, hold_s: float) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

        url = urlsplit(mqtt_url)
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                  client_id=f"bench-cl-probe-{uuid.uuid4().hex[:6]}",
                                  protocol=MQTTProtocolVersion.MQTTv5)  # fmt: skip
        self.client.connect(url.hostname or "127.0.0.1", url.port or 1883)
        self.client.loop_start()
        self.patients, self.gap_s, self.hold_s = patients, gap_s, hold_s
        self.published: dict[tuple[int, int], float] = {}
        self._stop = asyncio.Event()

    async def run(self) -> None:
        """Publish probes every ``gap_s`` (round robin over the probe patients) until :meth:`stop`."""
        i = 0
        pending: list[asyncio.Task[None]] = []
        while not self._stop.is_set():
            k = i % self.patients
            now = datetime.now(UTC)
            at = now.replace(microsecond=now.microsecond // 1000 * 1000)
            info = self.client.publish(f"tbib/v1/gw/{probe_gateway(k)[0]}/readings", _payload(k, 230, at), 1)
            await asyncio.to_thread(info.wait_for_publish, 10)
            self.published[(k, int(at.timestamp() * 1000))] = time.time()
            pending.append(asyncio.create_task(self._clear(k)))
            i += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.gap_s)
        await asyncio.gather(*pending)

    async def _clear(self, k: int) -> None:
        await asyncio.sleep(self.hold_s)
        info = self.client.publish(f"tbib/v1/gw/{probe_gateway(k)[0]}/readings",
                                   _payload(k, 120, datetime.now(UTC)), 1)  # fmt: skip
        await asyncio.to_thread(info.wait_for_publish, 10)

    def stop(self) -> None:
        """Stop after the current probe (its clear is still sent)."""
        self._stop.set()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


async def http_rate(base_url: str, token: str, seconds: float, concurrency: int) -> dict[str, Any]:
    """Requests/s of ``GET /api/v1/patients`` through ``base_url``; non-200 answers and errors are counted."""
    import httpx

    ok = failed = 0
    deadline = time.monotonic() + seconds
    latencies: list[float] = []

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal ok, failed
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            try:
                r = await client.get("/api/v1/patients")
            except httpx.HTTPError:
                failed += 1
                await asyncio.sleep(0.05)
                continue
            if r.status_code == 200:
                ok += 1
                latencies.append(time.monotonic() - t0)
            else:
                failed += 1

    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as c:
        t0 = time.monotonic()
        await asyncio.gather(*(worker(c) for _ in range(concurrency)))
        elapsed = time.monotonic() - t0
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else None
    return {"requests_per_s": round(ok / elapsed, 1), "failed": failed,
            "p99_ms": None if p99 is None else round(p99 * 1000, 1)}  # fmt: skip
