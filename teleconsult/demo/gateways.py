"""The demo's home gateways: the real ``gateway_agent`` (``python -m gateway_agent.cli gateway run``) over the simulated
bleak backend, one process per patient, each with its own broker identity.

This module only writes the gateway's configuration files and builds its command line: the server package never
imports ``gateway_agent`` (the gateway runs as a separate program, as on a patient's box). Per gateway, in
``<data dir>/gateways/<gateway id>/``: ``gateway.toml`` (id, broker, outbox, status file, credentials file) and
``credentials.toml`` (mode 0600: the broker user name and the secret that enrolment returned).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import psycopg

from teleconsult.demo.seed import DemoPatient
from teleconsult.security.enrolment import BrokerFiles, add_service_account, enroll_gateway, sync_broker

PY: Final = sys.executable
#: The broker accounts of the demo's server-side processes (service accounts: ACL in teleconsult.security.mosquitto).
INGEST_ACCOUNT: Final = "tbib-demo-ingest"
SERVER_ACCOUNT: Final = "tbib-demo-server"


@dataclass(frozen=True, slots=True)
class GatewayFiles:
    """Where one demo gateway keeps its configuration and state."""

    home: Path
    config: Path
    status: Path
    outbox: Path


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    path.chmod(0o600)  # an existing file keeps its mode through O_CREAT


def write_gateway_config(
    home: Path, gateway_id: str, broker_url: str, credentials: tuple[str, str] | None = None
) -> GatewayFiles:
    """Write ``gateway.toml`` (and ``credentials.toml`` when ``credentials`` is ``(username, password)``)."""
    home.mkdir(parents=True, exist_ok=True)
    files = GatewayFiles(home, home / "gateway.toml", home / "status.json", home / "outbox.sqlite")
    lines = [
        "# written by tbib demo",
        f"gateway_id = {_toml_str(gateway_id)}",
        f"broker_url = {_toml_str(broker_url)}",
        f"status_file = {_toml_str(str(files.status))}",
    ]
    if credentials is not None:
        cred = home / "credentials.toml"
        _write_private(cred, f"username = {_toml_str(credentials[0])}\npassword = {_toml_str(credentials[1])}\n")
        lines.append(f"credentials_file = {_toml_str(str(cred))}")
    lines += ["", "[outbox]", f"path = {_toml_str(str(files.outbox))}", ""]
    files.config.write_text("\n".join(lines), encoding="utf-8")
    return files


def gateway_argv(files: GatewayFiles, patient: DemoPatient, *, onset_s: float, full_effect_s: float) -> list[str]:
    """``tbib gateway run`` for one simulated patient, with the demo's time compression and measurement cadence."""
    return [
        PY, "-m", "gateway_agent.cli", "gateway", "run", "--config", str(files.config),
        "--simulate-scenario", patient.scenario, "--sim-seed", str(patient.seed),
        "--sim-onset", str(onset_s), "--sim-full-effect", str(full_effect_s), "--sim-cadence", "demo",
    ]  # fmt: skip


def with_credentials(url: str, username: str, password: str) -> str:
    """``mqtt://host:port`` -> ``mqtt://username:password@host:port`` (secrets are URL-safe base64)."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{username}:{password}@{rest}"


@dataclass(frozen=True, slots=True)
class BrokerAccounts:
    """The demo's broker identities: one per gateway, one per server-side process."""

    gateways: dict[str, str]
    """gateway id -> secret"""
    ingest_secret: str
    server_secret: str


def enrol_all(dsn: str, patients: list[DemoPatient], files: BrokerFiles) -> BrokerAccounts:
    """(Re-)key every demo gateway and the server accounts, rewrite the broker's files and reload it (SIGHUP)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        gateways = {
            p.gateway_id: enroll_gateway(conn, p.gateway_id, created_by="tbib demo", patient_id=p.patient_id)
            for p in patients
        }
        ingest = add_service_account(conn, INGEST_ACCOUNT)
        server = add_service_account(conn, SERVER_ACCOUNT)
        if not sync_broker(conn, files):
            from teleconsult.demo.services import DemoError

            raise DemoError(f"the demo broker is not running (no process for {files.pid_file})")
    return BrokerAccounts(gateways, ingest, server)
