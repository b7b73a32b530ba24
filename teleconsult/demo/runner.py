"""The demo's orchestration: services, migrations, demo data, server, ingest, home gateways, consult agents.

Every process the demo starts is a child in its own session (Ctrl-C reaches only the demo, which then stops them in
order: agents and gateways, ingest, server, services), and stopping is bounded in every phase, start-up included
(:mod:`teleconsult.demo.processes`): the first Ctrl-C stops in order within 10 s, a second one at once. Logs go to
``<data dir>/logs/``; data stays in the data dir. The gateways are the real ``gateway_agent`` over the simulated
bleak backend (:mod:`teleconsult.demo.gateways`), each with its own broker identity, the broker ACL on.
In a real deployment the server sends the gateway a ``commands`` message to join a consultation; here the demo plays
that part: when the doctor opens a consultation, it starts ``tbib consult join`` with an agent token.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import httpx
import psycopg

from teleconsult.demo import gateways as demo_gateways
from teleconsult.demo import seed as demo_seed
from teleconsult.demo import services as demo_services
from teleconsult.demo.processes import CHILD_STOP_S, Child, Shutdown, Supervisor
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
            # The server's ICE list (the demo's coturn first): the agent also gathers a relay candidate. No simulated
            # vitals on the data channel: they would contradict the patient's own gateway, whose readings the panel
            # shows through the server's vitals websocket (an in-process agent will send the gateway's own).
            argv = [PY, "-m", "teleconsult.cli.main", "consult", "join", "--token", token, "--server", self.base_url,
                    "--no-camera"]  # fmt: skip
            self.sup.start(f"consult-{str(cid)[:8]}", argv, self.env, critical=False)
            started.append(str(cid))
        return started


def run(config: DemoConfig, out: Callable[[str], None] = print) -> int:
    """Start everything, print the URL and login, run until Ctrl-C, stop everything. Returns the exit code."""
    data = config.data_dir.resolve()
    data.mkdir(parents=True, exist_ok=True)
    sup = Supervisor(data / "logs")
    services = demo_services.Services()

    def kill_all() -> None:
        sup.kill_all()
        services.kill()

    shutdown = Shutdown(kill_all, out)
    shutdown.install()
    interrupted = False
    try:
        _start_and_watch(config, data, sup, services, out)
    except KeyboardInterrupt:
        interrupted = True
        return 0
    except DemoError as exc:
        out(f"tbib demo: error: {exc}")
        return 1
    finally:
        shutdown.begin()  # from here on, the stop is bounded (watchdog) and a second Ctrl-C ends it at once
        if interrupted:
            out("stopping …")
        killed = sup.stop_all()
        if killed:
            out(f"  killed after {CHILD_STOP_S:.0f} s without exiting: {', '.join(killed)}")
        services.stop()
        shutdown.restore()
        if interrupted:
            out(f"stopped. Data kept in {data}")
    return 0


def _start_and_watch(
    config: DemoConfig, data: Path, sup: Supervisor, services: demo_services.Services, out: Callable[[str], None]
) -> None:
    progress = Progress(6, out)
    progress.step("database and MQTT broker")
    demo_services.start(data, services, log=progress.note, mode=config.services)
    progress.done(f"{services.database_note}; {services.broker_note}; {services.turn_note}")

    progress.step("database migrations")
    from teleconsult.store.migrate import upgrade

    applied = upgrade(services.dsn)
    progress.done(f"{len(applied)} applied" if applied else "up to date")

    progress.step(f"demo doctor, {config.patients} simulated patients and their gateways' broker identities")
    secret_key, password = demo_seed.credentials(data)
    cast = demo_seed.seed(services.dsn, demo_seed.plan(config.patients), password)
    accounts = None
    if services.broker_files is not None:
        accounts = demo_gateways.enrol_all(services.dsn, cast.patients, services.broker_files)
    rows = demo_seed.backfill(services.dsn, cast.patients, config.history_hours)
    progress.done(", ".join(f"{p.name} ({p.scenario})" for p in cast.patients))
    if rows:
        progress.note(f"{rows} readings of the last {config.history_hours:g} h backfilled from the simulator")
    if accounts is not None:
        progress.note(f"broker: {len(accounts.gateways)} gateway identities and 2 service accounts, ACL on")

    def broker_url(account: str, secret: str | None) -> str:
        if secret is None:
            return services.mqtt_url
        return demo_gateways.with_credentials(services.mqtt_url, account, secret)

    progress.step("server (API, dashboard, websockets)")
    port = _port(config.host, config.port)
    base_url = f"http://{config.host}:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TBIB_TEST_", "TBIB_GATEWAY_"))}
    env.update({
        "TBIB_DATABASE_URL": services.dsn, "TBIB_SECRET_KEY": secret_key,
        "TBIB_MQTT_URL": broker_url(demo_gateways.SERVER_ACCOUNT, accounts.server_secret if accounts else None),
        "TBIB_ENV": "development", "TBIB_COOKIE_SECURE": "false", "TBIB_HOST": config.host, "TBIB_PORT": str(port),
        "TBIB_SERVER_URL": base_url,
    })  # fmt: skip
    if services.turn_urls:  # the server issues REST-API credentials for the demo's coturn (joined.iceServers)
        env.update({"TBIB_TURN_URLS": json.dumps(services.turn_urls), "TBIB_TURN_SECRET": services.turn_secret})
    server = sup.start("server", [PY, "-m", "teleconsult.cli.main", "server"], env)
    _wait_healthy(base_url, server)
    extensions = _extensions_present()
    progress.done(f"{base_url} (extensions: {', '.join(sorted(extensions)) or 'none'})")

    progress.step("ingest worker")
    ingest_env = {
        **env,
        "TBIB_MQTT_URL": broker_url(demo_gateways.INGEST_ACCOUNT, accounts.ingest_secret if accounts else None),
    }
    sup.start("ingest", [PY, "-m", "teleconsult.cli.main", "ingest", "--client-id", "tbib-demo-ingest"], ingest_env)
    progress.done("MQTT shared subscription -> database")
    if "alerts" not in extensions:
        progress.note("note: this build has no alerts extension: vitals flow, but no alert will be raised")

    progress.step(f"{len(cast.patients)} home gateways (gateway_agent over simulated Bluetooth devices)")
    gw_env = {k: v for k, v in env.items() if not k.startswith("TBIB_")}
    for p in cast.patients:
        secret = accounts.gateways[p.gateway_id] if accounts is not None else None
        files = demo_gateways.write_gateway_config(
            data / "gateways" / p.gateway_id,
            p.gateway_id,
            services.mqtt_url,
            (p.gateway_id, secret) if secret is not None else None,
        )
        argv = demo_gateways.gateway_argv(files, p, onset_s=config.onset_s, full_effect_s=config.full_effect_s)
        sup.start(p.gateway_id, argv, gw_env, critical=False)
    progress.done(
        f"deterioration starts {config.onset_s:.0f} s from now, full effect {config.full_effect_s:.0f} s later"
    )

    launcher = ConsultLauncher(services.dsn, base_url, secret_key, sup, env) if config.consult_agents else None
    out("")
    out(f"  tbib demo is running: open {base_url}/")
    out(f"  login: {cast.doctor}   password: {cast.password}")
    out(f"  patient space: {base_url}/patient   login: {cast.patient}   same password")
    out(f"  pharmacy:      {base_url}/#/pharmacy   login: {cast.pharmacist}   same password")
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
