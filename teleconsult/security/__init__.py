"""Identity, access control, audit and device credentials (issue 6).

- :mod:`.models` — ``Role``, ``User`` (frozen domain values).
- :mod:`.passwords` — argon2id hashing.  :mod:`.tokens` — JWT access tokens, refresh tokens, CSRF tokens.
- :mod:`.accounts` — users table, login with lockout, sessions.  :mod:`.care_team` — who may see which patient.
- :mod:`.audit` — the append-only, hash-chained audit log.  :mod:`.consent` — per-purpose consent.
- :mod:`.mosquitto` / :mod:`.enrolment` — gateway broker credentials and ACL.  :mod:`.pki` — development CA.
"""
