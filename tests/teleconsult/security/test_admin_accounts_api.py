"""Account creation from the admin API (issue 19 item 6): a patient record then its account, a pharmacist linked to
a pharmacy in the same transaction, and the refusals (on real PostgreSQL)."""

from __future__ import annotations

import uuid

import psycopg

from tests.teleconsult.api.helpers import PASSWORD, Seeded, asgi_client, make_settings


async def test_patient_and_pharmacist_accounts(seeded: Seeded) -> None:
    tag = uuid.uuid4().hex[:6]
    async with asgi_client(make_settings(seeded.dsn), client=("10.3.0.1", 1)) as c:
        login = await c.post("/api/v1/auth/login", json={"username": "m-admin", "password": PASSWORD})
        ha = {"Authorization": f"Bearer {login.json()['access_token']}"}
        r = await c.post("/api/v1/admin/patients", headers=ha, json={"display_name": f"Fatima {tag}", "sex": "female"})
        assert r.status_code == 201, r.text
        pid = r.json()["id"]
        directory = (await c.get("/api/v1/admin/patients", headers=ha)).json()
        assert {"id": pid, "display_name": f"Fatima {tag}", "birth_date": None, "sex": "female"} in directory
        acct = {"username": f"fatima-{tag}", "password": "long-enough-pw", "role": "patient", "patient_id": pid}
        r = await c.post("/api/v1/users", headers=ha, json=acct)
        assert r.status_code == 201, r.text
        assert r.json()["patient_id"] == pid
        pharmacy = (await c.post("/api/v1/pharmacies", headers=ha, json={"name": f"Pharmacie {tag}"})).json()["id"]
        ph = {"username": f"ph-{tag}", "password": "long-enough-pw", "role": "pharmacist", "pharmacy_id": pharmacy}
        r = await c.post("/api/v1/users", headers=ha, json=ph)
        assert r.status_code == 201, r.text
        with psycopg.connect(seeded.dsn) as conn:
            row = conn.execute("select pharmacy_id from users where username = %s", (f"ph-{tag}",)).fetchone()
        assert row is not None
        assert str(row[0]) == pharmacy
        # a nurse never belongs to a pharmacy; an unknown pharmacy creates no account
        nurse = {"username": f"n-{tag}", "password": "long-enough-pw", "role": "nurse", "pharmacy_id": pharmacy}
        assert (await c.post("/api/v1/users", headers=ha, json=nurse)).status_code == 409
        ghost = ph | {"username": f"ph2-{tag}", "pharmacy_id": str(uuid.uuid4())}
        assert (await c.post("/api/v1/users", headers=ha, json=ghost)).status_code == 404
        names = {u["username"] for u in (await c.get("/api/v1/users", headers=ha)).json()}
        assert f"ph2-{tag}" not in names
        assert f"n-{tag}" not in names
        # a patient account needs its record
        orphan = acct | {"username": f"orphan-{tag}", "patient_id": None}
        assert (await c.post("/api/v1/users", headers=ha, json=orphan)).status_code == 409
