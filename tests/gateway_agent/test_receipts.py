"""Commit receipts on the gateway: the pure tracker and parser (no broker, no clock), and the outbox's receipt path."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from gateway_agent.outbox import Outbox
from gateway_agent.payload import encode_batch
from gateway_agent.receipts import (
    Receipt,
    ReceiptMode,
    ReceiptTracker,
    RejectedReading,
    batch_field,
    epoch_text,
    parse_receipt,
)

EPOCH = 0x1234_5678_9ABC_DEF0


def receipt(**doc: object) -> bytes:
    return json.dumps({"v": 1, "gateway_id": "gw-1", **doc}).encode()


def test_parse_receipt_keeps_this_epochs_ranges_and_rejects() -> None:
    mine, other = epoch_text(EPOCH), epoch_text(EPOCH + 1)
    got = parse_receipt(
        receipt(
            batches=[
                {"epoch": mine, "seq": [1, 100]},
                {"epoch": other, "seq": [1, 5]},
                {"epoch": mine, "seq": [101, 101]},
            ],
            rejected=[{"id": "r-1", "reason": "readings[3]: unknown metric 'x'"}, {"id": None, "reason": "bad id"}],
        ),
        gateway_id="gw-1",
        epoch=EPOCH,
    )
    assert got == Receipt(
        ((1, 100), (101, 101)),
        (),
        (RejectedReading("r-1", "readings[3]: unknown metric 'x'"), RejectedReading(None, "bad id")),
        foreign_ranges=1,
    )
    assert parse_receipt(receipt(committed=["a", "b"]), gateway_id="gw-1", epoch=EPOCH) == Receipt((), ("a", "b"))


def test_parse_receipt_refuses_garbage_with_a_reason() -> None:
    cases = {
        b"not json": "not JSON",
        b"[]": "not a v1 object",
        receipt(gateway_id="gw-2"): "not 'gw-1'",
        receipt(batches=[{"epoch": "x", "seq": [2, 1]}]): "batch must be",
        receipt(batches={"seq": 1}): "must be a list",
        receipt(rejected=[{"id": "x"}]): "rejected entries",
        receipt(committed=[1]): "committed must be",
    }
    for payload, reason in cases.items():
        got = parse_receipt(payload, gateway_id="gw-1", epoch=EPOCH)
        assert isinstance(got, str)
        assert reason in got


def test_tracker_times_out_then_resends_and_receipt_clears() -> None:
    t = ReceiptTracker(timeout=10.0, fallback_after=3)
    t.connected()
    assert t.get_timer() is None
    t.published(1, 100, now=0.0)
    t.published(101, 150, now=5.0)
    assert t.get_timer() == 10.0
    assert t.handle_timer(9.9).resend == ()
    assert t.handle_timer(10.0).resend == ((1, 100),)  # re-sent; its timer restarts at its next PUBACK
    assert t.pending() == 1
    t.published(1, 100, now=11.0)
    # a receipt covering both (a re-send may merge batches: ranges contained in a receipted range are done)
    assert t.received(Receipt(((1, 150),))) is False
    assert t.pending() == 0
    assert t.get_timer() is None
    assert t.timeouts == 0


def test_tracker_falls_back_to_puback_mode_without_any_receipt_then_recovers() -> None:
    t = ReceiptTracker(timeout=1.0, fallback_after=2)
    t.connected()
    t.published(1, 10, now=0.0)
    assert t.handle_timer(1.0).resend == ((1, 10),)
    assert t.mode is ReceiptMode.RECEIPTS
    t.published(1, 10, now=2.0)
    t.published(11, 20, now=2.0)
    result = t.handle_timer(3.0)
    assert result.fell_back
    assert result.resend == ()
    assert t.mode is ReceiptMode.PUBACK
    assert t.pending() == 0
    assert t.received(Receipt(((1, 20),))) is True  # the server sends receipts after all: receipt mode again
    assert t.mode is ReceiptMode.RECEIPTS
    # a new connection starts over in receipt mode with a fresh count
    t.mode = ReceiptMode.PUBACK
    t.connected()
    assert (t.mode, t.timeouts) == (ReceiptMode.RECEIPTS, 0)


def test_tracker_never_falls_back_once_a_receipt_came_on_the_connection() -> None:
    t = ReceiptTracker(timeout=1.0, fallback_after=1)
    t.connected()
    t.received(Receipt(()))
    for i in range(5):
        t.published(i * 10 + 1, i * 10 + 10, now=float(i))
        assert t.handle_timer(i + 1.0).resend == ((i * 10 + 1, i * 10 + 10),)
    assert t.mode is ReceiptMode.RECEIPTS
    never = ReceiptTracker(timeout=1.0, fallback_after=0)
    never.published(1, 1, now=0.0)
    assert not never.handle_timer(5.0).fell_back


def test_outbox_marks_sent_deletes_ranges_and_keeps_its_epoch(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    with Outbox(path, capture_log=tmp_path / "captured.txt") as box:
        ids = box.append([("AA", {"v": i}) for i in range(10)])
        epoch = box.epoch
        assert box.mark_sent(1, 5) == 5
        assert box.mark_sent(1, 5) == 0
        assert box.sent_depth() == 5
        assert [e.id for e in box.entries_between(4, 6)] == ids[3:6]
        assert box.delete_range(1, 3) == 3
        assert box.depth() == 7
        assert box.delete_sent() == 2  # 4 and 5
        assert box.depth() == 5
    assert (tmp_path / "captured.txt").read_text().split() == ids
    with Outbox(path) as box:
        assert box.epoch == epoch  # stored with the file
        assert box.depth() == 5
        assert box.sent_depth() == 0
    with Outbox(tmp_path / "other.sqlite3") as other:
        assert other.epoch != epoch


def test_v1_outbox_file_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE readings (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, device TEXT NOT NULL,"
        " body TEXT NOT NULL);"
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
        "INSERT INTO meta VALUES ('schema_version', 1);"
        "INSERT INTO readings (id, device, body) VALUES ('r1', 'AA', '{\"id\":\"r1\"}');"
    )
    db.commit()
    db.close()
    with Outbox(path) as box:
        assert box.depth() == 1
        assert box.mark_sent(1, 1) == 1
        assert box.delete_range(1, 1) == 1


def test_batch_payload_names_the_batch() -> None:
    from datetime import UTC, datetime

    payload = json.loads(
        encode_batch("gw-1", datetime(2026, 1, 1, tzinfo=UTC), ['{"id":"a"}'], batch=batch_field(EPOCH, 7, 9))
    )
    assert payload["batch"] == {"epoch": "123456789abcdef0", "seq": [7, 9]}
    assert "batch" not in json.loads(encode_batch("gw-1", datetime(2026, 1, 1, tzinfo=UTC), ['{"id":"a"}']))


RECEIPTER = """
import sys
from gateway_agent.outbox import Outbox
box = Outbox(sys.argv[1])
out = sys.stdout
while True:
    ids = box.append([("AA", {"v": i}) for i in range(20)])
    entries = box.peek_batch(20)
    first, last = entries[0].seq, entries[-1].seq
    box.mark_sent(first, last)
    out.write(f"sent {first} {last}\\n")
    out.flush()
    out.write(f"receipt {first} {last}\\n")  # the receipt arrived: from here on the rows may vanish
    out.flush()
    box.delete_range(first, last)
    out.write(f"deleted {first} {last}\\n")
    out.flush()
