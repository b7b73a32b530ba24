"""Audit log: a scripted session produces exactly the expected rows; the log is append-only; tampering is detected
by `tbib audit verify`, which names the row. Runs on both storage flavours."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from teleconsult.api.deps import audit
from teleconsult.store.migrate import upgrade
from tests.teleconsult.api.helpers import PASSWORD, Seeded, asgi_client, make_settings, seed

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def audit_db(db_dsn: str) -> Seeded:
    upgrade(db_dsn)
    return seed(db_dsn, prefix="a")


def _tbib_audit_verify(dsn: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "teleconsult.cli.main", "audit", "verify", "--database-url", dsn],
        capture_output=True, text=True, cwd=REPO, env={**os.environ}, check=False,
    )  # fmt: skip


def _rows_after(dsn: str, after: int) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "select actor_username, actor_role, action, patient_id, resource, outcome from audit_events "
            "where id > %s order by id",
            (after,),
        ).fetchall()


def _last_id(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("select last_id from audit_chain_head").fetchone()
    assert row is not None
    return int(row[0])


async def test_scripted_session_produces_exactly_the_expected_rows(audit_db: Seeded) -> None:
    s = audit_db
    start = _last_id(s.dsn)
    consents = "/api/v1/patients/{patient_id}/consents"
    async with asgi_client(make_settings(s.dsn)) as c:
        doc = await c.post("/api/v1/auth/login", json={"username": "a-doctor", "password": PASSWORD})
        h = {"Authorization": f"Bearer {doc.json()['access_token']}"}
        for _ in range(3):
            assert (await c.get(f"/api/v1/patients/{s.p1}/consents", headers=h)).status_code == 200
        for granted in (True, False):
            body = {"purpose": "remote_monitoring", "granted": granted}
            assert (await c.post(f"/api/v1/patients/{s.p1}/consents", headers=h, json=body)).status_code == 201
        assert (await c.get(f"/api/v1/patients/{s.p2}/consents", headers=h)).status_code == 403
        assert (await c.get("/api/v1/auth/me", headers=h)).status_code == 200  # no patient data: not audited
        bad = await c.post("/api/v1/auth/login", json={"username": "a-doctor", "password": "wrong-password"})
        assert bad.status_code == 401
        pat = await c.post("/api/v1/auth/login", json={"username": "a-patient", "password": PASSWORD})
        hp = {"Authorization": f"Bearer {pat.json()['access_token']}"}
        log = await c.get(f"/api/v1/patients/{s.p1}/access-log", headers=hp)
        assert log.status_code == 200
    read = ("a-doctor", "doctor", "read", s.p1, f"GET /api/v1{consents[7:]}", "allowed")
    write = ("a-doctor", "doctor", "write", s.p1, f"POST /api/v1{consents[7:]}", "allowed")
    expected = [
        ("a-doctor", "doctor", "login", None, "POST /api/v1/auth/login", "success"),
        read, read, read, write, write,
        ("a-doctor", "doctor", "read", s.p2, f"GET /api/v1{consents[7:]}", "denied"),
        ("a-doctor", None, "login", None, "POST /api/v1/auth/login", "failure"),
        ("a-patient", "patient", "login", None, "POST /api/v1/auth/login", "success"),
        ("a-patient", "patient", "read", s.p1, "GET /api/v1/patients/{patient_id}/access-log", "allowed"),
    ]  # fmt: skip
    assert _rows_after(s.dsn, start) == expected
    # the patient's "who accessed my record" shows the doctor's five accesses and their own read, newest first
    seen = [(e["actor_username"], e["action"], e["outcome"]) for e in log.json()]
    assert (
        seen[:6]
        == [("a-patient", "read", "allowed")]
        + [("a-doctor", "write", "allowed")] * 2
        + [("a-doctor", "read", "allowed")] * 3
    )
    assert _tbib_audit_verify(s.dsn).returncode == 0


def test_append_only(audit_db: Seeded) -> None:
    with psycopg.connect(audit_db.dsn, autocommit=True) as conn:
        assert conn.execute("select count(*) from audit_events").fetchone()[0] > 0  # type: ignore[index]
        for stmt in (
            "update audit_events set outcome = 'allowed' where id = 1",
            "delete from audit_events where id = 1",
            "truncate audit_events",
            "delete from audit_chain_head",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(stmt)


def _reinsert(conn: psycopg.Connection[tuple[object, ...]], row: tuple[object, ...]) -> None:
    values = list(row)
    values[10] = Jsonb(values[10])  # detail
    conn.execute(f"insert into audit_events values ({', '.join(['%s'] * len(values))})", values)


async def _ensure_rows(dsn: str, n: int) -> None:
    async with AsyncConnectionPool(dsn, min_size=1, max_size=2, open=False) as pool:
        for i in range(n):
            await audit(pool, None, action="read", resource=f"filler {i}", outcome="allowed", detail={"i": i})


async def test_tampering_is_detected_and_named(audit_db: Seeded) -> None:
    dsn = audit_db.dsn
    await _ensure_rows(dsn, 5)
    ok = _tbib_audit_verify(dsn)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    n = _last_id(dsn)
    target = n // 2 + 1
    with psycopg.connect(dsn, autocommit=True) as conn:  # a superuser edits a row with the trigger disabled
        original = conn.execute("select outcome from audit_events where id = %s", (target,)).fetchone()
        assert original is not None
        conn.execute("alter table audit_events disable trigger audit_events_append_only")
        conn.execute("update audit_events set outcome = 'tampered' where id = %s", (target,))
        conn.execute("alter table audit_events enable trigger audit_events_append_only")
    bad = _tbib_audit_verify(dsn)
    assert bad.returncode == 1
    assert f"row {target}:" in bad.stdout
    assert "altered" in bad.stdout
    with psycopg.connect(dsn, autocommit=True) as conn:  # put it back: the chain verifies again
        conn.execute("alter table audit_events disable trigger audit_events_append_only")
        conn.execute("update audit_events set outcome = %s where id = %s", (original[0], target))
        row = conn.execute("select * from audit_events where id = %s", (target,)).fetchone()
        conn.execute("delete from audit_events where id = %s", (target,))  # now delete it outright
        conn.execute("alter table audit_events enable trigger audit_events_append_only")
    gone = _tbib_audit_verify(dsn)
    assert gone.returncode == 1
    assert f"row {target}:" in gone.stdout
    assert "missing" in gone.stdout
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert row is not None
        _reinsert(conn, row)
        tail = conn.execute("select max(id) from audit_events").fetchone()
        assert tail is not None
        conn.execute("alter table audit_events disable trigger audit_events_append_only")
        last = conn.execute("select * from audit_events where id = %s", (tail[0],)).fetchone()
        conn.execute("delete from audit_events where id = %s", (tail[0],))  # truncating the tail is caught by the head
        conn.execute("alter table audit_events enable trigger audit_events_append_only")
    cut = _tbib_audit_verify(dsn)
    assert cut.returncode == 1
    assert f"row {tail[0]}:" in cut.stdout
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert last is not None
        _reinsert(conn, last)
    assert _tbib_audit_verify(dsn).returncode == 0


async def test_concurrent_appends_keep_a_gapless_chain(audit_db: Seeded) -> None:
    start = _last_id(audit_db.dsn)
    async with AsyncConnectionPool(audit_db.dsn, min_size=4, max_size=8, open=False) as pool:
        ids = await asyncio.gather(
            *(audit(pool, None, action="read", resource=f"test {i}", outcome="allowed") for i in range(60))
        )
    assert sorted(ids) == list(range(start + 1, start + 61))
    assert _tbib_audit_verify(audit_db.dsn).returncode == 0
