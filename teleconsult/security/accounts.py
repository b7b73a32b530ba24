"""User accounts, login with lockout, and login sessions (database side).

Login policy: a client address with ``ip_failure_limit`` failures in ``window_s`` is refused (429) for the rest of the
window; an account with ``threshold`` failures in ``window_s`` is locked for ``duration_s`` (429), even for the right
password. Failures are committed before the error is raised. Each login creates a row in ``auth_sessions``; access
tokens name it (``sid``) so logout and disabling an account take effect on the next request.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import pyotp
from psycopg import AsyncConnection, errors

from teleconsult.errors import (
    AuthenticationError,
    ConflictError,
    LockedOutError,
    NotFoundError,
    SecurityError,
    TotpRequiredError,
)
from teleconsult.security import passwords, tokens
from teleconsult.security.models import Role, User

BAD_CREDENTIALS: Final = "invalid username or password"
_USER_COLS: Final = "u.id, u.username, u.display_name, u.role, u.patient_id, u.disabled, u.totp_enabled"


@dataclass(frozen=True, slots=True)
class LoginPolicy:
    """Lockout and session parameters (from :class:`teleconsult.settings.Settings`)."""

    threshold: int = 5
    window_s: int = 900
    duration_s: int = 900
    ip_failure_limit: int = 50
    refresh_ttl_s: int = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class LoginResult:
    """A successful login: the user, the new session and its refresh token."""

    user: User
    session_id: uuid.UUID
    refresh_token: str


def _user(r: tuple[Any, ...], session_id: uuid.UUID | None = None) -> User:
    return User(
        id=r[0],
        username=r[1],
        display_name=r[2],
        role=Role(r[3]),
        patient_id=r[4],
        disabled=r[5],
        totp_enabled=r[6],
        session_id=session_id,
    )


def normalize_username(username: str) -> str:
    """Usernames are case-insensitive: stored lower-case, stripped."""
    return username.strip().lower()


async def create_user(
    conn: AsyncConnection[Any],
    *,
    username: str,
    password: str,
    role: Role,
    display_name: str = "",
    patient_id: uuid.UUID | None = None,
) -> User:
    """Insert an account; :class:`ConflictError` for a duplicate name, a short password or a role/patient mismatch."""
    if len(password) < passwords.MIN_PASSWORD_LENGTH:
        raise ConflictError(f"password must have at least {passwords.MIN_PASSWORD_LENGTH} characters")
    if (role is Role.PATIENT) != (patient_id is not None):
        raise ConflictError("patient accounts (and only they) must name a patient_id")
    try:
        async with conn.transaction():
            cur = await conn.execute(
                "insert into users as u (username, display_name, role, password_hash, patient_id) "  # noqa: S608
                f"values (%s, %s, %s, %s, %s) returning {_USER_COLS}",
                (normalize_username(username), display_name, role.value, passwords.hash_password(password), patient_id),
            )
            row = await cur.fetchone()
    except errors.UniqueViolation as exc:
        raise ConflictError(f"username {normalize_username(username)!r} is taken") from exc
    except errors.CheckViolation as exc:
        raise ConflictError(f"invalid account: {exc.diag.constraint_name}") from exc
    except errors.ForeignKeyViolation as exc:
        raise NotFoundError("patient", patient_id) from exc
    assert row is not None
    return _user(row)


async def list_users(conn: AsyncConnection[Any]) -> list[User]:
    """Every account, by username."""
    cur = await conn.execute(f"select {_USER_COLS} from users u order by u.username")  # noqa: S608
    return [_user(r) for r in await cur.fetchall()]


async def get_user(conn: AsyncConnection[Any], user_id: uuid.UUID) -> User:
    """One account by id."""
    cur = await conn.execute(f"select {_USER_COLS} from users u where u.id = %s", (user_id,))  # noqa: S608
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError("user", user_id)
    return _user(row)


async def find_user(conn: AsyncConnection[Any], username: str) -> User:
    """One account by username."""
    cur = await conn.execute(
        f"select {_USER_COLS} from users u where u.username = %s",  # noqa: S608
        (normalize_username(username),),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError("user", username)
    return _user(row)


async def set_disabled(conn: AsyncConnection[Any], user_id: uuid.UUID, disabled: bool, now: datetime) -> User:
    """Disable (and log out everywhere) or re-enable an account."""
    async with conn.transaction():
        cur = await conn.execute(
            f"update users u set disabled = %s where u.id = %s returning {_USER_COLS}",  # noqa: S608
            (disabled, user_id),
        )
        row = await cur.fetchone()
        if row is None:
            raise NotFoundError("user", user_id)
        if disabled:
            await conn.execute(
                "update auth_sessions set revoked_at = %s where user_id = %s and revoked_at is null", (now, user_id)
            )
    return _user(row)


async def session_user(conn: AsyncConnection[Any], user_id: uuid.UUID, session_id: uuid.UUID, now: datetime) -> User:
    """The enabled user of a live session, or :class:`AuthenticationError`."""
    cur = await conn.execute(
        f"select {_USER_COLS} from auth_sessions s join users u on u.id = s.user_id "  # noqa: S608
        "where s.id = %s and s.user_id = %s and s.revoked_at is null and s.expires_at > %s and not u.disabled",
        (session_id, user_id, now),
    )
    row = await cur.fetchone()
    if row is None:
        raise AuthenticationError("session ended")
    return _user(row, session_id)


async def login(
    conn: AsyncConnection[Any],
    policy: LoginPolicy,
    *,
    username: str,
    password: str,
    totp_code: str | None,
    client_addr: str | None,
    user_agent: str | None,
    now: datetime,
) -> LoginResult:
    """Check credentials under the lockout policy and open a session."""
    failure: SecurityError | None = None
    result: LoginResult | None = None
    name = normalize_username(username)
    window_start = now - timedelta(seconds=policy.window_s)
    async with conn.transaction():
        if client_addr is not None:
            cur = await conn.execute(
                "select count(*), min(at) from login_failures where client_addr = %s and at > %s",
                (client_addr, window_start),
            )
            count, oldest = await cur.fetchone() or (0, None)
            if count >= policy.ip_failure_limit and oldest is not None:
                retry = int((oldest + timedelta(seconds=policy.window_s) - now).total_seconds()) + 1
                raise LockedOutError(max(retry, 1), "client address")
        cur = await conn.execute(
            "select id, password_hash, disabled, totp_enabled, totp_secret, failed_logins, last_failed_at, locked_until"
            " from users where username = %s for update",
            (name,),
        )
        acct = await cur.fetchone()
        if acct is not None and acct[7] is not None and acct[7] > now:
            raise LockedOutError(int((acct[7] - now).total_seconds()) + 1, "account")
        ok = passwords.verify_password(acct[1] if acct else None, password) and acct is not None and not acct[2]
        if ok and acct is not None and acct[3]:
            if not totp_code:
                failure = TotpRequiredError()
            elif not pyotp.TOTP(acct[4]).verify(totp_code, for_time=now, valid_window=1):
                ok = False
        if not ok:
            failure = AuthenticationError(BAD_CREDENTIALS)
            await conn.execute(
                "insert into login_failures (client_addr, username, at) values (%s, %s, %s)", (client_addr, name, now)
            )
            await prune_login_failures(conn, window_start)
            if acct is not None:
                recent = acct[6] is not None and acct[6] > window_start
                failed = (acct[5] if recent else 0) + 1
                locked_until = now + timedelta(seconds=policy.duration_s) if failed >= policy.threshold else None
                await conn.execute(
                    "update users set failed_logins = %s, last_failed_at = %s, locked_until = %s where id = %s",
                    (0 if locked_until else failed, now, locked_until, acct[0]),
                )
        elif failure is None and acct is not None:
            if passwords.needs_rehash(acct[1]):
                await conn.execute(
                    "update users set password_hash = %s where id = %s", (passwords.hash_password(password), acct[0])
                )
            await conn.execute(
                "update users set failed_logins = 0, last_failed_at = null, locked_until = null where id = %s",
                (acct[0],),
            )
            session_id = uuid.uuid4()
            refresh, digest = tokens.new_refresh_token(session_id)
            await conn.execute(
                "insert into auth_sessions (id, user_id, refresh_hash, created_at, last_used_at, expires_at, "
                "client_addr, user_agent) values (%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    session_id,
                    acct[0],
                    digest,
                    now,
                    now,
                    now + timedelta(seconds=policy.refresh_ttl_s),
                    client_addr,
                    (user_agent or "")[:300],
                ),
            )
            result = LoginResult(await get_user(conn, acct[0]), session_id, refresh)
    if failure is not None:
        raise failure
    assert result is not None
    return result


async def refresh(conn: AsyncConnection[Any], token: str, policy: LoginPolicy, now: datetime) -> LoginResult:
    """Rotate a refresh token; a stale one (replayed or stolen) revokes its session."""
    session_id, raw = tokens.split_refresh_token(token)
    replayed = False
    result: LoginResult | None = None
    async with conn.transaction():
        cur = await conn.execute(
            "select s.user_id, s.refresh_hash from auth_sessions s join users u on u.id = s.user_id "
            "where s.id = %s and s.revoked_at is null and s.expires_at > %s and not u.disabled for update of s",
            (session_id, now),
        )
        row = await cur.fetchone()
        if row is None:
            raise AuthenticationError("session ended")
        if bytes(row[1]) != tokens.refresh_hash(raw):
            replayed = True
            await conn.execute("update auth_sessions set revoked_at = %s where id = %s", (now, session_id))
        else:
            new_token, digest = tokens.new_refresh_token(session_id)
            await conn.execute(
                "update auth_sessions set refresh_hash = %s, last_used_at = %s, expires_at = %s where id = %s",
                (digest, now, now + timedelta(seconds=policy.refresh_ttl_s), session_id),
            )
            result = LoginResult(await session_user(conn, row[0], session_id, now), session_id, new_token)
    if replayed:
        raise AuthenticationError("refresh token reused; session revoked")
    assert result is not None
    return result


async def logout(conn: AsyncConnection[Any], session_id: uuid.UUID, now: datetime) -> None:
    """Revoke a session (its access tokens stop working on the next request)."""
    await conn.execute(
        "update auth_sessions set revoked_at = %s where id = %s and revoked_at is null", (now, session_id)
    )


async def begin_totp(conn: AsyncConnection[Any], user_id: uuid.UUID) -> str:
    """Store a new (not yet enabled) TOTP secret; returns it."""
    secret = pyotp.random_base32()
    await conn.execute("update users set totp_secret = %s, totp_enabled = false where id = %s", (secret, user_id))
    return secret


async def enable_totp(conn: AsyncConnection[Any], user_id: uuid.UUID, code: str, now: datetime) -> None:
    """Turn TOTP on after checking one code against the pending secret."""
    cur = await conn.execute("select totp_secret from users where id = %s", (user_id,))
    row = await cur.fetchone()
    if row is None or row[0] is None:
        raise ConflictError("start TOTP setup first")
    if not pyotp.TOTP(row[0]).verify(code, for_time=now, valid_window=1):
        raise ConflictError("invalid totp code")
    await conn.execute("update users set totp_enabled = true where id = %s", (user_id,))


async def prune_login_failures(conn: AsyncConnection[Any], older_than: datetime) -> None:
    """Forget failures outside every window (called opportunistically)."""
    await conn.execute("delete from login_failures where at < %s", (older_than,))
