"""Care-team rule, in Python and in SQL (``tbib_accessible_patients``): time windows, ending, disabled accounts,
patients, admins; consent helpers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from teleconsult.errors import ConflictError, ConsentRequiredError, NotFoundError
from teleconsult.security import care_team, consent
from teleconsult.security.models import ConsentPurpose, Role, User
from tests.teleconsult.api.helpers import PASSWORD, Seeded, asgi_client, make_settings

NOW = datetime.now(UTC)


def _user(uid: uuid.UUID, role: Role = Role.DOCTOR, patient_id: uuid.UUID | None = None) -> User:
    return User(id=uid, username="x", display_name="", role=role, patient_id=patient_id)


async def test_time_windows_python_and_sql_agree(seeded: Seeded) -> None:
    doc = seeded.add_user(f"tw-{uuid.uuid4().hex[:6]}", "doctor")
    async with await psycopg.AsyncConnection.connect(seeded.dsn, autocommit=True) as conn:
        past = await care_team.assign(
            conn, clinician_id=doc, patient_id=seeded.p1, valid_from=NOW - timedelta(days=10),
            valid_to=NOW - timedelta(days=5),
        )  # fmt: skip
        future = await care_team.assign(
            conn, clinician_id=doc, patient_id=seeded.p2, valid_from=NOW + timedelta(days=1)
        )
        u = _user(doc)
        assert await care_team.access_via(conn, u, seeded.p1) is None
        assert await care_team.access_via(conn, u, seeded.p1, at=NOW - timedelta(days=7)) == "care_team"
        assert await care_team.access_via(conn, u, seeded.p2) is None
        assert await care_team.access_via(conn, u, seeded.p2, at=NOW + timedelta(days=2)) == "care_team"
        assert await care_team.accessible_patient_ids(conn, u) == []
        current = await care_team.assign(conn, clinician_id=doc, patient_id=seeded.p1)
        assert await care_team.accessible_patient_ids(conn, u) == [seeded.p1]
        cur = await conn.execute(  # the SQL form other features use in list queries
            f"select id from patients where id in ({care_team.ACCESSIBLE_PATIENTS_SQL}) order by id",
            {"user_id": doc},
        )
        assert [r[0] for r in await cur.fetchall()] == [seeded.p1]
        await care_team.end_assignment(conn, current.id)
        assert await care_team.access_via(conn, u, seeded.p1) is None
        with pytest.raises(NotFoundError):
            await care_team.end_assignment(conn, current.id)
        assert {a.id for a in await care_team.list_assignments(conn, clinician_id=doc)} == {
            past.id,
            future.id,
            current.id,
        }
        with pytest.raises(ConflictError):  # a patient account cannot be on a care team
            await care_team.assign(conn, clinician_id=seeded.users["patient"], patient_id=seeded.p2)
        with pytest.raises(NotFoundError):
            await care_team.assign(conn, clinician_id=doc, patient_id=uuid.uuid4())
        with pytest.raises(ConflictError):
            await care_team.assign(conn, clinician_id=doc, patient_id=seeded.p1, valid_from=NOW, valid_to=NOW)


async def test_patients_see_only_themselves_and_disabled_staff_nothing(seeded: Seeded) -> None:
    async with await psycopg.AsyncConnection.connect(seeded.dsn, autocommit=True) as conn:
        me = _user(seeded.users["patient"], Role.PATIENT, seeded.p1)
        assert await care_team.access_via(conn, me, seeded.p1) == "self"
        assert await care_team.access_via(conn, me, seeded.p2) is None
        assert await care_team.accessible_patient_ids(conn, me) == [seeded.p1]
        nurse = seeded.add_user(f"dn-{uuid.uuid4().hex[:6]}", "nurse")
        seeded.assign(nurse, seeded.p1)
        assert await care_team.accessible_patient_ids(conn, _user(nurse, Role.NURSE)) == [seeded.p1]
        await conn.execute("update users set disabled = true where id = %s", (nurse,))
        assert await care_team.accessible_patient_ids(conn, _user(nurse, Role.NURSE)) == []


async def test_admin_ending_an_assignment_revokes_api_access_immediately(seeded: Seeded) -> None:
    nurse = seeded.add_user(f"ea-{uuid.uuid4().hex[:6]}", "nurse")
    async with asgi_client(make_settings(seeded.dsn), client=("10.1.0.1", 1)) as c:
        admin = (await c.post("/api/v1/auth/login", json={"username": "m-admin", "password": PASSWORD})).json()
        ha = {"Authorization": f"Bearer {admin['access_token']}"}
        r = await c.post(
            "/api/v1/care-team", headers=ha, json={"clinician_id": str(nurse), "patient_id": str(seeded.p2)}
        )
        assert r.status_code == 201
        assignment = r.json()["id"]
        login = {"username": _name(seeded, nurse), "password": PASSWORD}
        tok = (await c.post("/api/v1/auth/login", json=login)).json()["access_token"]
        hn = {"Authorization": f"Bearer {tok}"}
        url = f"/api/v1/patients/{seeded.p2}/consents"
        assert (await c.get(url, headers=hn)).status_code == 200
        mine = (await c.get("/api/v1/care-team/mine", headers=hn)).json()
        assert [m["patient_id"] for m in mine] == [str(seeded.p2)]
        assert (await c.post(f"/api/v1/care-team/{assignment}/end", headers=ha)).status_code == 200
        assert (await c.get(url, headers=hn)).status_code == 403
        assert (await c.get("/api/v1/care-team/mine", headers=hn)).json() == []
        listed = (await c.get(f"/api/v1/care-team?patient_id={seeded.p2}", headers=ha)).json()
        assert any(a["id"] == assignment and a["valid_to"] for a in listed)


def _name(seeded: Seeded, user_id: uuid.UUID) -> str:
    with psycopg.connect(seeded.dsn) as conn:
        row = conn.execute("select username from users where id = %s", (user_id,)).fetchone()
    assert row is not None
    return str(row[0])


async def test_consent_is_per_purpose_and_newest_wins(seeded: Seeded) -> None:
    async with await psycopg.AsyncConnection.connect(seeded.dsn, autocommit=True) as conn:
        pid = seeded.p2
        assert not await consent.has_consent(conn, pid, ConsentPurpose.DATA_SHARING)
        with pytest.raises(ConsentRequiredError):
            await consent.require_consent(conn, pid, ConsentPurpose.DATA_SHARING)
        await consent.record(conn, patient_id=pid, purpose=ConsentPurpose.DATA_SHARING, granted=True, recorded_by=None)
        await consent.require_consent(conn, pid, ConsentPurpose.DATA_SHARING)
        assert not await consent.has_consent(conn, pid, ConsentPurpose.TELECONSULTATION)
        await consent.record(conn, patient_id=pid, purpose=ConsentPurpose.DATA_SHARING, granted=False, recorded_by=None)
        assert not await consent.has_consent(conn, pid, ConsentPurpose.DATA_SHARING)
        state = consent.current(await consent.history(conn, pid))
        assert state[ConsentPurpose.DATA_SHARING] is False
        with pytest.raises(NotFoundError):
            await consent.record(
                conn, patient_id=uuid.uuid4(), purpose=ConsentPurpose.DATA_SHARING, granted=True, recorded_by=None
            )
