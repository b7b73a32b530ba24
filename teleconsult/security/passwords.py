"""Password hashing with argon2id (argon2-cffi's RFC 9106 low-memory profile)."""

from __future__ import annotations

from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_HASHER: Final = PasswordHasher()  # argon2id, t=3, m=64 MiB, p=4
#: Verified against when the username does not exist, so timing does not reveal which accounts exist.
_DUMMY_HASH: Final = _HASHER.hash("tbib-dummy-password")
MIN_PASSWORD_LENGTH: Final = 10


def hash_password(password: str) -> str:
    """An argon2id PHC string."""
    return _HASHER.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when ``password`` matches; a missing hash costs the same time and returns False."""
    try:
        return _HASHER.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with older parameters."""
    return _HASHER.check_needs_rehash(password_hash)
