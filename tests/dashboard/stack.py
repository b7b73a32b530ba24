"""The whole pipeline for browser tests: server (all extensions) on uvicorn, ingest worker, simulated gateways.

gateway (simulated devices, scenario) -> Mosquitto -> ingest -> PostgreSQL -> alert engine + live feeds -> browser.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from teleconsult.api.app import create_app
from teleconsult.demo import seed as demo_seed
from teleconsult.demo.gateways import gateway_argv, write_gateway_config
from tests.teleconsult.api.helpers import LiveServer, make_settings

PASSWORD = "dashboard-test-password"


@dataclass
class Stack:
    dsn: str
    mqtt_url: str
    workdir: Path
    server: LiveServer | None = None
    cast: demo_seed.DemoCast | None = None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    @property
    def app(self) -> Any:
        assert self.server is not None
        return self.server.config.app

    def start(
        self,
        scenarios: tuple[str, ...],
        *,
        onset_s: float = 2.0,
        full_effect_s: float = 20.0,
        history_hours: float = 24,
    ) -> Stack:
        patients = [
            demo_seed.DemoPatient(p.index, p.patient_id, p.name, scenarios[p.index], p.gateway_id, p.seed)
            for p in demo_seed.plan(len(scenarios))
        ]
        self.cast = demo_seed.seed(self.dsn, patients, PASSWORD)
        demo_seed.backfill(self.dsn, patients, history_hours)  # as `tbib demo` does: charts with a past
        settings = make_settings(
            self.dsn,
            mqtt_url=self.mqtt_url,
            cookie_secure=False,
            db_pool_max_size=10,
            ext={"dashboard": {"live_interval_s": 1.0}, "alerts": {"heartbeat_s": 5.0}},
        )
        self.server = LiveServer(create_app(settings)).__enter__()
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        py = [sys.executable, "-m"]
        self._spawn(
            "ingest",
            [*py, "teleconsult.cli.main", "ingest", "--dsn", self.dsn, "--mqtt-url", self.mqtt_url,
             "--client-id", f"dash-ingest-{self.workdir.name}"],
        )  # fmt: skip
        for p in patients:
            d = self.workdir / p.gateway_id
            d.mkdir(exist_ok=True)
            files = write_gateway_config(d, p.gateway_id, self.mqtt_url)
            self._spawn(p.gateway_id, gateway_argv(files, p, onset_s=onset_s, full_effect_s=full_effect_s))
        return self

    def _spawn(self, name: str, argv: list[str]) -> None:
        with (self.workdir / "logs" / f"{name}.log").open("ab") as log:  # the child keeps its own descriptor
            self.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        self._spawn(name, argv)
        return self.procs[-1]

    def token(self) -> str:
        assert self.cast is not None
        r = httpx.post(f"{self.url}/api/v1/auth/login", json={"username": self.cast.doctor, "password": PASSWORD})
        r.raise_for_status()
        return str(r.json()["access_token"])

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 10
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()  # reaped: no "still running" ResourceWarning in a later test
        if self.server is not None:
            self.server.__exit__(None, None, None)
