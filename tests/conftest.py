"""Test harness: the project's real PostgreSQL/TimescaleDB and Mosquitto (scripts/services.sh), one database per module.

Fixtures
- ``services``: the service URLs, started by ``scripts/services.sh up`` unless ``TBIB_TEST_DSN`` and
  ``TBIB_TEST_MQTT_URL`` name
  existing ones.
- ``db_dsn``: a fresh database per test module, parametrized over the two storage flavours ("timescaledb", "plain").
- ``tsdb_dsn`` / ``plain_dsn``: one flavour only.
- ``mqtt_url``, ``mqtt_host_port``: the project's broker.
- ``turn_server``: the project's coturn (``TBIB_TEST_TURN_URL`` + ``TBIB_TEST_TURN_SECRET`` from services.sh), else one
  of this session's own.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from tests.processes import Spawner, spawner

REPO = Path(__file__).resolve().parents[1]
SERVICES = REPO / "scripts" / "services.sh"


@dataclass(frozen=True)
class TurnServer:
    """A coturn with REST-API credentials (``use-auth-secret``): ``host:port`` on UDP and TCP, and its secret."""

    host: str
    port: int
    secret: str

    def urls(self, *transports: str) -> list[str]:
        """``turn:host:port?transport=...`` for each of ``transports`` (default: udp, then tcp)."""
        return [f"turn:{self.host}:{self.port}?transport={t}" for t in (transports or ("udp", "tcp"))]


@dataclass(frozen=True)
class Services:
    dsn: str
    mqtt_url: str
    timescaledb_version: str | None
    postgres_version: str


_summary: dict[str, str] = {}
_env: dict[str, str] = {}


def _start_services() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.startswith("TBIB_TEST_")}
    if "TBIB_TEST_DSN" in env and "TBIB_TEST_MQTT_URL" in env:
        _env.update(env)
        return env
    out = subprocess.run([str(SERVICES), "up"], check=True, capture_output=True, text=True).stdout
    for m in re.finditer(r"^export (\w+)='([^']*)'$", out, re.MULTILINE):
        env.setdefault(m.group(1), m.group(2))
    _env.update(env)
    return env


def _versions(dsn: str) -> tuple[str, str | None]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        pg = conn.execute("show server_version").fetchone()
        row = conn.execute("select default_version from pg_available_extensions where name = 'timescaledb'").fetchone()
        preload = conn.execute("show shared_preload_libraries").fetchone()
    assert pg is not None
    assert preload is not None
    tsdb = row[0] if row and "timescaledb" in str(preload[0]) else None
    return str(pg[0]), tsdb


@pytest.fixture
def spawn() -> Iterator[Spawner]:
    """``spawn(argv, **kwargs)``: a Popen reaped (TERM, KILL, wait, pipes closed) after the test, pass or fail."""
    with spawner() as s:
        yield s


@pytest.fixture(scope="session")
def services() -> Services:
    env = _start_services()
    pg, tsdb = _versions(env["TBIB_TEST_DSN"])
    _summary["postgres"] = f"PostgreSQL {pg} at {_redact(env['TBIB_TEST_DSN'])}"
    _summary["timescaledb"] = (
        f"TimescaleDB {tsdb} (Apache-2 edition)" if tsdb else "WARNING: TimescaleDB UNAVAILABLE - plain PostgreSQL only"
    )
    _summary["mqtt"] = f"Mosquitto at {env['TBIB_TEST_MQTT_URL']}"
    return Services(env["TBIB_TEST_DSN"], env["TBIB_TEST_MQTT_URL"], tsdb, pg)


def _redact(dsn: str) -> str:
    return re.sub(r"://([^:@/]+):[^@/]+@", r"://\1:***@", dsn)


def _with_db(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return parts._replace(path="/" + name).geturl()


@pytest.fixture(scope="session")
def make_database(services: Services) -> Iterator[object]:
    """Factory: ``make_database(flavour) -> dsn`` of a new empty database; all are dropped at session end."""
    created: list[str] = []

    def make(flavour: str) -> str:
        if flavour == "timescaledb" and services.timescaledb_version is None:
            pytest.skip("TimescaleDB unavailable on this machine (see the warning in the test summary)")
        name = f"tbib_t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(services.dsn, autocommit=True) as conn:
            conn.execute(f'create database "{name}"')
        created.append(name)
        dsn = _with_db(services.dsn, name)
        if flavour == "timescaledb":
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("create extension if not exists timescaledb")
        return dsn

    yield make
    with psycopg.connect(services.dsn, autocommit=True) as conn:
        for name in created:
            conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(scope="module", params=["timescaledb", "plain"])
def db_dsn(request: pytest.FixtureRequest, make_database: object) -> str:
    """A fresh database for this module, once per storage flavour."""
    return make_database(request.param)  # type: ignore[operator,no-any-return]


@pytest.fixture(scope="module")
def tsdb_dsn(make_database: object) -> str:
    return make_database("timescaledb")  # type: ignore[operator,no-any-return]


@pytest.fixture(scope="module")
def plain_dsn(make_database: object) -> str:
    return make_database("plain")  # type: ignore[operator,no-any-return]


@pytest.fixture(scope="session")
def mqtt_url(services: Services) -> str:
    return services.mqtt_url


@pytest.fixture(scope="session")
def mqtt_host_port(mqtt_url: str) -> tuple[str, int]:
    parts = urlsplit(mqtt_url)
    assert parts.hostname
    assert parts.port
    return parts.hostname, parts.port


@pytest.fixture(scope="session")
def turn_server(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TurnServer]:
    """The project's coturn (scripts/services.sh), else our own for this session (external DSN and broker given)."""
    url, secret = _env.get("TBIB_TEST_TURN_URL"), _env.get("TBIB_TEST_TURN_SECRET")
    if url and secret:
        parts = urlsplit(url.replace("turn:", "turn://", 1))
        assert parts.hostname
        assert parts.port
        _summary["turn"] = f"coturn at {parts.hostname}:{parts.port}"
        yield TurnServer(parts.hostname, parts.port, secret)
        return
    from teleconsult.signaling.coturn import Coturn, coturn_binary

    if coturn_binary() is None:
        pytest.fail("coturn is not installed: `make setup` (as root) installs it")
    with Coturn(tmp_path_factory.mktemp("coturn")) as own:
        _summary["turn"] = f"coturn at {own.listen_ip}:{own.port} (this session's own)"
        yield TurnServer(own.listen_ip, own.port, own.secret)


def pytest_sessionfinish(session: pytest.Session) -> None:
    # Under pytest-xdist the services are seen by the workers: hand their summary to the controller, which prints it.
    out = getattr(session.config, "workeroutput", None)
    if out is not None:
        out["tbib_summary"] = dict(_summary)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    for key, line in getattr(node, "workeroutput", {}).get("tbib_summary", {}).items():
        _summary.setdefault(key, line)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _summary:
        terminalreporter.section("tbib services")
        for line in _summary.values():
            terminalreporter.write_line(line)
