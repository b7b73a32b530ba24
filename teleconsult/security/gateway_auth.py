"""Gateway authentication over HTTP with the broker credential (``gateway_id`` + secret), for ``POST /fhir/r4``.

The secret is the one ``tbib pki enroll-gateway`` printed, stored hashed in ``gateway_credentials`` (Mosquitto
``$7$`` PBKDF2-HMAC-SHA512, :func:`teleconsult.security.mosquitto.verify_password`). Every call reads the credential
row, so a revocation (``revoked_at``) or a re-key refuses the next request at once. The PBKDF2 check itself is cached:
a :class:`VerifiedSecrets` remembers, for ``ttl_s`` seconds, that sha256(secret) matched a given ``secret_hash``; a
re-key changes the hash, so the cached pair no longer applies. A gateway may write only for the patients bound to it
(``gateways.patient_id`` and the ``patient_id`` of its ``devices`` rows).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any, Final

from psycopg import AsyncConnection

from teleconsult.errors import AuthenticationError
from teleconsult.security import mosquitto

ROLE: Final = "gateway"
"""``audit_events.actor_role`` of a gateway."""


@dataclass(frozen=True, slots=True)
class GatewayPrincipal:
    """An authenticated gateway and the patients it may import for."""

    gateway_id: str
    patient_ids: frozenset[Any]

    @property
    def actor(self) -> str:
        """``audit_events.actor_username``: ``gateway:<id>``."""
        return f"{ROLE}:{self.gateway_id}"


class VerifiedSecrets:
    """A small time-bounded cache of ``(gateway id, secret_hash, sha256(secret))`` triples that passed PBKDF2."""

    def __init__(self, *, ttl_s: float = 60.0, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._seen: dict[tuple[str, str], tuple[bytes, float]] = {}

    def check(self, gateway_id: str, secret_hash: str, secret: str, now: float) -> bool:
        """Whether ``secret`` matches ``secret_hash`` (PBKDF2 only when not verified in the last ``ttl_s``)."""
        digest = hashlib.sha256(secret.encode()).digest()
        key = (gateway_id, secret_hash)
        hit = self._seen.get(key)
        if hit is not None and hit[1] > now and hmac.compare_digest(hit[0], digest):
            return True
        if not mosquitto.verify_password(secret_hash, secret):
            return False
        if len(self._seen) >= self.max_entries:
            self._seen = {k: v for k, v in self._seen.items() if v[1] > now}
            if len(self._seen) >= self.max_entries:
                self._seen.clear()
        self._seen[key] = (digest, now + self.ttl_s)
        return True


async def authenticate_gateway(
    conn: AsyncConnection[Any], gateway_id: str, secret: str, cache: VerifiedSecrets, now: float
) -> GatewayPrincipal:
    """The gateway whose live credential matches ``secret``; :class:`AuthenticationError` otherwise."""
    cur = await conn.execute(
        "select secret_hash from gateway_credentials where gateway_id = %s and revoked_at is null", (gateway_id,)
    )
    row = await cur.fetchone()
    if row is None or not cache.check(gateway_id, str(row[0]), secret, now):
        raise AuthenticationError("unknown gateway, wrong secret or revoked credential")
    cur = await conn.execute(
        "select patient_id from gateways where id = %s and patient_id is not null"
        " union select patient_id from devices where gateway_id = %s and patient_id is not null",
        (gateway_id, gateway_id),
    )
    return GatewayPrincipal(gateway_id, frozenset(r[0] for r in await cur.fetchall()))
