"""Helpers for API tests (usable by every area): a real uvicorn on port 0 in a thread, seeded users, logins.

settings = make_settings(dsn)
with LiveServer(create_app(settings)) as server:       # server.url == "http://127.0.0.1:<port>"
    token = login(server.url, "m-doctor")               # bearer access token
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import psycopg
import uvicorn

from teleconsult.security import passwords
from teleconsult.settings import Settings

SECRET: Final = "test-secret-key-0123456789-abcdefghijklmnop"
PASSWORD: Final = "correct-horse-battery"
ROLES: Final = ("admin", "doctor", "nurse", "pharmacist", "patient")
_HASH: dict[str, str] = {}


def password_hash() -> str:
    """argon2id hash of :data:`PASSWORD`, computed once per process."""
    if "h" not in _HASH:
        _HASH["h"] = passwords.hash_password(PASSWORD)
    return _HASH["h"]


def make_settings(dsn: str, **overrides: Any) -> Settings:
    """Settings for a test app (env "test", a real secret)."""
    values: dict[str, Any] = {"env": "test", "database_url": dsn, "secret_key": SECRET, "db_pool_max_size": 5}
    values.update(overrides)
    return Settings(**values)


class LiveServer:
    """uvicorn serving ``app`` on 127.0.0.1 and a free port, in a background thread (lifespan included)."""

    def __init__(self, app: Any, **config: Any) -> None:
        self.config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on", **config)
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-test", daemon=True)
        self.url = ""

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        scheme = "https" if self.config.ssl_certfile else "http"
        self.url = f"{scheme}://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


@dataclass
class Seeded:
    """Two patients; one account per role plus a second patient account; staff assigned to ``p1`` only."""

    dsn: str
    p1: uuid.UUID
    p2: uuid.UUID
    users: dict[str, uuid.UUID] = field(default_factory=dict)
    """role -> user id ("patient" is p1's account, "patient2" p2's)."""

    @staticmethod
    def username(role: str) -> str:
        return f"m-{role}"

    def add_user(self, username: str, role: str, patient_id: uuid.UUID | None = None) -> uuid.UUID:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute(
                "insert into users (username, display_name, role, password_hash, patient_id) "
                "values (%s, %s, %s, %s, %s) returning id",
                (username, username, role, password_hash(), patient_id),
            ).fetchone()
        assert row is not None
        return uuid.UUID(str(row[0]))

    def assign(self, user_id: uuid.UUID, patient_id: uuid.UUID) -> uuid.UUID:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute(
                "insert into care_team (clinician_id, patient_id, valid_from) "
                "values (%s, %s, now() - interval '1 day') returning id",
                (user_id, patient_id),
            ).fetchone()
        assert row is not None
        return uuid.UUID(str(row[0]))


def seed(dsn: str, prefix: str = "m") -> Seeded:
    """Create the standard cast in a migrated database."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        p1 = conn.execute("insert into patients (display_name) values ('Patient One') returning id").fetchone()
        p2 = conn.execute("insert into patients (display_name) values ('Patient Two') returning id").fetchone()
    assert p1 is not None
    assert p2 is not None
    s = Seeded(dsn=dsn, p1=uuid.UUID(str(p1[0])), p2=uuid.UUID(str(p2[0])))
    for role in ROLES:
        pid = s.p1 if role == "patient" else None
        s.users[role] = s.add_user(f"{prefix}-{role}", role, pid)
        if role != "patient":
            s.assign(s.users[role], s.p1)
    s.users["patient2"] = s.add_user(f"{prefix}-patient2", "patient", s.p2)
    # No decision on file is no consent (issue 19): both patients consent to remote monitoring, p1 also to data
    # sharing (FHIR reads by the care team); teleconsultation stays ungranted (tests grant it when they need it).
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "insert into consents (patient_id, purpose, granted, note) values (%s, 'remote_monitoring', true, 'seed'),"
            " (%s, 'remote_monitoring', true, 'seed'), (%s, 'data_sharing', true, 'seed')",
            (s.p1, s.p2, s.p1),
        )
    return s


def login(base_url: str, username: str, password: str = PASSWORD, **extra: Any) -> str:
    """Log in (token mode) and return the access token."""
    r = httpx.post(f"{base_url}/api/v1/auth/login", json={"username": username, "password": password, **extra})
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


@asynccontextmanager
async def asgi_client(
    settings: Settings, *, client: tuple[str, int] = ("127.0.0.1", 50000), app: Any = None
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the app in-process (lifespan run), base URL https://testserver."""
    from teleconsult.api.app import create_app

    app = app or create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as c:
            yield c
