"""Database and broker for the demo: the configured ones, else the project's own, else embedded fallbacks.

Order (each of database and broker independently):
1. ``TBIB_DATABASE_URL`` / ``TBIB_MQTT_URL`` when set: used as they are, nothing started.
2. ``scripts/services.sh`` (a source checkout with PostgreSQL binaries, or root, which may apt-install them): the
   project's PostgreSQL + TimescaleDB cluster and tuned Mosquitto, with their state in ``<data dir>/services`` (not
   the test services' state), stopped at the end with ``services.sh down``.
3. Fallbacks: the pip package ``pgserver`` (embedded PostgreSQL 16, no TimescaleDB: the "plain" schema flavour) and a
   ``mosquitto`` binary started on a free port. There is no pure-Python fallback for the broker: amqtt speaks only
   MQTT 3.1.1 and has no shared subscriptions, which ingest needs, so without Mosquitto the demo stops with a message.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import psycopg

from teleconsult.errors import TeleconsultError

REPO: Final = Path(__file__).resolve().parents[2]
SERVICES_SH: Final = REPO / "scripts" / "services.sh"
DEMO_DB: Final = "tbib_demo"
MOSQUITTO_CONF: Final = REPO / "config" / "mosquitto" / "tbib.conf"


class DemoError(TeleconsultError):
    """The demo cannot start (a missing service, a port in use); the message says what to do."""


@dataclass
class Services:
    """Where the demo's database and broker are, and how to stop what was started."""

    dsn: str
    mqtt_url: str
    database_note: str
    broker_note: str
    stoppers: list[Callable[[], None]] = field(default_factory=list)

    def stop(self) -> None:
        """Stop what the demo started (data stays on disk)."""
        for stop in reversed(self.stoppers):
            with contextlib.suppress(Exception):
                stop()
        self.stoppers.clear()


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _pg_binaries() -> bool:
    if shutil.which("pg_config"):
        return True
    return any(Path("/usr/lib/postgresql").glob("*/bin/initdb"))


def _with_database(dsn: str, name: str) -> str:
    return urlsplit(dsn)._replace(path="/" + name).geturl()


def ensure_database(admin_dsn: str, timescaledb: bool) -> str:
    """Create the demo database in a cluster (idempotent); returns its DSN."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        if conn.execute("select 1 from pg_database where datname = %s", (DEMO_DB,)).fetchone() is None:
            conn.execute(f'create database "{DEMO_DB}"')
    dsn = _with_database(admin_dsn, DEMO_DB)
    if timescaledb:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("create extension if not exists timescaledb")
    return dsn


def _services_sh(data_dir: Path, what: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TBIB_TEST_")}
    env["TBIB_CACHE_DIR"] = str(data_dir)
    # stderr goes to the terminal: a first run may install packages and build TimescaleDB (minutes), say so live.
    proc = subprocess.run(  # noqa: S603 - our own script
        [str(SERVICES_SH), what], env=env, stdout=subprocess.PIPE, text=True, check=False, timeout=1800
    )
    if proc.returncode != 0:
        raise DemoError(f"scripts/services.sh {what} failed (exit {proc.returncode}): see its messages above")
    return dict(re.findall(r"^export (\w+)='([^']*)'$", proc.stdout, re.MULTILINE))


def _stop_services_sh(data_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TBIB_TEST_")}
    env["TBIB_CACHE_DIR"] = str(data_dir)
    subprocess.run([str(SERVICES_SH), "down"], env=env, capture_output=True, check=False, timeout=120)  # noqa: S603


def mosquitto_binary() -> str | None:
    """The Mosquitto executable, if installed."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").is_file() else None


