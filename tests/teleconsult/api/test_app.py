"""The application shell: secure headers, CORS closed by default, /healthz, extensions, websocket authentication,
and `tbib server` serving HTTPS with the development CA."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, WebSocket
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from teleconsult.api.app import Extension, create_app
from teleconsult.api.deps import accept_websocket, authenticate_websocket, authorize_websocket_patient
from teleconsult.cli.main import main as tbib
from tests.processes import Spawner
from tests.teleconsult.api.helpers import PASSWORD, LiveServer, Seeded, asgi_client, login, make_settings

REPO = Path(__file__).resolve().parents[3]


async def test_secure_headers(seeded: Seeded) -> None:
    async with asgi_client(make_settings(seeded.dsn)) as c:
        r = await c.get("/healthz")
        assert r.status_code == 200
        assert r.json() == {"status": "ok", "database": "ok"}
        h = r.headers
        assert h["x-content-type-options"] == "nosniff"
        assert h["x-frame-options"] == "DENY"
        assert h["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in h["content-security-policy"]
        assert "default-src 'self'" in h["content-security-policy"]
        assert h["strict-transport-security"].startswith("max-age=")  # https request
        api = await c.get("/api/v1/auth/me")
        assert api.status_code == 401
        assert api.headers["cache-control"] == "no-store"
        assert "cdn.jsdelivr.net" in (await c.get("/docs")).headers["content-security-policy"]
    plain = httpx.ASGITransport(app=create_app(make_settings(seeded.dsn)))
    async with httpx.AsyncClient(transport=plain, base_url="http://testserver") as c:
        assert "strict-transport-security" not in (await c.get("/openapi.json")).headers


async def test_cors_closed_by_default_and_opt_in(seeded: Seeded) -> None:
    pre = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    async with asgi_client(make_settings(seeded.dsn)) as c:
        r = await c.options("/api/v1/auth/login", headers=pre)
        assert "access-control-allow-origin" not in r.headers
        r = await c.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers
    async with asgi_client(make_settings(seeded.dsn, cors_origins=["https://dash.example"])) as c:
        ok = await c.options("/api/v1/auth/login", headers={**pre, "Origin": "https://dash.example"})
        assert ok.headers["access-control-allow-origin"] == "https://dash.example"
        assert ok.headers["access-control-allow-credentials"] == "true"
        bad = await c.options("/api/v1/auth/login", headers=pre)
        assert "access-control-allow-origin" not in bad.headers


async def test_healthz_reports_unreachable_database() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = make_settings(f"postgresql://postgres@127.0.0.1:{port}/nowhere?connect_timeout=1")
    async with asgi_client(settings) as c:
        r = await c.get("/healthz")
    assert (r.status_code, r.json()["database"]) == (503, "unavailable")


def _ws_extension(events: list[str]) -> Extension:
    router = APIRouter()

    @router.websocket("/probe/{patient_id}")
    async def probe(websocket: WebSocket, patient_id: uuid.UUID) -> None:
        user = await authenticate_websocket(websocket)
        await authorize_websocket_patient(websocket, user, patient_id)
        await accept_websocket(websocket)
        await websocket.send_json({"user": user.username})
        await websocket.close()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        assert app.state.pool is not None
        events.append("start")
        app.state.probe_service = "running"
        yield
        events.append("stop")

    return Extension(name="probe", routers=[(router, "/ws/test")], lifespan=lifespan)


def test_extensions_and_websocket_authentication(seeded: Seeded) -> None:
    events: list[str] = []
    disabled = Extension(name="off", enabled=lambda s: False, routers=[(APIRouter(), "/never")])
    app = create_app(make_settings(seeded.dsn), extensions=[_ws_extension(events), disabled])
    assert app.state.extensions == ["probe"]
    with LiveServer(app) as server:
        assert events == ["start"]
        ws = server.url.replace("http", "ws") + "/ws/test/probe"
        doctor = login(server.url, "m-doctor")
        with ws_connect(f"{ws}/{seeded.p1}?token={doctor}") as c:  # token in the query
            assert json.loads(c.recv(5)) == {"user": "m-doctor"}
        with ws_connect(f"{ws}/{seeded.p1}") as c:  # token in the first message
            c.send(json.dumps({"type": "auth", "token": doctor}))
            assert json.loads(c.recv(5)) == {"user": "m-doctor"}
        with ws_connect(f"{ws}/{seeded.p1}") as c:
            c.send(json.dumps({"type": "auth", "token": "garbage"}))
            with pytest.raises(ConnectionClosed) as closed:
                c.recv(5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1008
        with pytest.raises(InvalidStatus):  # bad token in the query: refused at the handshake
            ws_connect(f"{ws}/{seeded.p1}?token=garbage").close()
        with pytest.raises(InvalidStatus):  # not on p2's care team
            ws_connect(f"{ws}/{seeded.p2}?token={doctor}").close()
        r = httpx.post(f"{server.url}/api/v1/auth/login", json={"username": "m-doctor", "password": PASSWORD,
                                                                "mode": "cookie"})  # fmt: skip
        cookie = f"tbib_session={r.cookies['tbib_session']}"
        with ws_connect(f"{ws}/{seeded.p1}", additional_headers={"Cookie": cookie}, origin=server.url) as c:  # type: ignore[arg-type]
            assert json.loads(c.recv(5)) == {"user": "m-doctor"}
        with pytest.raises(InvalidStatus):  # cross-site websocket hijacking: cookie from a foreign origin
            ws_connect(
                f"{ws}/{seeded.p1}",
                additional_headers={"Cookie": cookie},
                origin="https://evil.example",  # type: ignore[arg-type]
            ).close()
        assert app.state.probe_service == "running"
    assert events == ["start", "stop"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_tbib_server_https_with_migrations(make_database: Any, tmp_path: Path, spawn: Spawner) -> None:
    dsn = make_database("plain")
    pki = tmp_path / "pki"
    assert tbib(["pki", "init", "--dir", str(pki), "--host", "127.0.0.1"]) == 0
    port = _free_port()
    env = {**os.environ, "TBIB_ENV": "test", "TBIB_SECRET_KEY": "k" * 40, "TBIB_DATABASE_URL": dsn}
    env.pop("TBIB_CONFIG", None)
    cmd = [sys.executable, "-m", "teleconsult.cli.main", "server", "--port", str(port), "--migrate",
           "--tls-cert", str(pki / "server.crt"), "--tls-key", str(pki / "server.key")]  # fmt: skip
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = spawn(cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        while True:
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=ctx, timeout=2)
                break
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "tbib server did not come up"
            time.sleep(0.2)
        assert r.status_code == 200
        assert r.headers["strict-transport-security"].startswith("max-age=")
        assert "server" not in r.headers
    finally:
        spawn.close()  # stop the server now (the port is reused below); the fixture would also do it on failure
    # refuses to start in production with the default secret
    bad = subprocess.run(
        [sys.executable, "-m", "teleconsult.cli.main", "server", "--port", str(port)],
        env={**env, "TBIB_ENV": "production", "TBIB_SECRET_KEY": ""}, cwd=REPO, capture_output=True, text=True,
        check=False, timeout=30,
    )  # fmt: skip
    assert bad.returncode == 1
    assert "TBIB_SECRET_KEY" in bad.stderr
