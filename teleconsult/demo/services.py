"""Database and broker for the demo: the configured ones, else the project's own, else embedded fallbacks.

Order (each of database and broker independently):
1. ``TBIB_DATABASE_URL`` / ``TBIB_MQTT_URL`` when set: used as they are, nothing started.
2. Database: ``scripts/services.sh up postgres`` (a source checkout with PostgreSQL binaries, or root, which may
   apt-install them): the project's PostgreSQL + TimescaleDB cluster, with its state in ``<data dir>/services`` (not
   the test services' state), stopped at the end with ``services.sh down postgres``. Fallback: the pip package
   ``pgserver`` (embedded PostgreSQL 16, no TimescaleDB: the "plain" schema flavour).
3. Broker: the demo's own Mosquitto on a free loopback port with the tuned ``config/mosquitto/tbib.conf``, anonymous
   access off, and the password and ACL files that gateway enrolment writes (each gateway may publish only under its
   own topics): the demo exercises the same broker security as a deployment. There is no pure-Python fallback: amqtt
   speaks only MQTT 3.1.1 and has no shared subscriptions, which ingest needs, so without Mosquitto the demo stops.
4. TURN: the demo's own coturn (:mod:`teleconsult.signaling.coturn`) on a free loopback port, UDP and TCP, with a
   fresh REST-API secret that the demo server gets as ``turn_secret``. Without the ``coturn`` package the demo runs
   without TURN (calls on loopback need none) and says so.

Stopping is bounded: every process started here is in a session of its own (a Ctrl-C in the terminal reaches only the
demo, which then stops them in order), each stop has a timeout, and :meth:`Services.kill` ends everything at once
(immediate shutdown of PostgreSQL, SIGKILL of the broker) for the demo's second Ctrl-C or its shutdown watchdog.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import psycopg

from teleconsult.demo.processes import uninterrupted
from teleconsult.errors import TeleconsultError
from teleconsult.security.enrolment import BrokerFiles

REPO: Final = Path(__file__).resolve().parents[2]
SERVICES_SH: Final = REPO / "scripts" / "services.sh"
DEMO_DB: Final = "tbib_demo"
MOSQUITTO_CONF: Final = REPO / "config" / "mosquitto" / "tbib.conf"


class DemoError(TeleconsultError):
    """The demo cannot start (a missing service, a port in use); the message says what to do."""


@dataclass
class Services:
    """Where the demo's database and broker are, and how to stop what was started."""

    dsn: str = ""
    mqtt_url: str = ""
    database_note: str = ""
    broker_note: str = ""
    stoppers: list[Callable[[], None]] = field(default_factory=list)
    killers: list[Callable[[], None]] = field(default_factory=list)
    """Each ends one started service at once, without waiting (safe to call from a signal handler or a thread)."""
    broker_files: BrokerFiles | None = None
    """The demo broker's password/ACL files (None: an external broker, credentials not managed by the demo)."""
    turn_urls: list[str] = field(default_factory=list)
    """The demo coturn's URLs (UDP, then TCP); empty without TURN."""
    turn_secret: str = ""
    turn_note: str = ""

    def stop(self) -> None:
        """Stop what the demo started (data stays on disk); each stop has its own timeout."""
        for stop in reversed(self.stoppers):
            with contextlib.suppress(Exception):
                stop()
        self.stoppers.clear()

    def kill(self) -> None:
        """End every started service now (PostgreSQL: immediate shutdown, recovered at the next start)."""
        for kill in reversed(self.killers):
            with contextlib.suppress(Exception):
                kill()


def postmaster_pid(pgdata: Path) -> int | None:
    """The pid in ``pgdata/postmaster.pid`` if that process is alive."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        time.sleep(0.05)
    return False


def stop_postgres(pgdata: Path, timeout: float = 5.0) -> None:
    """Fast shutdown (SIGINT: sessions end, checkpoint); immediate (SIGQUIT) when that takes longer than ``timeout``.

    The postmaster's signals are PostgreSQL's documented shutdown interface (``pg_ctl stop -m fast|immediate`` sends
    the same); immediate shutdown is crash-safe: the next start replays the WAL.
    """
    pid = postmaster_pid(pgdata)
    if pid is None:
        return
    os.kill(pid, signal.SIGINT)
    if not _wait_gone(pid, timeout):
        kill_postgres(pgdata)


def kill_postgres(pgdata: Path) -> None:
    """Immediate shutdown of the cluster in ``pgdata`` (SIGQUIT to the postmaster, which ends its backends)."""
    pid = postmaster_pid(pgdata)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)
        if not _wait_gone(pid, 2.0):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


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


def _services_sh(data_dir: Path, what: str, component: str = "postgres") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TBIB_TEST_")}
    env["TBIB_CACHE_DIR"] = str(data_dir)
    # stderr goes to the terminal: a first run may install packages and build TimescaleDB (minutes), say so live.
    # Its own session: an interrupted start-up kills the script and everything it spawned (apt-get, the build).
    proc: subprocess.Popen[str] | None = None
    try:
        with uninterrupted():
            proc = subprocess.Popen(  # noqa: S603 - our own script
                [str(SERVICES_SH), what, component], env=env, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                text=True, start_new_session=True,
            )  # fmt: skip
        stdout, _ = proc.communicate(timeout=1800)
    except BaseException:
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        raise
    if proc.returncode != 0:
        raise DemoError(f"scripts/services.sh {what} failed (exit {proc.returncode}): see its messages above")
    return dict(re.findall(r"^export (\w+)='([^']*)'$", stdout, re.MULTILINE))


def mosquitto_binary() -> str | None:
    """The Mosquitto executable, if installed."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").is_file() else None


