"""Gateway enrolment from the admin API on a real Mosquitto and PostgreSQL (issue 19 item 6).

An admin enrols a gateway for a patient and gets a one-time code; the gateway redeems it over HTTPS for its MQTT
credential and logs in to the broker; a second redemption, a wrong code and an expired code are refused; the code is
stored only as its hash. Revoking from the API refuses the login at once and drops the live connection. Devices are
enrolled and unenrolled, and the ingest's enrolment map follows.
"""

from __future__ import annotations

import asyncio
import uuid

import psycopg

from teleconsult.security import provisioning
from teleconsult.store.enrolment import enrolment_map
from tests.teleconsult.api.helpers import PASSWORD, Seeded, asgi_client, make_settings
from tests.teleconsult.security.test_broker_acl import Broker, Client, broker, pki_dir  # noqa: F401 - fixtures


def _settings(seeded: Seeded, b: Broker) -> object:
    f = b.files
    return make_settings(
        seeded.dsn, mosquitto_passwd_file=f.passwd_file, mosquitto_acl_file=f.acl_file, mosquitto_pid_file=f.pid_file
    )


async def _connect(port: int, user: str, password: str) -> Client:
    return await asyncio.to_thread(Client, port, user, password)


async def test_code_redeemed_once_then_revoked_on_the_live_broker(seeded: Seeded, broker: Broker) -> None:  # noqa: F811
    gw = f"gw-prov-{uuid.uuid4().hex[:6]}"
    async with asgi_client(_settings(seeded, broker), client=("10.2.0.1", 1)) as c:  # type: ignore[arg-type]
        login = await c.post("/api/v1/auth/login", json={"username": "m-admin", "password": PASSWORD})
        ha = {"Authorization": f"Bearer {login.json()['access_token']}"}
        r = await c.post("/api/v1/gateways", headers=ha, json={"gateway_id": gw, "patient_id": str(seeded.p2)})
        assert r.status_code == 201, r.text
        issued = r.json()
        code = issued["code"]
        assert len(code) == 14
        assert code.count("-") == 2
        assert issued["qr_svg"].startswith("<svg")
        assert issued["uri"] == f"tbib-provision:{gw}:{code}"
        # stored as a hash only
        with psycopg.connect(seeded.dsn) as conn:
            rows = conn.execute(
                "select code_hash, expires_at - created_at from gateway_provisioning_codes where gateway_id = %s",
                (gw,),
            ).fetchall()
        assert len(rows) == 1
        assert bytes(rows[0][0]) == provisioning.code_hash(code)
        assert code.encode() not in bytes(rows[0][0])
        assert rows[0][1].total_seconds() == 900
        listed = {g["gateway_id"]: g for g in (await c.get("/api/v1/gateways", headers=ha)).json()}
        assert listed[gw]["credential"] == "none"
        assert listed[gw]["code_expires_at"] is not None
        # a wrong code is refused; the right one, typed lower-case without dashes, works once
        assert (await c.post("/api/v1/gateways/provision", json={"code": provisioning.new_code()})).status_code == 401
        r = await c.post("/api/v1/gateways/provision", json={"code": code.replace("-", "").lower()})
        assert r.status_code == 200, r.text
        cred = r.json()
        assert cred["gateway_id"] == gw
        assert cred["mqtt_username"] == gw
        again = await c.post("/api/v1/gateways/provision", json={"code": code})
        assert again.status_code == 401
        assert again.json() == {"detail": provisioning.BAD_CODE}
        await asyncio.sleep(0.3)  # SIGHUP is asynchronous
        live = await _connect(broker.port, gw, cred["mqtt_password"])
        assert live.rc == 0
        assert await asyncio.to_thread(live.publish, f"tbib/v1/gw/{gw}/status", b"online") in (0, 16)
        # revoke from the API: the live connection is dropped and a new login refused, without a broker restart
        r = await c.post(f"/api/v1/gateways/{gw}/revoke", headers=ha)
        assert r.status_code == 200
        assert r.json()["broker_reloaded"] is True
        assert await asyncio.to_thread(live.disconnected.wait, 5)
        refused = await _connect(broker.port, gw, cred["mqtt_password"])
        assert refused.rc in (134, 135)
        assert broker.proc.poll() is None
        for cl in (live, refused):
            cl.close()
        assert (await c.post(f"/api/v1/gateways/{gw}/revoke", headers=ha)).status_code == 404
        listed = {g["gateway_id"]: g for g in (await c.get("/api/v1/gateways", headers=ha)).json()}
        assert listed[gw]["credential"] == "revoked"
        with psycopg.connect(seeded.dsn) as conn:
            actions = [
                r[0]
                for r in conn.execute(
                    "select action || ':' || outcome from audit_events where detail->>'gateway_id' = %s"
                    " or (action = 'gateway.provision' and outcome = 'denied') order by id",
                    (gw,),
                ).fetchall()
            ]
        assert {"gateway.enrol:success", "gateway.provision:success", "gateway.revoke:success"} <= set(actions)
        assert "gateway.provision:denied" in actions


