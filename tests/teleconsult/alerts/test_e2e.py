"""End to end: simulated gateway (deterioration scenario "hypoxia") -> private Mosquitto -> `tbib ingest` ->
TimescaleDB -> alert engine -> ``/ws/v1/alerts``: the assigned doctor receives the alert, an unassigned doctor not."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from teleconsult.api.app import create_app
from teleconsult.api.extensions.alerts import extension as alerts_extension
from teleconsult.bench.ingest import Broker
from teleconsult.demo.gateways import gateway_argv, write_gateway_config
from teleconsult.demo.seed import DOCTOR, plan, seed
from teleconsult.store.migrate import upgrade
from tests.teleconsult.alerts.helpers import quiet, recv_alerts, recv_json
from tests.teleconsult.api.helpers import PASSWORD, LiveServer, login, make_settings
from tests.teleconsult.api.helpers import seed as seed_cast

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[3]


def spawn(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


@pytest.fixture
def broker() -> Iterator[Broker]:
    b = Broker()
    try:
        yield b
    finally:
        b.close()


async def test_hypoxia_scenario_alerts_assigned_doctor_only(tsdb_dsn: str, broker: Broker, tmp_path: Path) -> None:
    upgrade(tsdb_dsn)
    patients = plan(2)  # 0: stable, 1: hypoxia
    hypoxia = patients[1]
    assert hypoxia.scenario == "hypoxia"
    seed(tsdb_dsn, [hypoxia], PASSWORD)
    seed_cast(tsdb_dsn, prefix="e2e")  # an unrelated cast: e2e-doctor is not on the hypoxia patient's care team
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ingest = ["teleconsult.cli.main", "ingest", "--dsn", tsdb_dsn, "--mqtt-url", broker.url]
        procs.append(spawn([*ingest, "--client-id", "e2e-ingest", "--linger-ms", "20"]))
        settings = make_settings(tsdb_dsn, mqtt_url=broker.url, ext={"alerts": {"heartbeat_s": 1.0}})
        app = create_app(settings, extensions=[alerts_extension])
        with LiveServer(app) as server:
            ws_url = server.url.replace("http", "ws", 1)
            doctor, other = login(server.url, DOCTOR), login(server.url, "e2e-doctor")
            async with (
                connect(f"{ws_url}/ws/v1/alerts?token={doctor}") as ws,
                connect(f"{ws_url}/ws/v1/alerts?token={other}") as ws_other,
            ):
                assert (await recv_json(ws))["patients"] == 1
                assert (await recv_json(ws_other))["patients"] == 1  # p1 of the other cast
                files = write_gateway_config(tmp_path / "gw", hypoxia.gateway_id, broker.url)
                argv = gateway_argv(files, hypoxia, onset_s=2, full_effect_s=20)
                procs.append(spawn(argv[2:]))  # spawn() adds the interpreter and -m
                frames = await recv_alerts(ws, 1, wait=90)
                alert = frames[0]["alert"]
                assert frames[0]["event"] == "raised"
                assert alert["patient_id"] == str(hypoxia.patient_id)
                assert alert["rule"] in {"spo2", "spo2_falling", "news2", "heart_rate", "respiratory_rate"}
                assert [f for f in await quiet(ws_other, 2.0) if f["type"] == "alert"] == []
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
