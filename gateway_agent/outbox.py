"""Durable outbox of captured readings: SQLite in WAL mode with ``synchronous=FULL``.

Contract
- :meth:`Outbox.append` assigns each reading a stable id (uuid4, at capture) and a monotonic sequence number, and
  returns only after the transaction is on disk (WAL + fsync): a reading whose ``append`` returned survives kill -9 and
  power loss.
- :meth:`Outbox.peek_batch` returns the oldest entries in capture order (optionally after a sequence number, so a
  publisher can keep several batches in flight); entries stay until the server's commit receipt removes them
  (:meth:`Outbox.delete_range`, :meth:`Outbox.ack`). PUBACK only marks them ``sent`` (:meth:`Outbox.mark_sent`),
  except in PUBACK mode (an old server without receipts), where :meth:`Outbox.ack` removes them on PUBACK.
- Every write (append, mark, delete) commits with ``synchronous=FULL``: a delete whose call returned is on disk, and a
  row whose receipt arrived but whose delete did not reach the disk is simply re-sent with the same id (idempotent
  downstream); it is never lost.
- The outbox has an ``epoch``: a random 64-bit number chosen when the file is created. Batches carry it so that a
  receipt meant for an older outbox file (same sequence numbers, other readings) is ignored.
- ``capture_log``: optional file to which the id of every reading is appended once its append is committed (the
  chaos suite counts the readings the devices produced from it, independently of the outbox).
- Bounded: beyond ``max_readings`` the oldest entries are dropped, counted (persisted) and reported as an
  :class:`OutboxOverflow` event through :meth:`Outbox.next_event`.
- Per-device state that must survive restarts lives here too: last RACP sequence number (glucose meters) and the last
  measured clock offset.

The outbox stores each reading as the UTF-8 JSON text of its payload object (see :mod:`gateway_agent.payload`), so a
replay concatenates stored texts without decoding them. One process owns an outbox file; methods are not thread-safe.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from gateway_agent.errors import OutboxError

SCHEMA_VERSION: Final = 2

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS readings (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    device TEXT NOT NULL,
    body TEXT NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS devices (
    address TEXT PRIMARY KEY,
    racp_last_seq INTEGER,
    clock_offset_s REAL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One stored reading: capture sequence, stable id, device address and the reading's JSON object text."""

    seq: int
    id: str
    device: str
    body: str


@dataclass(frozen=True, slots=True)
class OutboxOverflow:
    """The outbox was full: ``dropped`` oldest readings deleted now, ``total_dropped`` since the file was created."""

    dropped: int
    total_dropped: int
    max_readings: int


