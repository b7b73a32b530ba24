"""The demo's orchestration: services, migrations, demo data, server, ingest, simulated gateways, consult agents.

Every process the demo starts is a child in its own session (Ctrl-C reaches only the demo, which then stops them in
order: agents and gateways, ingest, server, services). Logs go to ``<data dir>/logs/``; data stays in the data dir.
In a real deployment the server sends the gateway a ``commands`` message to join a consultation; here the demo plays
that part: when the doctor opens a consultation, it starts ``tbib consult join`` with an agent token.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Final

import httpx
import psycopg

from teleconsult.demo import seed as demo_seed
from teleconsult.demo import services as demo_services
from teleconsult.demo.services import DemoError

PY: Final = sys.executable


@dataclass(frozen=True)
class DemoConfig:
    """Options of ``tbib demo``."""

    data_dir: Path
    patients: int = 6
    host: str = "127.0.0.1"
    port: int = 8000
    """0 or a busy port: a free one is picked."""
    onset_s: float = 20.0
    full_effect_s: float = 90.0
    consult_agents: bool = True
    services: str = "auto"
    history_hours: float = 24.0
    """Readings backfilled before the start (from the same simulator, straight into the database); 0: none."""
    """auto, project (scripts/services.sh) or embedded (pgserver + a mosquitto process)."""


@dataclass
class Child:
    """A process the demo started."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    critical: bool = True


@dataclass
class Supervisor:
    """Starts children with their logs and stops them in reverse order."""

    log_dir: Path
    children: list[Child] = field(default_factory=list)
    _files: list[IO[bytes]] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str], *, critical: bool = True) -> Child:
        """Start ``argv`` in its own session, stdout+stderr to ``logs/<name>.log``."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        path = self.log_dir / f"{name}.log"
        f = path.open("ab")
        self._files.append(f)
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
            argv, env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        child = Child(name, proc, path, critical)
        self.children.append(child)
        return child

    def dead(self) -> list[Child]:
        """Children that exited (and are not yet reported)."""
        return [c for c in self.children if c.proc.poll() is not None]

    def forget(self, child: Child) -> None:
        """Stop tracking an exited child."""
        self.children.remove(child)

    def stop_all(self, timeout: float = 8.0) -> None:
        """SIGTERM in reverse start order, then SIGKILL what did not exit."""
        for child in reversed(self.children):
            if child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in reversed(self.children):
            remaining = max(0.1, deadline - time.monotonic())
            try:
                child.proc.wait(remaining)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait(5)
        self.children.clear()
        for f in self._files:
            f.close()
        self._files.clear()


class Progress:
    """Numbered start-up steps with their duration (a plain line per step: works in any terminal and in logs)."""

    def __init__(self, total: int, out: Callable[[str], None]) -> None:
        self.total = total
        self.n = 0
        self.out = out
        self.t0 = 0.0

    def step(self, text: str) -> None:
        self.n += 1
        self.t0 = time.monotonic()
        self.out(f"[{self.n}/{self.total}] {text} …")

    def done(self, detail: str = "") -> None:
        took = time.monotonic() - self.t0
        self.out(f"      ok ({took:.1f} s){' — ' + detail if detail else ''}")

    def note(self, text: str) -> None:
        self.out(f"      {text}")


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _port(host: str, wanted: int) -> int:
    if wanted:
        import socket

        with socket.socket() as s:
            try:
                s.bind((host, wanted))
            except OSError:
                return demo_services.free_port()
            return wanted
    return demo_services.free_port()


def _wait_healthy(url: str, child: Child, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise DemoError(f"the server exited with {child.proc.returncode}:\n{_tail(child.log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        time.sleep(0.2)
    raise DemoError(f"the server did not become healthy within {timeout:.0f} s:\n{_tail(child.log)}")


def _extensions_present() -> set[str]:
    from teleconsult.api.app import discover_extensions

    return {e.name for e in discover_extensions()}


def _check_critical(child: Child, out: Callable[[str], None]) -> None:
    if child.critical:
        out(_tail(child.log))
        raise DemoError(f"{child.name} stopped; the demo cannot continue")


class ConsultLauncher:
    """Starts the patient's agent (``tbib consult join``) for each new consultation of a demo patient."""

    def __init__(self, dsn: str, base_url: str, secret_key: str, sup: Supervisor, env: dict[str, str]) -> None:
        from teleconsult.api.extensions.signaling import signaling_config
        from teleconsult.settings import Settings

        self.dsn = dsn
        self.base_url = base_url
        self.key = signaling_config(Settings(secret_key=secret_key, database_url=dsn)).token_key
        self.sup = sup
        self.env = env
        self.seen: set[uuid.UUID] = set()
        self.since = datetime.now(UTC)

    def poll(self) -> list[str]:
        from teleconsult.signaling.tokens import Role, issue_token

        started = []
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            rows = conn.execute(
                "select id, patient_id from consultations where created_at >= %s and ended_at is null",
                (self.since,),
            ).fetchall()
        for cid, pid in rows:
            if cid in self.seen:
                continue
            self.seen.add(cid)
            token = issue_token(
                key=self.key, consultation_id=str(cid), role=Role.AGENT, subject=f"gateway-of-{pid}",
                now=datetime.now(UTC),
            )  # fmt: skip
            argv = [PY, "-m", "teleconsult.cli.main", "consult", "join", "--token", token, "--server", self.base_url,
                    "--no-camera", "--no-ice-servers", "--demo-vitals", "1"]  # fmt: skip
            self.sup.start(f"consult-{str(cid)[:8]}", argv, self.env, critical=False)
            started.append(str(cid))
        return started


