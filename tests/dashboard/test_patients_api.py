"""The clinician-facing patient API on a real uvicorn and a real database (both storage flavours)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
import websockets

from tests.dashboard.helpers import Cast, insert_readings, raise_alert
from tests.teleconsult.api.helpers import LiveServer, login


@pytest.fixture(scope="module")
def token(api_server: LiveServer, cast: Cast) -> str:
    return login(api_server.url, cast.doctor)


def _get(server: LiveServer, token: str, path: str, **params: Any) -> httpx.Response:
    return httpx.get(f"{server.url}/api/v1{path}", headers={"Authorization": f"Bearer {token}"}, params=params)


def test_list_shows_my_care_team_sorted_by_acuity(api_server: LiveServer, cast: Cast, token: str) -> None:
    now = datetime.now(UTC)
    calm, sick, _silent = cast.mine
    insert_readings(cast.dsn, calm, "spo2", "%", [97, 98, 97], every=timedelta(minutes=1), end=now)
    insert_readings(cast.dsn, calm, "heart_rate", "/min", [70, 72], every=timedelta(minutes=1), end=now)
    insert_readings(cast.dsn, sick, "spo2", "%", [95, 90, 86], every=timedelta(minutes=1), end=now)
    insert_readings(cast.dsn, sick, "heart_rate", "/min", [118, 125, 135], every=timedelta(minutes=1), end=now)
    insert_readings(cast.dsn, sick, "body_temperature", "Cel", [39.4], every=timedelta(minutes=1), end=now)
    r = _get(api_server, token, "/patients")
    assert r.status_code == 200, r.text
    rows = r.json()["patients"]
    assert {row["id"] for row in rows} == {str(p) for p in cast.mine}  # never the other doctor's patients
    assert rows[0]["id"] == str(sick)
    sick_row = rows[0]
    # SpO2 86 -> 3, pulse 135 -> 3, temperature 39.4 -> 2: 8 (partial: no respiration, BP, consciousness, O2)
    assert sick_row["news2"]["total"] == 8
    assert sick_row["news2"]["risk"] == "high"
    assert sick_row["news2"]["partial"] is True
    assert sick_row["latest"]["spo2"]["value"] == 86
    assert 0 <= sick_row["latest"]["spo2"]["age_s"] < 60
    assert sick_row["connectivity"] == "online"
    assert rows[-1]["connectivity"] == "never"
    assert r.json()["thresholds"]["spo2"]


def test_open_alert_ranks_first_and_inbox_lists_it(api_server: LiveServer, cast: Cast, token: str) -> None:
    silent = cast.mine[2]
    alert_id = raise_alert(cast.dsn, silent, rule="no_data:spo2", severity="high")
    rows = _get(api_server, token, "/patients").json()["patients"]
    assert rows[0]["id"] == str(silent)
    assert rows[0]["open_alerts"] == 1
    assert rows[0]["max_severity"] == "high"
    inbox = _get(api_server, token, "/patients/alerts").json()
    assert [a["id"] for a in inbox["alerts"]] == [alert_id]
    assert inbox["alerts"][0]["patient_name"] == cast.names[silent]
    assert inbox["last_event_id"] >= 1
    raise_alert(cast.dsn, cast.others[0])
    assert len(_get(api_server, token, "/patients/alerts").json()["alerts"]) == 1


def test_history_ranges_and_downsampling(api_server: LiveServer, cast: Cast, token: str) -> None:
    pid = cast.mine[0]
    now = datetime.now(UTC)
    values = [60 + (i % 40) for i in range(3000)]
    insert_readings(cast.dsn, pid, "pulse_rate", "/min", values, every=timedelta(seconds=1), end=now)
    r = _get(api_server, token, f"/patients/{pid}/history", metric="pulse_rate", range="1h", max_points=200)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["unit"] == "/min"
    assert 3 <= len(body["t"]) == len(body["v"]) <= 200
    assert body["method"] in {"lttb", "minmax+lttb"}
    assert max(body["v"]) == 99
    assert min(body["v"]) == 60
    slack = 3600 / (4 * 200) + 1  # min/max points sit inside their pre-bucket (store.readings.history)
    assert all(now.timestamp() - 3600 - slack < t <= now.timestamp() + slack for t in body["t"])
    assert body["thresholds"]
    for rng in ("24h", "7d", "30d"):
        assert _get(api_server, token, f"/patients/{pid}/history", metric="pulse_rate", range=rng).status_code == 200
    assert _get(api_server, token, f"/patients/{pid}/history", metric="nope").status_code == 404
    assert _get(api_server, token, f"/patients/{pid}/history", metric="spo2", range="2h").status_code == 422


def test_long_ranges_come_from_the_rollups_with_every_extreme(api_server: LiveServer, cast: Cast, token: str) -> None:
    pid = cast.mine[1]
    now = datetime.now(UTC)
    values = [96.0] * 2000
    values[700], values[1500] = 82.0, 100.0  # one desaturation, one peak in ~33 minutes of 1 s readings
    insert_readings(cast.dsn, pid, "spo2", "%", values, every=timedelta(seconds=1), end=now)
    dip_at = now.timestamp() - (len(values) - 1 - 700)
    for rng, source in (("1h", "raw"), ("24h", "1m"), ("7d", "1m"), ("30d", "1h")):
        body = _get(api_server, token, f"/patients/{pid}/history", metric="spo2", range=rng, max_points=600).json()
        assert body["source"] == source, rng
        assert (min(body["v"]), max(body["v"])) == (82.0, 100.0), rng
        if source != "raw":  # a rollup keeps the time each extreme was measured; pre-buckets whole minutes
            assert body["t"][body["v"].index(82.0)] == pytest.approx(dip_at, abs=1e-3)
            assert body["bucket_s"] % 60 == 0
            assert body["bucket_s"] > 0


def test_history_of_another_doctors_patient_is_refused_and_audited(
    api_server: LiveServer, cast: Cast, token: str
) -> None:
    other = cast.others[0]
    assert _get(api_server, token, f"/patients/{other}/history", metric="spo2").status_code == 403
    assert _get(api_server, token, f"/patients/{other}").status_code == 403
    assert _get(api_server, token, f"/patients/{other}/readings.csv").status_code == 403
    with psycopg.connect(cast.dsn) as conn:
        rows = conn.execute(
            "select action, outcome from audit_events where patient_id = %s order by id", (other,)
        ).fetchall()
    assert ("read", "denied") in rows
    assert ("export", "denied") in rows


def test_detail_summary_and_csv(api_server: LiveServer, cast: Cast, token: str) -> None:
    pid = cast.mine[0]
    detail = _get(api_server, token, f"/patients/{pid}").json()
    assert detail["id"] == str(pid)
    assert "devices" in detail
    assert detail["thresholds"]["heart_rate"]
    summary = _get(api_server, token, f"/patients/{pid}/summary", days=2, tz="Africa/Casablanca").json()
    spo2 = summary["metrics"]["spo2"]
    assert sum(d["count"] for d in spo2) == 3
    assert _get(api_server, token, f"/patients/{pid}/summary", tz="Mars/Olympus").status_code == 404
    r = _get(api_server, token, f"/patients/{pid}/readings.csv", range="24h", metric="spo2")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    lines = r.text.strip().splitlines()
    assert lines[0].startswith("measured_at,metric,value")
    assert len(lines) == 4
    with psycopg.connect(cast.dsn) as conn:
        row = conn.execute(
            "select count(*) from audit_events where patient_id = %s and action = 'export' and outcome = 'allowed'",
            (pid,),
        ).fetchone()
    assert row is not None
    assert row[0] == 1


async def test_live_feed_pushes_vitals_and_replays_alerts(api_server: LiveServer, cast: Cast, token: str) -> None:
    url = api_server.url.replace("http", "ws", 1) + "/ws/v1/patients"
    pid = cast.mine[1]
    async with websockets.connect(f"{url}?token={token}") as ws:
        hello = json.loads(await ws.recv())
        assert hello["type"] == "hello"
        assert hello["patients"] == 3
        last = hello["last_event_id"]
        insert_readings(cast.dsn, pid, "spo2", "%", [84], every=timedelta(seconds=1), end=datetime.now(UTC))
        insert_readings(cast.dsn, cast.others[0], "spo2", "%", [70], every=timedelta(seconds=1), end=datetime.now(UTC))
        alert_id = raise_alert(cast.dsn, pid, rule="spo2")
        got_vitals = got_alert = None
        while got_vitals is None or got_alert is None:
            frame = json.loads(await ws.recv())
            if frame["type"] == "vitals":
                assert all(item[0] != str(cast.others[0]) for item in frame["items"])
                got_vitals = frame["items"]
            elif frame["type"] == "alert":
                got_alert = frame
        assert got_vitals[0][:3] == [str(pid), "spo2", 84]
        assert got_alert["alert"]["id"] == alert_id
        assert got_alert["id"] > last
    missed = raise_alert(cast.dsn, cast.mine[0], rule="heart_rate", severity="medium")
    async with websockets.connect(f"{url}?token={token}&last_event_id={got_alert['id']}") as ws:
        assert json.loads(await ws.recv())["type"] == "hello"
        replay = json.loads(await ws.recv())
        assert replay["type"] == "alert"
        assert replay["alert"]["id"] == missed


async def test_live_feed_refuses_anonymous_and_patients(api_server: LiveServer) -> None:
    url = api_server.url.replace("http", "ws", 1) + "/ws/v1/patients"
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "auth", "token": "garbage"}))
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008


def test_static_files_and_no_traversal(api_server: LiveServer) -> None:
    index = httpx.get(f"{api_server.url}/")
    assert index.status_code == 200
    assert "/app/js/app.js" in index.text
    assert "content-security-policy" in index.headers
    assert httpx.get(f"{api_server.url}/app/js/app.js").headers["content-type"].startswith("text/javascript")
    assert httpx.get(f"{api_server.url}/app/i18n/fr.json").json()["nav.patients"] == "Patients"
    for bad in ("/app/../router.py", "/app/%2e%2e/router.py", "/app/js/../../router.py", "/vendor/uplot/package.json"):
        assert httpx.get(f"{api_server.url}{bad}").status_code == 404, bad
    uplot = httpx.get(f"{api_server.url}/vendor/uplot/uPlot.esm.js")
    if uplot.status_code == 404:
        pytest.skip("uPlot is not installed (run `make setup` or `npm install`)")
    assert "uPlot" in uplot.text
