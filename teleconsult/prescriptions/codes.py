"""Access codes of prescriptions and the QR payload (pure).

A code is 80 random bits in Crockford base32 (16 characters, shown ``XXXX-XXXX-XXXX-XXXX``). The server keeps an
HMAC-SHA256 of it (keyed by the server secret, bound to the prescription id) to check what a pharmacy types or scans,
and a copy sealed with AES-256-GCM (key derived from the server secret, the prescription id as associated data) so that
the patient and the printed ordonnance can show it again. The QR holds ``<base>/#/pharmacy/<prescription id>/<code>``:
the code is in the URL fragment, which browsers never send to a server.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_BITS: Final = 80
CODE_LENGTH: Final = CODE_BITS // 5
_LOOKALIKE: Final = str.maketrans({"O": "0", "I": "1", "L": "1", "-": None, " ": None})
_QR_RE: Final = re.compile(
    r"(?:^|/)(?P<id>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})/(?P<code>[0-9A-Za-z-]{16,19})/?$"
)


def generate() -> str:
    """A fresh code (16 characters, no dashes)."""
    n = secrets.randbits(CODE_BITS)
    return "".join(ALPHABET[(n >> (5 * i)) & 31] for i in reversed(range(CODE_LENGTH)))


def normalize(text: str) -> str | None:
    """The canonical code of what a person typed (case, dashes, spaces, O/I/L look-alikes), or None if not a code."""
    code = text.strip().upper().translate(_LOOKALIKE)
    if len(code) != CODE_LENGTH or any(c not in ALPHABET for c in code):
        return None
    return code


def display(code: str) -> str:
    """``7KQ2M9XD4TPAZ3HW`` -> ``7KQ2-M9XD-4TPA-Z3HW``."""
    return "-".join(code[i : i + 4] for i in range(0, len(code), 4))


def _derive(secret: str, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret.encode())


def digest(secret: str, prescription_id: uuid.UUID, code: str) -> bytes:
    """HMAC-SHA256 of the code bound to the prescription (what the database keeps for checking)."""
    key = _derive(secret, b"tbib prescription access code v1")
    return hmac.new(key, prescription_id.bytes + code.encode(), hashlib.sha256).digest()


def matches(secret: str, prescription_id: uuid.UUID, code: str, stored: bytes) -> bool:
    """Constant-time check of a normalized code against the stored digest."""
    return hmac.compare_digest(digest(secret, prescription_id, code), stored)


def seal(secret: str, prescription_id: uuid.UUID, code: str) -> bytes:
    """The code encrypted for later display (nonce + ciphertext)."""
    nonce = secrets.token_bytes(12)
    aead = AESGCM(_derive(secret, b"tbib prescription access code seal v1"))
    return nonce + aead.encrypt(nonce, code.encode(), prescription_id.bytes)


def unseal(secret: str, prescription_id: uuid.UUID, sealed: bytes) -> str:
    """The code back (raises ``cryptography.exceptions.InvalidTag`` if the row or the secret changed)."""
    aead = AESGCM(_derive(secret, b"tbib prescription access code seal v1"))
    return aead.decrypt(sealed[:12], sealed[12:], prescription_id.bytes).decode()


def qr_payload(base_url: str, prescription_id: uuid.UUID, code: str) -> str:
    """What the QR code holds: the pharmacist page of the dashboard with id and code in the fragment."""
    return f"{base_url.rstrip('/')}/#/pharmacy/{prescription_id}/{code}"


def parse_qr(text: str) -> tuple[uuid.UUID, str] | None:
    """``(prescription id, normalized code)`` from a scanned payload (the URL, or ``<id>/<code>``), or None."""
    m = _QR_RE.search(text.strip())
    if m is None:
        return None
    code = normalize(m.group("code"))
    return None if code is None else (uuid.UUID(m.group("id")), code)