class Outbox:
    """A bounded, durable FIFO of readings keyed by stable ids."""

    def __init__(
        self, path: Path | str, *, max_readings: int = 1_000_000, capture_log: Path | str | None = None
    ) -> None:
        if max_readings < 1:
            raise ValueError("max_readings must be >= 1")
        self.path = Path(path)
        self.max_readings = max_readings
        self._events: deque[OutboxOverflow] = deque()
        try:
            if str(path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL").fetchone()
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
            version = self._meta("schema_version")
            if version is None:
                self._set_meta("schema_version", SCHEMA_VERSION)
            elif version == 1:  # v1 -> v2: the sent mark and the epoch (receipts)
                with self._transaction():
                    self._db.execute("ALTER TABLE readings ADD COLUMN sent INTEGER NOT NULL DEFAULT 0")
                    self._set_meta("schema_version", SCHEMA_VERSION)
            elif version != SCHEMA_VERSION:
                raise OutboxError(f"outbox {path}: schema version {version}, expected {SCHEMA_VERSION}")  # noqa: TRY301
            epoch = self._meta("epoch")
            if epoch is None:
                epoch = secrets.randbits(62)
                self._set_meta("epoch", epoch)
            row = self._db.execute("SELECT count(*) FROM readings").fetchone()
        except (sqlite3.Error, OutboxError) as exc:
            if hasattr(self, "_db"):
                self._db.close()
            if isinstance(exc, OutboxError):
                raise
            raise OutboxError(f"outbox {path}: {exc}") from exc
        self._depth: int = int(row[0])
        self.epoch: int = epoch
        """Random number of this outbox file (in every batch, echoed by receipts)."""
        self._capture_fd: int | None = None
        if capture_log is not None:
            try:
                self._capture_fd = os.open(capture_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            except OSError as exc:
                self._db.close()
                raise OutboxError(f"capture log {capture_log}: {exc.strerror}") from exc
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Checkpoint and close the database."""
        if not self._closed:
            self._closed = True
            self._db.close()
            if self._capture_fd is not None:
                os.close(self._capture_fd)

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- readings --------------------------------------------------------------------------------------------------
    def append(
        self, readings: Iterable[tuple[str, Mapping[str, Any]]], *, racp_last_seq: tuple[str, int] | None = None
    ) -> list[str]:
        """Store ``(device_address, reading_object)`` pairs durably; return their new ids (in order).

        Each object gets ``"id"`` set to a new uuid4 as its first key; it must be JSON-serialisable.
        ``racp_last_seq=(address, seq)`` records a glucose record's sequence number in the same transaction, so a
        record is never both stored and fetched again after a crash.
        """
        self._check_open()
        rows: list[tuple[str, str, str]] = []
        ids: list[str] = []
        for device, reading in readings:
            rid = str(uuid.uuid4())
            body = json.dumps({"id": rid, **{k: v for k, v in reading.items() if k != "id"}}, separators=(",", ":"))
            rows.append((rid, device, body))
            ids.append(rid)
        if not rows and racp_last_seq is None:
            return ids
        overflow = max(0, self._depth + len(rows) - self.max_readings)
        try:
            with self._transaction():
                if overflow:
                    self._db.execute(
                        "DELETE FROM readings WHERE seq IN (SELECT seq FROM readings ORDER BY seq LIMIT ?)", (overflow,)
                    )
                    dropped_now = self._db.execute("SELECT changes()").fetchone()[0]
                    total = (self._meta("dropped") or 0) + dropped_now
                    self._set_meta("dropped", total)
                self._db.executemany("INSERT INTO readings (id, device, body) VALUES (?, ?, ?)", rows)
                if racp_last_seq is not None:
                    self._set_device_value("racp_last_seq", racp_last_seq[0], int(racp_last_seq[1]))
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {self.path}: append failed: {exc}") from exc
        if overflow:
            self._depth -= dropped_now
            self._events.append(OutboxOverflow(dropped_now, total, self.max_readings))
        self._depth += len(rows)
        if self._capture_fd is not None and ids:
            os.write(self._capture_fd, ("\n".join(ids) + "\n").encode())
        return ids

    def peek_batch(self, n: int, *, after_seq: int = 0) -> list[OutboxEntry]:
        """The ``n`` oldest entries with ``seq > after_seq``, in capture order (nothing is removed)."""
        self._check_open()
        cur = self._db.execute(
            "SELECT seq, id, device, body FROM readings WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, n)
        )
        return [OutboxEntry(int(s), str(i), str(d), str(b)) for s, i, d, b in cur.fetchall()]

    def entries_between(self, first: int, last: int) -> list[OutboxEntry]:
        """The entries still stored with ``first <= seq <= last`` (a batch to re-send), in capture order."""
        self._check_open()
        cur = self._db.execute(
            "SELECT seq, id, device, body FROM readings WHERE seq BETWEEN ? AND ? ORDER BY seq", (first, last)
        )
        return [OutboxEntry(int(s), str(i), str(d), str(b)) for s, i, d, b in cur.fetchall()]

    def mark_sent(self, first: int, last: int) -> int:
        """Mark the readings of the batch ``[first, last]`` sent (its PUBACK arrived); return how many were marked."""
        return self._write("UPDATE readings SET sent = 1 WHERE seq BETWEEN ? AND ? AND sent = 0", (first, last))

    def delete_range(self, first: int, last: int) -> int:
        """Remove the readings of the batch ``[first, last]`` (its commit receipt arrived); return how many."""
        removed = self._write("DELETE FROM readings WHERE seq BETWEEN ? AND ?", (first, last))
        self._depth -= removed
        return removed

    def delete_sent(self) -> int:
        """Remove every reading marked sent (switch to PUBACK mode: the broker acknowledged them all)."""
        removed = self._write("DELETE FROM readings WHERE sent = 1", ())
        self._depth -= removed
        return removed

    def sent_depth(self) -> int:
        """How many stored readings are marked sent (PUBACK received, receipt not yet)."""
        self._check_open()
        return int(self._db.execute("SELECT count(*) FROM readings WHERE sent = 1").fetchone()[0])

    def ack(self, ids: Sequence[str]) -> int:
        """Remove the readings with these ids (receipt by ids, or PUBACK mode); return how many were still stored.

        Committed with ``synchronous=FULL`` like every other write.
        """
        self._check_open()
        if not ids:
            return 0
        removed = 0
        try:
            with self._transaction():
                for start in range(0, len(ids), 500):
                    chunk = ids[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    removed += self._db.execute(f"DELETE FROM readings WHERE id IN ({marks})", chunk).rowcount  # noqa: S608
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {self.path}: ack failed: {exc}") from exc
        self._depth -= removed
        return removed

    def _write(self, sql: str, params: tuple[int, ...]) -> int:
        self._check_open()
        try:
            with self._transaction():
                return int(self._db.execute(sql, params).rowcount)
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {self.path}: {exc}") from exc

    def depth(self) -> int:
        """How many readings are stored (not yet receipted)."""
        return self._depth

    def dropped(self) -> int:
        """How many readings were dropped because the outbox was full, since the file was created."""
        self._check_open()
        return self._meta("dropped") or 0

    def next_event(self) -> OutboxOverflow | None:
        """The next overflow event, if any (sans-I/O style: the caller publishes it)."""
        return self._events.popleft() if self._events else None

    # -- per-device state -------------------------------------------------------------------------------------------
    def racp_last_seq(self, address: str) -> int | None:
        """The last glucose record sequence number stored for this device."""
        return self._device_value("racp_last_seq", address)  # type: ignore[return-value]

    def set_racp_last_seq(self, address: str, seq: int) -> None:
        """Persist the last glucose record sequence number captured from this device."""
        self._set_device_value("racp_last_seq", address, int(seq))

    def clock_offset(self, address: str) -> float | None:
        """The last measured clock offset (seconds, gateway UTC minus the device clock read as UTC) of this device."""
        value = self._device_value("clock_offset_s", address)
        return None if value is None else float(value)

    def set_clock_offset(self, address: str, offset_s: float) -> None:
        """Persist the measured clock offset (seconds, gateway UTC minus the device clock read as UTC)."""
        self._set_device_value("clock_offset_s", address, float(offset_s))

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` result (``"ok"`` when sound)."""
        self._check_open()
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

    # -- internals --------------------------------------------------------------------------------------------------
    def _device_value(self, column: str, address: str) -> int | float | None:
        self._check_open()
        row = self._db.execute(f"SELECT {column} FROM devices WHERE address = ?", (address.upper(),)).fetchone()  # noqa: S608
        return None if row is None else row[0]

    def _set_device_value(self, column: str, address: str, value: float) -> None:
        self._check_open()
        try:
            self._db.execute(
                f"INSERT INTO devices (address, {column}) VALUES (?, ?) "  # noqa: S608
                f"ON CONFLICT(address) DO UPDATE SET {column} = excluded.{column}",
                (address.upper(), value),
            )
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {self.path}: {exc}") from exc

    def _meta(self, key: str) -> int | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else int(row[0])

    def _set_meta(self, key: str, value: int) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def _transaction(self) -> _Tx:
        return _Tx(self._db)

    def _check_open(self) -> None:
        if self._closed:
            raise OutboxError(f"outbox {self.path} is closed")


class _Tx:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
