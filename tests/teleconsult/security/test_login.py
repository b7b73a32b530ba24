"""Login: lockout per account and per client address, token expiry, tampering, sessions, cookies + CSRF, TOTP."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pyotp

from teleconsult.security import tokens
from teleconsult.security.models import Role
from tests.teleconsult.api.helpers import PASSWORD, SECRET, Seeded, asgi_client, make_settings

LOGIN = "/api/v1/auth/login"


async def _login(c: httpx.AsyncClient, username: str, password: str = PASSWORD, **kw: object) -> httpx.Response:
    return await c.post(LOGIN, json={"username": username, "password": password, **kw})


async def test_account_lockout_after_threshold(seeded: Seeded) -> None:
    user = f"lock-{uuid.uuid4().hex[:6]}"
    seeded.add_user(user, "doctor")
    settings = make_settings(seeded.dsn, lockout_threshold=3, lockout_duration_s=2, ip_failure_limit=1000)
    async with asgi_client(settings, client=("10.0.0.1", 1000)) as c:
        for _ in range(3):
            r = await _login(c, user, "wrong-password")
            assert r.status_code == 401
            assert r.json()["detail"] == "invalid username or password"
        r = await _login(c, user)  # right password, but locked
        assert r.status_code == 429
        assert 1 <= int(r.headers["retry-after"]) <= 3
        other = await _login(c, "m-nurse")  # other accounts are unaffected
        assert other.status_code == 200
        await asyncio.sleep(2.1)
        r = await _login(c, user)
        assert r.status_code == 200, r.text
        # a success resets the counter: two more failures do not lock
        for _ in range(2):
            assert (await _login(c, user, "wrong-password")).status_code == 401
        assert (await _login(c, user)).status_code == 200


async def test_unknown_user_and_disabled_user_look_like_wrong_password(seeded: Seeded) -> None:
    user = f"dis-{uuid.uuid4().hex[:6]}"
    uid = seeded.add_user(user, "nurse")
    with psycopg.connect(seeded.dsn, autocommit=True) as conn:
        conn.execute("update users set disabled = true where id = %s", (uid,))
    async with asgi_client(make_settings(seeded.dsn), client=("10.0.0.2", 1000)) as c:
        for name in ("nobody-here", user):
            r = await _login(c, name)
            assert (r.status_code, r.json()["detail"]) == (401, "invalid username or password")


async def test_per_address_limit(seeded: Seeded) -> None:
    settings = make_settings(seeded.dsn, ip_failure_limit=4, lockout_threshold=100)
    async with asgi_client(settings, client=("10.0.0.3", 1000)) as c:
        for i in range(4):  # spraying different accounts from one address
            assert (await _login(c, f"spray-{i}", "x")).status_code == 401
        r = await _login(c, "m-doctor")
        assert r.status_code == 429
        assert "client address" in r.json()["detail"]
    async with asgi_client(settings, client=("10.0.0.4", 1000)) as c:  # another address is not affected
        assert (await _login(c, "m-doctor")).status_code == 200


async def test_token_expiry_tampering_and_session_end(seeded: Seeded) -> None:
    async with asgi_client(make_settings(seeded.dsn), client=("10.0.0.5", 1000)) as c:
        body = (await _login(c, "m-doctor")).json()
        good = {"Authorization": f"Bearer {body['access_token']}"}
        assert (await c.get("/api/v1/auth/me", headers=good)).status_code == 200
        claims = tokens.decode_access_token(body["access_token"], secret=SECRET, issuer="tbib")
        expired = tokens.issue_access_token(
            secret=SECRET, issuer="tbib", user_id=claims.user_id, session_id=claims.session_id, role=Role.DOCTOR,
            now=datetime.now(UTC) - timedelta(seconds=400), ttl_s=300,
        )  # fmt: skip
        r = await c.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {expired}"})
        assert (r.status_code, r.json()["detail"]) == (401, "token expired")
        forged_admin = tokens.issue_access_token(
            secret="not-the-server-secret-0123456789abcdef", issuer="tbib", user_id=claims.user_id,
            session_id=claims.session_id, role=Role.ADMIN, now=datetime.now(UTC), ttl_s=300,
        )  # fmt: skip
        r = await c.get("/api/v1/users", headers={"Authorization": f"Bearer {forged_admin}"})
        assert r.status_code == 401
        tampered = body["access_token"][:-3] + ("abc" if not body["access_token"].endswith("abc") else "xyz")
        assert (await c.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {tampered}"})).status_code == 401
        # refresh rotates; the old refresh token replayed revokes the session
        r1 = await c.post("/api/v1/auth/refresh", json={"refresh_token": body["refresh_token"]})
        assert r1.status_code == 200
        new_access = {"Authorization": f"Bearer {r1.json()['access_token']}"}
        assert (await c.get("/api/v1/auth/me", headers=new_access)).status_code == 200
        replay = await c.post("/api/v1/auth/refresh", json={"refresh_token": body["refresh_token"]})
        assert replay.status_code == 401
        assert (await c.get("/api/v1/auth/me", headers=new_access)).status_code == 401  # session revoked
        # logout ends the session; disabling an account ends all of its sessions
        b2 = (await _login(c, "m-nurse")).json()
        h2 = {"Authorization": f"Bearer {b2['access_token']}"}
        assert (await c.post("/api/v1/auth/logout", headers=h2)).status_code == 204
        assert (await c.get("/api/v1/auth/me", headers=h2)).status_code == 401
        user = f"gone-{uuid.uuid4().hex[:6]}"
        uid = seeded.add_user(user, "doctor")
        h3 = {"Authorization": f"Bearer {(await _login(c, user)).json()['access_token']}"}
        admin = {"Authorization": f"Bearer {(await _login(c, 'm-admin')).json()['access_token']}"}
        assert (await c.post(f"/api/v1/users/{uid}/disable", headers=admin)).status_code == 200
        assert (await c.get("/api/v1/auth/me", headers=h3)).status_code == 401


async def test_cookie_session_needs_csrf_for_writes(seeded: Seeded) -> None:
    async with asgi_client(make_settings(seeded.dsn), client=("10.0.0.6", 1000)) as c:
        r = await _login(c, "m-doctor", mode="cookie")
        assert r.status_code == 200
        assert r.json()["access_token"] is None
        csrf = r.json()["csrf_token"]
        set_cookies = r.headers.get_list("set-cookie")
        session = next(h for h in set_cookies if h.startswith("tbib_session="))
        assert all(flag in session for flag in ("HttpOnly", "Secure", "SameSite=strict"))
        refresh = next(h for h in set_cookies if h.startswith("tbib_refresh="))
        assert "Path=/api/v1/auth" in refresh
        assert "HttpOnly" in refresh
        url = f"/api/v1/patients/{seeded.p1}/consents"
        assert (await c.get(url)).status_code == 200  # reads need no CSRF token
        body = {"purpose": "teleconsultation", "granted": True}
        assert (await c.post(url, json=body)).status_code == 403
        assert (await c.post(url, json=body, headers={"X-CSRF-Token": "forged"})).status_code == 403
        assert (await c.post(url, json=body, headers={"X-CSRF-Token": csrf})).status_code == 201
        assert (await c.post("/api/v1/auth/refresh")).status_code == 403  # cookie refresh needs CSRF too
        assert (await c.post("/api/v1/auth/refresh", headers={"X-CSRF-Token": csrf})).status_code == 200
        assert (await c.post("/api/v1/auth/logout", headers={"X-CSRF-Token": csrf})).status_code == 204
        assert (await c.get(url)).status_code == 401


async def test_totp_second_factor(seeded: Seeded) -> None:
    user = f"totp-{uuid.uuid4().hex[:6]}"
    seeded.add_user(user, "doctor")
    async with asgi_client(make_settings(seeded.dsn), client=("10.0.0.7", 1000)) as c:
        h = {"Authorization": f"Bearer {(await _login(c, user)).json()['access_token']}"}
        setup = (await c.post("/api/v1/auth/totp/setup", headers=h)).json()
        assert setup["provisioning_uri"].startswith("otpauth://totp/")
        totp = pyotp.TOTP(setup["secret"])
        assert (await c.post("/api/v1/auth/totp/enable", headers=h, json={"code": "000000"})).status_code == 409
        assert (await c.post("/api/v1/auth/totp/enable", headers=h, json={"code": totp.now()})).status_code == 204
        r = await _login(c, user)
        assert (r.status_code, r.json()["detail"]) == (401, "totp_required")
        assert (await _login(c, user, totp="123456" if totp.now() != "123456" else "654321")).status_code == 401
        r = await _login(c, user, totp=totp.now())
        assert r.status_code == 200
        assert r.json()["user"]["totp_enabled"] is True
        patient = {"Authorization": f"Bearer {(await _login(c, 'm-patient')).json()['access_token']}"}
        assert (await c.post("/api/v1/auth/totp/setup", headers=patient)).status_code == 403