"""


def test_kill_9_between_receipt_and_delete_only_resends(tmp_path: Path, spawn: Any) -> None:
    """kill -9 at random points of mark/receipt/delete: a receipted row whose delete did not commit is still there
    (re-sent with its id), a delete that returned is on disk, nothing else vanishes, batches are never half deleted."""
    path = tmp_path / "o.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    rng = random.Random(15)
    for _round in range(3):
        proc = spawn([sys.executable, "-c", RECEIPTER, str(path)], stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout is not None
        events: list[tuple[str, int, int]] = []
        with proc.stdout:
            for _ in range(rng.randrange(30, 150)):
                line = proc.stdout.readline()
                assert line, "receipter died"
                kind, a, b = line.split()
                events.append((kind, int(a), int(b)))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            for line in proc.stdout.read().split("\n")[:-1]:
                kind, a, b = line.split()
                events.append((kind, int(a), int(b)))
        deleted = {(a, b) for k, a, b in events if k == "deleted"}
        receipted = {(a, b) for k, a, b in events if k == "receipt"}
        with Outbox(path) as box:
            assert box.integrity_check() == "ok"
            seqs = {e.seq for e in box.peek_batch(1_000_000)}
            for a, b in deleted:
                assert not seqs & set(range(a, b + 1))  # a delete that returned stays done
            for a, b in receipted - deleted:  # receipted, delete in progress at the kill: all there or all gone
                present = seqs & set(range(a, b + 1))
                assert present in (set(), set(range(a, b + 1)))
            # nothing that was never receipted has vanished: every seq above the last receipted batch that was
            # appended is still there
            last = max(b for _a, b in receipted)
            assert {s for s in seqs if s > last} == set(range(last + 1, max(seqs, default=last) + 1))
            box.delete_range(1, 10**9)  # start the next round clean (the check above is per round)
