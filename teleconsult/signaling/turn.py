"""ICE server lists with time-limited TURN credentials in coturn's REST-API format (``use-auth-secret``).

username = ``<expiry unix time>:<user>``, credential = base64(HMAC-SHA1(shared secret, username)). Our TURN server
comes first: aiortc only uses the first STUN and the first TURN server of its configuration."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True, slots=True)
class IceConfig:
    """Where peers find STUN/TURN."""

    turn_urls: tuple[str, ...] = ()
    """Our coturn URLs (``turn:host:3478?transport=udp``, ``turns:host:5349``); listed first."""
    turn_secret: bytes = b""
    """coturn ``static-auth-secret``; required when ``turn_urls`` is set."""
    stun_urls: tuple[str, ...] = ()
    """Extra STUN URLs, listed after TURN. Empty by default: no third-party STUN unless configured."""
    ttl: timedelta = field(default=timedelta(hours=2))
    """Lifetime of the TURN credentials (a call that outlives them keeps its allocation until refresh fails)."""


def turn_credentials(secret: bytes, user: str, expires_at: datetime) -> tuple[str, str]:
    """(username, password) for coturn's REST API: ``expiry:user`` and base64 HMAC-SHA1 over it."""
    if not secret:
        raise ValueError("TURN shared secret is empty")
    if ":" in user:
        raise ValueError("TURN user must not contain ':'")
    username = f"{int(expires_at.timestamp())}:{user}"
    digest = hmac.new(secret, username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def ice_servers(config: IceConfig, user: str, now: datetime) -> list[dict[str, Any]]:
    """The ``iceServers`` list for ``joined`` (browser RTCIceServer shape): TURN first, then STUN."""
    servers: list[dict[str, Any]] = []
    if config.turn_urls:
        username, credential = turn_credentials(config.turn_secret, user, now + config.ttl)
        servers.append({"urls": list(config.turn_urls), "username": username, "credential": credential})
    if config.stun_urls:
        servers.append({"urls": list(config.stun_urls)})
    return servers