def start_mosquitto(data_dir: Path, services: Services, *, auth: bool = True) -> None:
    """Our own Mosquitto on a free loopback port: tuned config, no anonymous access, password and ACL files.

    The files start empty (nobody may connect); :func:`teleconsult.security.enrolment.sync_broker` fills them once the
    accounts exist and SIGHUPs the broker. Sets ``services.mqtt_url``/``broker_files`` and registers its stop/kill.
    ``auth=False`` (tests): anonymous access, no files.
    """
    binary = mosquitto_binary()
    if binary is None:
        raise DemoError(
            "no MQTT broker: install Mosquitto (`apt-get install mosquitto`, or `make setup` as root) or set "
            "TBIB_MQTT_URL. The pure-Python amqtt broker is not a fallback: it speaks only MQTT 3.1.1 and has no "
            "shared subscriptions, which the ingest workers use."
        )
    home = data_dir / "mosquitto"
    (home / "data").mkdir(parents=True, exist_ok=True)
    files = BrokerFiles(passwd_file=home / "passwd", acl_file=home / "acl", pid_file=home / "mosquitto.pid")
    for path in (files.passwd_file, files.acl_file):
        path.touch(mode=0o600)
    port = free_port()
    conf = home / "mosquitto.conf"
    base = MOSQUITTO_CONF.read_text() if MOSQUITTO_CONF.is_file() else ""
    # As root, Mosquitto drops to the "mosquitto" user and could no longer read the password/ACL files that the demo
    # (as root) rewrites on enrolment, nor write its pid file: the demo broker keeps the demo's own user instead.
    # A deployment runs the broker as its own user, with the files written group-readable for it.
    run_as = "user root\n" if os.geteuid() == 0 else ""
    conf.write_text(
        f"{base}\n# written by tbib demo\n{run_as}persistence_location {home / 'data'}/\n"
        f"log_dest file {home / 'mosquitto.log'}\npid_file {files.pid_file}\nlistener {port} 127.0.0.1\n"
        + (
            f"allow_anonymous false\npassword_file {files.passwd_file}\nacl_file {files.acl_file}\n"
            if auth
            else "allow_anonymous true\n"
        )
    )
    with uninterrupted():
        proc = subprocess.Popen(  # noqa: S603
            [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip

        def kill() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        def stop() -> None:
            proc.terminate()
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                kill()
                proc.wait(2)

        services.stoppers.append(stop)
        services.killers.append(kill)
    services.mqtt_url = f"mqtt://127.0.0.1:{port}"
    services.broker_files = files if auth else None
    services.broker_note = "Mosquitto (demo instance, ACL on)" if auth else "Mosquitto (anonymous)"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        if proc.poll() is not None:
            raise DemoError(f"mosquitto exited with {proc.returncode}; see {home / 'mosquitto.log'}")
        time.sleep(0.1)
    raise DemoError("mosquitto did not start listening within 10 s")


def start_coturn(data_dir: Path, services: Services) -> None:
    """The demo's coturn (loopback, UDP + TCP, a fresh secret); registers its stop/kill. No coturn: a note only."""
    from teleconsult.signaling.coturn import Coturn, CoturnError, coturn_binary

    if coturn_binary() is None:
        services.turn_note = "no TURN (install the coturn package: `make setup` as root)"
        return
    turn = Coturn(data_dir / "coturn", realm="tbib.demo")
    with uninterrupted():
        services.stoppers.append(turn.stop)
        services.killers.append(turn.kill)
        try:
            turn.start()
        except CoturnError as exc:
            raise DemoError(str(exc)) from exc
    services.turn_urls, services.turn_secret = turn.urls, turn.secret
    services.turn_note = f"coturn on {turn.listen_ip}:{turn.port} (UDP and TCP)"


def _pgserver(pgdata: Path) -> Any:
    from pgserver import get_server  # type: ignore[attr-defined]

    with warnings.catch_warnings():  # platformdirs warns about a missing XDG_RUNTIME_DIR (root, containers)
        warnings.simplefilter("ignore")
        try:
            return get_server(pgdata, cleanup_mode=None)  # we stop it ourselves, with a timeout
        except subprocess.TimeoutExpired as exc:
            raise DemoError(f"the embedded PostgreSQL did not start in time; see {pgdata / 'log'}") from exc
        except subprocess.CalledProcessError as exc:
            raise DemoError(f"the embedded PostgreSQL failed to start (exit {exc.returncode}); see {pgdata}") from exc


def start_pgserver(data_dir: Path, services: Services) -> str:
    """An embedded PostgreSQL (pip package pgserver; plain flavour, no TimescaleDB); its stop/kill go to ``services``.

    The first start initialises the cluster in a temporary directory renamed into place only when complete, so a
    start-up interrupted during ``initdb`` never leaves a half-made cluster behind for the next run.
    """
    try:
        with warnings.catch_warnings():  # platformdirs warns about a missing XDG_RUNTIME_DIR (root, containers)
            warnings.simplefilter("ignore")
            import pgserver  # noqa: F401
    except ImportError as exc:
        raise DemoError(
            "no PostgreSQL: install the Debian packages (`make setup` as root), `pip install pgserver`, "
            "or set TBIB_DATABASE_URL"
        ) from exc
    pgdata = data_dir / "pgserver"
    fresh = pgdata.with_name("pgserver.init")
    # Registered before anything starts: an interrupt at any point stops what did start.
    for path in (fresh, pgdata):
        services.stoppers.append(functools.partial(stop_postgres, path))
        services.killers.append(functools.partial(kill_postgres, path))
    if not (pgdata / "PG_VERSION").is_file():
        stop_postgres(fresh, timeout=2.0)
        shutil.rmtree(fresh, ignore_errors=True)
        shutil.rmtree(pgdata, ignore_errors=True)
        _pgserver(fresh)
        stop_postgres(fresh)
        fresh.rename(pgdata)
    server = _pgserver(pgdata)
    return ensure_database(server.get_uri("postgres"), timescaledb=False)


def _check_mode(mode: str, usable: bool) -> None:
    if mode == "project" and not usable:
        raise DemoError("scripts/services.sh is unusable here (not a source checkout, or no PostgreSQL and not root)")


def start(data_dir: Path, services: Services, *, log: Callable[[str], None], mode: str = "auto") -> None:
    """Find or start the database and the broker (see the module docstring), filling ``services``.

    ``mode``: ``auto`` (the order above), ``project`` (``scripts/services.sh`` or fail), ``embedded`` (skip it).
    ``services`` belongs to the caller from the start, so that an interrupt at any point can stop what did start.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    dsn = os.environ.get("TBIB_DATABASE_URL")
    mqtt = os.environ.get("TBIB_MQTT_URL")
    services.dsn, services.mqtt_url = dsn or "", mqtt or ""
    services.database_note, services.broker_note = "TBIB_DATABASE_URL", "TBIB_MQTT_URL (credentials not managed)"
    try:
        usable = SERVICES_SH.is_file() and (_pg_binaries() or os.geteuid() == 0)
        _check_mode(mode, usable)
        if dsn is None and usable and mode != "embedded":
            log("project PostgreSQL + TimescaleDB (scripts/services.sh up postgres)")
            services.stoppers.append(lambda: stop_postgres(data_dir / "services" / "pgdata"))
            services.killers.append(lambda: kill_postgres(data_dir / "services" / "pgdata"))
            exports = _services_sh(data_dir, "up")
            tsdb = exports.get("TBIB_TIMESCALEDB") == "1"
            services.dsn = ensure_database(exports["TBIB_TEST_DSN"], timescaledb=tsdb)
            services.database_note = "PostgreSQL + TimescaleDB (project cluster)" if tsdb else "PostgreSQL (plain)"
        elif dsn is None:
            log("embedded PostgreSQL (pgserver, plain flavour without TimescaleDB)")
            services.dsn = start_pgserver(data_dir, services)
            services.database_note = "embedded PostgreSQL (pgserver)"
        if mqtt is None:
            start_mosquitto(data_dir, services)
        start_coturn(data_dir, services)
    except BaseException:
        services.stop()
        raise