def run(config: DemoConfig, out: Callable[[str], None] = print) -> int:
    """Start everything, print the URL and login, run until Ctrl-C, stop everything. Returns the exit code."""
    data = config.data_dir.resolve()
    data.mkdir(parents=True, exist_ok=True)
    sup = Supervisor(data / "logs")
    progress = Progress(6, out)
    services: demo_services.Services | None = None
    interrupted = False

    def on_term(_sig: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        progress.step("database and MQTT broker")
        services = demo_services.start(data, log=progress.note, mode=config.services)
        progress.done(f"{services.database_note}; {services.broker_note}")

        progress.step("database migrations")
        from teleconsult.store.migrate import upgrade

        applied = upgrade(services.dsn)
        progress.done(f"{len(applied)} applied" if applied else "up to date")

        progress.step(f"demo doctor and {config.patients} simulated patients")
        secret_key, password = demo_seed.credentials(data)
        cast = demo_seed.seed(services.dsn, demo_seed.plan(config.patients), password)
        rows = demo_seed.backfill(services.dsn, cast.patients, config.history_hours)
        progress.done(", ".join(f"{p.name} ({p.scenario})" for p in cast.patients))
        if rows:
            progress.note(f"{rows} readings of the last {config.history_hours:g} h backfilled from the simulator")

        progress.step("server (API, dashboard, websockets)")
        port = _port(config.host, config.port)
        base_url = f"http://{config.host}:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TBIB_TEST_", "TBIB_GATEWAY_"))}
        env.update({
            "TBIB_DATABASE_URL": services.dsn, "TBIB_MQTT_URL": services.mqtt_url, "TBIB_SECRET_KEY": secret_key,
            "TBIB_ENV": "development", "TBIB_COOKIE_SECURE": "false", "TBIB_HOST": config.host, "TBIB_PORT": str(port),
            "TBIB_SERVER_URL": base_url,
        })  # fmt: skip
        server = sup.start("server", [PY, "-m", "teleconsult.cli.main", "server"], env)
        _wait_healthy(base_url, server)
        extensions = _extensions_present()
        progress.done(f"{base_url} (extensions: {', '.join(sorted(extensions)) or 'none'})")

        progress.step("ingest worker")
        sup.start("ingest", [PY, "-m", "teleconsult.cli.main", "ingest", "--client-id", "tbib-demo-ingest"], env)
        progress.done("MQTT shared subscription -> database")
        if "alerts" not in extensions:
            progress.note("note: this build has no alerts extension: vitals flow, but no alert will be raised")

        progress.step(f"{len(cast.patients)} simulated gateways")
        for p in cast.patients:
            gw_dir = data / "gateways" / p.gateway_id
            gw_dir.mkdir(parents=True, exist_ok=True)
            argv = [PY, "-m", "teleconsult.demo.simgateway", "--gateway-id", p.gateway_id, "--scenario", p.scenario,
                    "--seed", str(p.seed), "--onset", str(config.onset_s), "--full-effect-s", str(config.full_effect_s),
                    "--broker", services.mqtt_url, "--outbox", str(gw_dir / "outbox.sqlite"),
                    "--status-file", str(gw_dir / "status.json")]  # fmt: skip
            sup.start(p.gateway_id, argv, env, critical=False)
        progress.done(
            f"deterioration starts {config.onset_s:.0f} s from now, full effect {config.full_effect_s:.0f} s later"
        )

        launcher = ConsultLauncher(services.dsn, base_url, secret_key, sup, env) if config.consult_agents else None
        out("")
        out(f"  tbib demo is running: open {base_url}/")
        out(f"  login: {cast.doctor}   password: {cast.password}")
        out(f"  data and logs: {data}   (Ctrl-C to stop; the data is kept)")
        out("")
        while True:
            time.sleep(1.0)
            for child in sup.dead():
                out(f"  ! {child.name} exited with {child.proc.returncode} (log: {child.log})")
                _check_critical(child, out)
                sup.forget(child)
            if launcher is not None:
                for cid in launcher.poll():
                    out(f"  consultation {cid[:8]}: the patient's gateway agent is joining the waiting room")
    except KeyboardInterrupt:
        interrupted = True
        return 0
    except DemoError as exc:
        out(f"tbib demo: error: {exc}")
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        if interrupted:
            out("stopping …")
        sup.stop_all()
        if services is not None:
            services.stop()
        if interrupted:
            out(f"stopped. Data kept in {data}")
