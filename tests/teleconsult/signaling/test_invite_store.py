"""Invitation links on a real PostgreSQL: a link works once (also under two concurrent redeems), expires, is withdrawn;
and an input through the room store costs what (printed)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from teleconsult.signaling import invite_store
from teleconsult.signaling.core import SignalingConfig
from teleconsult.signaling.invites import InviteError
from teleconsult.signaling.roomstore import PgRoomStore
from teleconsult.signaling.service import SignalingService
from teleconsult.signaling.tokens import Role
from teleconsult.store.migrate import upgrade

from .helpers import KEY, token


@pytest.fixture(scope="module")
def dsn(plain_dsn: str) -> str:
    upgrade(plain_dsn)
    return plain_dsn


def _consultation(dsn: str) -> uuid.UUID:
    with psycopg.connect(dsn, autocommit=True) as conn:
        doctor = conn.execute(
            "insert into users (username, role, password_hash) values (%s, 'doctor', 'x') returning id",
            (f"dr-{uuid.uuid4().hex[:8]}",),
        ).fetchone()
        patient = conn.execute("insert into patients (display_name) values ('P') returning id").fetchone()
        assert doctor is not None
        assert patient is not None
        row = conn.execute(
            "insert into consultations (patient_id, doctor_id) values (%s, %s) returning id", (patient[0], doctor[0])
        ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


async def test_link_works_once_even_when_redeemed_twice_at_once(dsn: str) -> None:
    cid = _consultation(dsn)
    now = datetime.now(UTC)
    async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
        inv, secret = await invite_store.create(
            conn, consultation_id=cid, role=Role.FAMILY, name=" Fatima ", created_by=None, now=now,
            ttl=timedelta(hours=1),
        )  # fmt: skip
        assert inv.name == "Fatima"
        row = await (
            await conn.execute("select secret_hash from consultation_invites where id = %s", (inv.id,))
        ).fetchone()
        assert row is not None
        assert secret.encode() not in bytes(row[0])
    conns = [await AsyncConnection.connect(dsn, autocommit=True) for _ in range(2)]
    results: list[Any] = await asyncio.gather(
        *(invite_store.redeem(c, secret, now) for c in conns), return_exceptions=True
    )
    for c in conns:
        await c.close()
    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, InviteError)]
    assert len(ok) == 1
    assert [r.code for r in refused] == ["invite-used"]
    assert ok[0].subject == f"invite-{inv.id}"


async def test_expired_and_withdrawn_links_are_refused(dsn: str) -> None:
    cid = _consultation(dsn)
    now = datetime.now(UTC)
    async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
        _, late = await invite_store.create(
            conn, consultation_id=cid, role=Role.NURSE, name="N", created_by=None, now=now, ttl=timedelta(minutes=5)
        )
        with pytest.raises(InviteError) as exc:
            await invite_store.redeem(conn, late, now + timedelta(minutes=5))
        assert exc.value.code == "invite-expired"
        inv, gone = await invite_store.create(
            conn, consultation_id=cid, role=Role.NURSE, name="N", created_by=None, now=now, ttl=timedelta(minutes=5)
        )
        assert await invite_store.revoke(conn, cid, inv.id, now)
        assert not await invite_store.revoke(conn, cid, inv.id, now)
        with pytest.raises(InviteError) as exc:
            await invite_store.redeem(conn, gone, now)
        assert exc.value.code == "invite-revoked"
        with pytest.raises(InviteError) as exc:
            await invite_store.redeem(conn, "nobody-got-this-secret-0123456789", now)
        assert exc.value.code == "invite-unknown"
        assert sorted(i.status(now) for i in await invite_store.list_for(conn, cid)) == ["pending", "revoked"]


async def test_inputs_through_the_room_store(dsn: str) -> None:
    """Join then 200 pings through the store (row lock per input); the room row follows; prints the cost."""
    import json

    from websockets.asyncio.client import connect

    from teleconsult.signaling.standalone import running

    async with AsyncConnectionPool(dsn, min_size=1, max_size=4, open=False) as pool:
        service = SignalingService(
            SignalingConfig(token_key=KEY, rate_per_second=1e4, rate_burst=1e4), store=PgRoomStore(pool, dsn)
        )
        async with running(service) as base:
            url = base.replace("http://", "ws://") + "/ws/v1/signaling"
            async with connect(url) as ws:
                await ws.recv()
                await ws.send(
                    json.dumps(
                        {
                            "v": 1,
                            "seq": 1,
                            "type": "join",
                            "token": token(Role.DOCTOR, cid="st-1", now=datetime.now(UTC)),
                        }
                    )
                )
                assert json.loads(await ws.recv())["type"] == "joined"
                t0 = time.perf_counter()
                for i in range(200):
                    await ws.send(json.dumps({"v": 1, "seq": i + 2, "type": "ping"}))
                    assert json.loads(await ws.recv())["type"] == "pong"
                per_input_ms = (time.perf_counter() - t0) * 1000 / 200
                await ws.send("not json")
                assert json.loads(await ws.recv())["code"] == "malformed"
                async with pool.connection() as conn:
                    row = await (
                        await conn.execute("select state from signaling_rooms where consultation_id = 'st-1'")
                    ).fetchone()
                assert row is not None
                assert row[0]["seats"][0]["seat"] == "doctor"
            assert service.core.errors_sent["malformed"] == 1
    print(f"room store: {per_input_ms:.2f} ms per input (ping round trip, row lock + commit)")
