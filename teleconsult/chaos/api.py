"""The API side of a chaos run: ``tbib server`` nodes (each may run the alert engine), a doctor who may read every
chaos patient, which node leads the engine, and the dashboard check (``latest`` and ``history`` through HTTP).

Leadership is read from PostgreSQL, not from logs: each node's connections carry ``application_name`` =
``chaos-api-<i>`` (``PGAPPNAME``), and the leader is the node whose session holds the engine's advisory lock.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import httpx
import psycopg

from teleconsult.alerts.service import LEADER_LOCK
from teleconsult.chaos.processes import Child, free_port, python_argv, wait_port
from teleconsult.security import tokens
from teleconsult.security.models import Role

APP_PREFIX: Final = "chaos-api-"


@dataclass
class ApiNodes:
    """``tbib server`` processes on one database; ``engine`` nodes contend for the alert engine's leadership."""

    dsn: str
    mqtt_url: str
    dir: Path
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    nodes: list[Child] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    token: str = ""

    def add(self, *, engine: bool) -> Child:
        i = len(self.nodes)
        port = free_port()
        ext = {"alerts": {"engine": engine, "gateway_status": False}}
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "TBIB_ENV": "test",
            "TBIB_DATABASE_URL": self.dsn,
            "TBIB_SECRET_KEY": self.secret,
            "TBIB_MQTT_URL": self.mqtt_url,
            "TBIB_EXT": json.dumps(ext),
            "PGAPPNAME": f"{APP_PREFIX}{i}",
        }
        argv = python_argv("-m", "teleconsult.cli.main", "server", "--port", str(port))
        child = Child(f"api-{i}", argv, env, self.dir / f"api-{i}.log")
        self.nodes.append(child)
        self.ports.append(port)
        return child

    def start_all(self) -> None:
        for child, port in zip(self.nodes, self.ports, strict=True):
            child.start()
            wait_port(port, 60)

    @property
    def url(self) -> str:
        """Base URL of a node that runs (the first alive one)."""
        for child, port in zip(self.nodes, self.ports, strict=True):
            if child.alive() and not child.paused:
                return f"http://127.0.0.1:{port}"
        return f"http://127.0.0.1:{self.ports[0]}"

    def leader(self) -> int | None:
        """Index of the node that holds the engine's leader lock now, or None."""
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute(
                "select a.application_name from pg_locks l join pg_stat_activity a on a.pid = l.pid"
                " where l.locktype = 'advisory' and l.granted and l.classid = %s and l.objid = %s",
                (LEADER_LOCK >> 32, LEADER_LOCK & 0xFFFFFFFF),
            ).fetchone()
        if row is None or not str(row[0]).startswith(APP_PREFIX):
            return None
        return int(str(row[0]).removeprefix(APP_PREFIX))

    def stop(self) -> None:
        for child in self.nodes:
            child.stop(20)

    def kill(self) -> None:
        for child in self.nodes:
            child.kill9()


def add_doctor(dsn: str, secret: str, patients: list[uuid.UUID]) -> str:
    """A doctor on the care team of ``patients``, with a session; their access token (2 h)."""
    now = datetime.now(UTC)
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "insert into users (username, role, password_hash) values (%s, 'doctor', 'x') returning id",
            (f"chaos-dr-{uuid.uuid4().hex[:6]}",),
        ).fetchone()
        assert row is not None
        user = uuid.UUID(str(row[0]))
        for pid in patients:
            conn.execute(
                "insert into care_team (clinician_id, patient_id, valid_from) values (%s, %s, %s)",
                (user, pid, now - timedelta(days=1)),
            )
        session = uuid.uuid4()
        conn.execute(
            "insert into auth_sessions (id, user_id, refresh_hash, created_at, last_used_at, expires_at)"
            " values (%s, %s, %s, %s, %s, %s)",
            (session, user, b"\0" * 32, now, now, now + timedelta(hours=4)),
        )
    return tokens.issue_access_token(
        secret=secret, issuer="tbib", user_id=user, session_id=session, role=Role.DOCTOR, now=now, ttl_s=4 * 3600
    )


@dataclass(frozen=True, slots=True)
class DashboardCheck:
    """What the dashboard's API shows after the catch-up, against ``readings``."""

    series: int
    """(patient, metric) pairs checked."""
    latest_ok: int
    """``GET /patients/{id}``: ``latest[metric]`` is a reading with max(measured_at): that time, and one of the
    values measured then (the RR intervals of one heart-rate notification share their time)."""
    history_ok: int
    """``GET /patients/{id}/history?range=1h``: times non-decreasing and the last point is max(measured_at)."""
    mismatches: list[dict[str, Any]]

    @property
    def ok(self) -> bool:
        return self.latest_ok == self.series and self.history_ok == self.series

    def to_json(self) -> dict[str, Any]:
        return {
            "series": self.series,
            "latest_is_max_measured_at": self.latest_ok,
            "history_in_time_order_ending_at_max": self.history_ok,
            "ok": self.ok,
            "mismatches": self.mismatches[:20],
        }


def check_dashboard(base_url: str, token: str, dsn: str, patients: list[uuid.UUID]) -> DashboardCheck:
    """Read every patient's ``latest`` and 1 h ``history`` through the API and compare with SQL (a quiet database:
    call it once every gateway has stopped)."""
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        rows = conn.execute(  # every value at the newest instant: readings of one notification share it (RR)
            "select r.patient_id, r.metric, r.measured_at, array_agg(r.value) from readings r join"
            " (select patient_id, metric, max(measured_at) as at from readings where patient_id = any(%s)"
            " group by patient_id, metric) m on m.patient_id = r.patient_id and m.metric = r.metric"
            " and m.at = r.measured_at group by r.patient_id, r.metric, r.measured_at",
            (patients,),
        ).fetchall()
    truth = {(str(p), m): (at, [float(v) for v in values]) for p, m, at, values in rows}
    latest_ok = history_ok = 0
    bad: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
        shown: dict[tuple[str, str], Any] = {}
        for pid in patients:
            r = http.get(f"/api/v1/patients/{pid}")
            r.raise_for_status()
            for metric, item in r.json()["latest"].items():
                shown[(str(pid), metric)] = item
        for (patient, metric), (at, values) in sorted(truth.items()):
            item = shown.get((patient, metric))
            if item is not None and datetime.fromisoformat(item["measured_at"]) == at and item["value"] in values:
                latest_ok += 1
            else:
                bad.append({"patient": patient, "metric": metric, "check": "latest", "api": item,
                            "max_measured_at": at.isoformat(), "values": values})  # fmt: skip
            params: dict[str, Any] = {"metric": metric, "range": "1h", "max_points": 5000}
            h = http.get(f"/api/v1/patients/{patient}/history", params=params)
            h.raise_for_status()
            t = h.json()["t"]
            in_order = all(a <= b for a, b in itertools.pairwise(t))
            if t and in_order and abs(t[-1] - at.timestamp()) < 1e-3:
                history_ok += 1
            else:
                bad.append({"patient": patient, "metric": metric, "check": "history", "points": len(t),
                            "in_order": in_order, "last_t": t[-1] if t else None,
                            "max_measured_at": at.timestamp()})  # fmt: skip
    return DashboardCheck(len(truth), latest_ok, history_ok, bad)