def start_mosquitto(data_dir: Path) -> tuple[str, Callable[[], None]]:
    """Our own Mosquitto on a free loopback port (config from config/mosquitto/tbib.conf)."""
    binary = mosquitto_binary()
    if binary is None:
        raise DemoError(
            "no MQTT broker: install Mosquitto (`apt-get install mosquitto`, or `make setup` as root) or set "
            "TBIB_MQTT_URL. The pure-Python amqtt broker is not a fallback: it speaks only MQTT 3.1.1 and has no "
            "shared subscriptions, which the ingest workers use."
        )
    home = data_dir / "mosquitto"
    (home / "data").mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = home / "mosquitto.conf"
    base = MOSQUITTO_CONF.read_text() if MOSQUITTO_CONF.is_file() else ""
    conf.write_text(
        f"{base}\n# written by tbib demo\npersistence_location {home / 'data'}/\n"
        f"log_dest file {home / 'mosquitto.log'}\nlistener {port} 127.0.0.1\nallow_anonymous true\n"
    )
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            break
        if proc.poll() is not None:
            raise DemoError(f"mosquitto exited with {proc.returncode}; see {home / 'mosquitto.log'}")
        time.sleep(0.1)
    else:
        proc.kill()
        raise DemoError("mosquitto did not start listening within 10 s")

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()

    return f"mqtt://127.0.0.1:{port}", stop


def start_pgserver(data_dir: Path) -> tuple[str, Callable[[], None]]:
    """An embedded PostgreSQL (pip package pgserver; plain flavour, no TimescaleDB)."""
    try:
        from pgserver import get_server  # type: ignore[attr-defined]
    except ImportError as exc:
        raise DemoError(
            "no PostgreSQL: install the Debian packages (`make setup` as root), `pip install pgserver`, "
            "or set TBIB_DATABASE_URL"
        ) from exc
    with warnings.catch_warnings():  # platformdirs warns about a missing XDG_RUNTIME_DIR (root, containers)
        warnings.simplefilter("ignore")
        server = get_server(data_dir / "pgserver", cleanup_mode="stop")
    return ensure_database(server.get_uri("postgres"), timescaledb=False), server.cleanup


def _check_mode(mode: str, usable: bool) -> None:
    if mode == "project" and not usable:
        raise DemoError("scripts/services.sh is unusable here (not a source checkout, or no PostgreSQL and not root)")


def start(data_dir: Path, *, log: Callable[[str], None], mode: str = "auto") -> Services:
    """Find or start the database and the broker (see the module docstring).

    ``mode``: ``auto`` (the order above), ``project`` (``scripts/services.sh`` or fail), ``embedded`` (skip it).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    dsn = os.environ.get("TBIB_DATABASE_URL")
    mqtt = os.environ.get("TBIB_MQTT_URL")
    services = Services(dsn or "", mqtt or "", "TBIB_DATABASE_URL", "TBIB_MQTT_URL")
    try:
        usable = SERVICES_SH.is_file() and (_pg_binaries() or os.geteuid() == 0)
        _check_mode(mode, usable)
        if (dsn is None or mqtt is None) and usable and mode != "embedded":
            log("project services (scripts/services.sh): PostgreSQL + TimescaleDB, Mosquitto")
            exports = _services_sh(data_dir, "up")
            services.stoppers.append(lambda: _stop_services_sh(data_dir))
            if dsn is None:
                tsdb = exports.get("TBIB_TIMESCALEDB") == "1"
                services.dsn = ensure_database(exports["TBIB_TEST_DSN"], timescaledb=tsdb)
                services.database_note = "PostgreSQL + TimescaleDB (project cluster)" if tsdb else "PostgreSQL (plain)"
            if mqtt is None:
                services.mqtt_url = exports["TBIB_TEST_MQTT_URL"]
                services.broker_note = "Mosquitto (project config)"
            return services
        if dsn is None:
            log("embedded PostgreSQL (pgserver, plain flavour without TimescaleDB)")
            services.dsn, stop_pg = start_pgserver(data_dir)
            services.stoppers.append(stop_pg)
            services.database_note = "embedded PostgreSQL (pgserver)"
        if mqtt is None:
            services.mqtt_url, stop_mq = start_mosquitto(data_dir)
            services.stoppers.append(stop_mq)
            services.broker_note = "Mosquitto (demo instance)"
    except BaseException:
        services.stop()
        raise
    return services
