"""Gateway enrolment on the broker: identities, secrets (stored hashed), Mosquitto password and ACL files.

``enroll_gateway`` creates (or re-keys) a gateway identity and returns its secret once; ``revoke_gateway`` removes it.
Both then call :func:`sync_broker`, which rewrites the password and ACL files from the database (atomically: temp file
+ rename) and sends SIGHUP to the broker, which reloads them without a restart. Synchronous (used by the CLI).
"""

from __future__ import annotations

import os
import secrets
import signal
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from teleconsult.errors import EnrolmentError
from teleconsult.security import mosquitto


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    """Where the broker reads its credentials, and how to tell it to reload."""

    passwd_file: Path
    acl_file: Path
    pid_file: Path | None = None


@dataclass(frozen=True, slots=True)
class GatewayCredential:
    """One gateway identity as listed."""

    gateway_id: str
    created_at: datetime
    revoked_at: datetime | None


def new_secret() -> str:
    """A random 256-bit secret, URL-safe."""
    return secrets.token_urlsafe(32)


def _name(gateway_id: str) -> str:
    try:
        return mosquitto.check_username(gateway_id)
    except ValueError as exc:
        raise EnrolmentError(str(exc)) from exc


def enroll_gateway(
    conn: psycopg.Connection[Any], gateway_id: str, *, created_by: str | None = None, patient_id: Any = None
) -> str:
    """Create or re-key ``gateway_id`` (clears a revocation); returns the new secret (shown once, stored hashed)."""
    name = _name(gateway_id)
    secret = new_secret()
    with conn.transaction():
        taken = conn.execute("select 1 from broker_service_accounts where username = %s", (name,)).fetchone()
        if taken:
            raise EnrolmentError(f"{name} is a service account name")
        conn.execute(
            "insert into gateways (id, patient_id) values (%s, %s) on conflict (id) do update "
            "set patient_id = coalesce(excluded.patient_id, gateways.patient_id)",
            (name, patient_id),
        )
        conn.execute(
            "insert into gateway_credentials (gateway_id, secret_hash, created_by) values (%s, %s, %s) "
            "on conflict (gateway_id) do update set secret_hash = excluded.secret_hash, created_at = now(), "
            "created_by = excluded.created_by, revoked_at = null",
            (name, mosquitto.hash_password(secret), created_by),
        )
    return secret


def revoke_gateway(conn: psycopg.Connection[Any], gateway_id: str, now: datetime | None = None) -> None:
    """Revoke ``gateway_id``'s broker credentials."""
    with conn.transaction():
        row = conn.execute(
            "update gateway_credentials set revoked_at = %s where gateway_id = %s and revoked_at is null "
            "returning gateway_id",
            (now or datetime.now(UTC), _name(gateway_id)),
        ).fetchone()
    if row is None:
        raise EnrolmentError(f"gateway {gateway_id} has no active credentials")


def add_service_account(conn: psycopg.Connection[Any], username: str) -> str:
    """Create or re-key a server-side broker account (e.g. ``tbib-ingest``); returns its secret."""
    name = _name(username)
    secret = new_secret()
    with conn.transaction():
        if conn.execute("select 1 from gateway_credentials where gateway_id = %s", (name,)).fetchone():
            raise EnrolmentError(f"{name} is a gateway id")
        conn.execute(
            "insert into broker_service_accounts (username, secret_hash) values (%s, %s) on conflict (username) "
            "do update set secret_hash = excluded.secret_hash, revoked_at = null",
            (name, mosquitto.hash_password(secret)),
        )
    return secret


def list_gateways(conn: psycopg.Connection[Any]) -> list[GatewayCredential]:
    """Every gateway identity, by id."""
    rows = conn.execute("select gateway_id, created_at, revoked_at from gateway_credentials order by 1").fetchall()
    return [GatewayCredential(r[0], r[1], r[2]) for r in rows]


def render_files(conn: psycopg.Connection[Any]) -> tuple[str, str]:
    """``(password file, ACL file)`` text for the live credentials."""
    gateways = conn.execute(
        "select gateway_id, secret_hash from gateway_credentials where revoked_at is null"
    ).fetchall()
    services = conn.execute(
        "select username, secret_hash from broker_service_accounts where revoked_at is null"
    ).fetchall()
    entries = [(str(r[0]), str(r[1])) for r in [*gateways, *services]]
    return mosquitto.render_password_file(entries), mosquitto.render_acl_file(str(r[0]) for r in services)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def reload_broker(pid_file: Path) -> bool:
    """SIGHUP the broker named by ``pid_file``; False when it is not running."""
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError):
        return False
    return True


def sync_broker(conn: psycopg.Connection[Any], files: BrokerFiles) -> bool:
    """Rewrite both files from the database and reload the broker; returns whether a broker was signalled."""
    passwd, acl = render_files(conn)
    return write_broker_files(files, passwd, acl)


def write_broker_files(files: BrokerFiles, passwd: str, acl: str) -> bool:
    """Write both files atomically, then SIGHUP the broker; returns whether a broker was signalled."""
    try:
        _atomic_write(files.passwd_file, passwd)
        _atomic_write(files.acl_file, acl)
    except OSError as exc:
        raise EnrolmentError(f"cannot write broker files: {exc}") from exc
    return reload_broker(files.pid_file) if files.pid_file is not None else False
