"""Framing of cross-node signaling messages on PostgreSQL NOTIFY (channel ``tbib_signaling``, used by
:mod:`.roomstore` to hand frames to the node that holds the recipient's websocket).

NOTIFY payloads are limited to 8000 bytes: larger messages are zlib-compressed and, if still too large, split into
chunks sent in one transaction (PostgreSQL keeps one transaction's notifications together and in order).
"""

from __future__ import annotations

import base64
import json
import secrets
import zlib
from typing import Any, Final

CHANNEL: Final = "tbib_signaling"
MAX_PAYLOAD: Final = 7900


def encode_chunks(message: dict[str, Any], max_payload: int = MAX_PAYLOAD) -> list[str]:
    """Payloads for one message: ``j<json>`` when small, else ``z<id>:<i>:<n>:<base64 zlib chunk>``."""
    text = json.dumps(message, separators=(",", ":"))
    if len(text.encode()) + 1 <= max_payload:
        return ["j" + text]
    blob = base64.b64encode(zlib.compress(text.encode(), 6)).decode("ascii")
    msg_id = secrets.token_hex(8)
    size = max_payload - 64
    parts = [blob[i : i + size] for i in range(0, len(blob), size)]
    return [f"z{msg_id}:{i}:{len(parts)}:{part}" for i, part in enumerate(parts)]


class Reassembler:
    """Turns payloads back into messages (chunks of one message arrive contiguously)."""

    def __init__(self) -> None:
        self._partial: dict[str, list[str]] = {}

    def feed(self, payload: str) -> dict[str, Any] | None:
        """The message completed by ``payload``, if any."""
        if payload.startswith("j"):
            message: dict[str, Any] = json.loads(payload[1:])
            return message
        if not payload.startswith("z"):
            raise ValueError("unknown signaling payload")
        msg_id, index, count, part = payload[1:].split(":", 3)
        parts = self._partial.setdefault(msg_id, [])
        if int(index) != len(parts):
            self._partial.pop(msg_id, None)
            raise ValueError(f"chunk {index} of {msg_id} out of order")
        parts.append(part)
        if len(parts) < int(count):
            return None
        del self._partial[msg_id]
        decoded: dict[str, Any] = json.loads(zlib.decompress(base64.b64decode("".join(parts))))
        return decoded