async def test_expired_and_superseded_codes_are_refused(seeded: Seeded, broker: Broker) -> None:  # noqa: F811
    gw = f"gw-exp-{uuid.uuid4().hex[:6]}"
    async with asgi_client(_settings(seeded, broker), client=("10.2.0.2", 1)) as c:  # type: ignore[arg-type]
        login = await c.post("/api/v1/auth/login", json={"username": "m-admin", "password": PASSWORD})
        ha = {"Authorization": f"Bearer {login.json()['access_token']}"}
        body = {"gateway_id": gw, "patient_id": str(seeded.p2)}
        first = (await c.post("/api/v1/gateways", headers=ha, json=body)).json()["code"]
        second = (await c.post("/api/v1/gateways", headers=ha, json=body)).json()["code"]
        assert (await c.post("/api/v1/gateways/provision", json={"code": first})).status_code == 401  # voided
        with psycopg.connect(seeded.dsn, autocommit=True) as conn:
            conn.execute(
                "update gateway_provisioning_codes set created_at = now() - interval '2 hours',"
                " expires_at = now() - interval '1 second' where gateway_id = %s",
                (gw,),
            )
        assert (await c.post("/api/v1/gateways/provision", json={"code": second})).status_code == 401  # expired
        # another patient cannot take over the gateway id; an unknown patient is 404
        other = await c.post("/api/v1/gateways", headers=ha, json={"gateway_id": gw, "patient_id": str(seeded.p1)})
        assert other.status_code == 409
        unknown = await c.post(
            "/api/v1/gateways", headers=ha, json={"gateway_id": "gw-x1", "patient_id": str(uuid.uuid4())}
        )
        assert unknown.status_code == 404
        bad = await c.post("/api/v1/gateways", headers=ha, json={"gateway_id": "gw/+#", "patient_id": str(seeded.p2)})
        assert bad.status_code == 422


async def test_devices_enrol_and_unenrol_follow_into_the_ingest_map(seeded: Seeded) -> None:
    gw = f"gw-dev-{uuid.uuid4().hex[:6]}"
    async with asgi_client(make_settings(seeded.dsn), client=("10.2.0.3", 1)) as c:
        login = await c.post("/api/v1/auth/login", json={"username": "m-admin", "password": PASSWORD})
        ha = {"Authorization": f"Bearer {login.json()['access_token']}"}
        assert (
            await c.post("/api/v1/gateways", headers=ha, json={"gateway_id": gw, "patient_id": str(seeded.p2)})
        ).status_code == 201
        r = await c.post(
            f"/api/v1/gateways/{gw}/devices", headers=ha, json={"address": "C0:FF:EE:00:00:01", "kind": "oximeter"}
        )
        assert r.status_code == 201, r.text
        dev = r.json()
        assert dev["patient_id"] == str(seeded.p2)
        assert dev["unenrolled_at"] is None
        async with await psycopg.AsyncConnection.connect(seeded.dsn, autocommit=True) as conn:
            binding = (await enrolment_map(conn))[(gw, "C0:FF:EE:00:00:01")]
            assert str(binding.device_id) == dev["id"]
            assert binding.patient_id == seeded.p2
            r = await c.post(f"/api/v1/gateways/{gw}/devices/{dev['id']}/unenrol", headers=ha)
            assert r.status_code == 200
            assert r.json()["unenrolled_at"] is not None
            assert (gw, "C0:FF:EE:00:00:01") not in await enrolment_map(conn)
            assert (await c.post(f"/api/v1/gateways/{gw}/devices/{dev['id']}/unenrol", headers=ha)).status_code == 404
            listed = (await c.get(f"/api/v1/gateways/{gw}/devices", headers=ha)).json()
            assert [d["id"] for d in listed] == [dev["id"]]
            # re-enrolling the same address keeps the device id and routes readings again
            r = await c.post(f"/api/v1/gateways/{gw}/devices", headers=ha, json={"address": "C0:FF:EE:00:00:01"})
            assert r.json()["id"] == dev["id"]
            assert r.json()["kind"] == "oximeter"
            assert (gw, "C0:FF:EE:00:00:01") in await enrolment_map(conn)
        assert (await c.get("/api/v1/gateways/nope/devices", headers=ha)).status_code == 404
