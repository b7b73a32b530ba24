"""Gateway status over MQTT (retained ``online``/``offline``, the gateway's Last Will) reaches the engine leader:
"gateway_offline" is raised for the gateway's patient and cleared when it is back; no-data alerts name the cause."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from websockets.asyncio.client import connect

from teleconsult.api.app import create_app
from teleconsult.api.extensions.alerts import extension as alerts_extension
from teleconsult.bench.ingest import Broker
from teleconsult.store.migrate import upgrade
from tests.teleconsult.alerts.helpers import recv_alerts, recv_json
from tests.teleconsult.api.helpers import LiveServer, login, make_settings, seed

pytestmark = pytest.mark.slow


@pytest.fixture
def broker() -> Iterator[Broker]:
    b = Broker()
    try:
        yield b
    finally:
        b.close()


def publish_status(broker: Broker, gateway: str, state: str) -> None:
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    client.publish(f"tbib/v1/gw/{gateway}/status", state.encode(), qos=1, retain=True).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()


async def test_gateway_offline_then_online(tsdb_dsn: str, broker: Broker) -> None:
    upgrade(tsdb_dsn)
    cast = seed(tsdb_dsn, prefix="gs")
    with psycopg.connect(tsdb_dsn, autocommit=True) as conn:
        conn.execute("insert into gateways (id, patient_id) values ('gw-status-1', %s)", (cast.p1,))
        conn.execute(
            "insert into alert_profiles (patient_id, config) values (%s, %s)",
            (cast.p1, json.dumps({"expected_intervals_s": {"body_weight": 2}})),
        )
    ext = {"alerts": {"heartbeat_s": 0.5, "gateway_offline_s": 1.0, "no_data_grace_s": 0.0}}
    app = create_app(make_settings(tsdb_dsn, mqtt_url=broker.url, ext=ext), extensions=[alerts_extension])
    with LiveServer(app) as server:
        deadline = time.monotonic() + 20
        while not (app.state.alert_engine and app.state.alert_engine.leader.is_set()):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        token = login(server.url, "gs-doctor")
        async with connect(f"{server.url.replace('http', 'ws', 1)}/ws/v1/alerts?token={token}") as ws:
            await recv_json(ws)
            # the weight was never measured with the gateway online (or unknown): "not measured"
            first = await recv_alerts(ws, 1)
            assert first[0]["alert"]["rule"] == "no_data:body_weight"
            assert first[0]["alert"]["details"]["cause"] == "not_measured"
            publish_status(broker, "gw-status-1", "offline")  # what the broker sends as the Last Will
            frames = await recv_alerts(ws, 1)
            assert frames[0]["event"] == "raised"
            assert frames[0]["alert"]["rule"] == "gateway_offline"
            assert frames[0]["alert"]["details"]["gateway_id"] == "gw-status-1"
            publish_status(broker, "gw-status-1", "online")
            frames = await recv_alerts(ws, 1)
            assert (frames[0]["event"], frames[0]["alert"]["rule"]) == ("cleared", "gateway_offline")
