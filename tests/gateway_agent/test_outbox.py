"""Outbox: durable FIFO with stable ids, bounded size, per-device state, survives kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway_agent.errors import OutboxError
from gateway_agent.outbox import Outbox, OutboxOverflow
from tests.processes import Spawner

REPO = Path(__file__).resolve().parents[2]


def reading(i: int) -> dict[str, object]:
    return {"metric": "heart_rate", "value": float(i), "unit": "/min"}


def test_append_peek_ack_in_capture_order(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite3") as box:
        ids = box.append([("AA:00:00:00:00:01", reading(i)) for i in range(5)])
        assert len(set(ids)) == 5
        assert box.depth() == 5
        batch = box.peek_batch(3)
        assert [e.id for e in batch] == ids[:3]
        assert [json.loads(e.body)["value"] for e in batch] == [0.0, 1.0, 2.0]
        assert json.loads(batch[0].body)["id"] == ids[0]
        assert next(iter(json.loads(batch[0].body))) == "id"
        # a second batch can be taken while the first is in flight
        assert [e.id for e in box.peek_batch(10, after_seq=batch[-1].seq)] == ids[3:]
        assert box.ack([ids[1], ids[0], "not-there"]) == 2
        assert box.ack([ids[1]]) == 0
        assert [e.id for e in box.peek_batch(10)] == ids[2:]
        assert box.depth() == 3
    with Outbox(tmp_path / "o.sqlite3") as box:  # reopened: same ids, same order
        assert box.depth() == 3
        assert [e.id for e in box.peek_batch(10)] == ids[2:]
        more = box.append([("AA:00:00:00:00:02", reading(9))])
        seqs = [e.seq for e in box.peek_batch(10)]
        assert seqs == sorted(seqs)
        assert box.peek_batch(10)[-1].id == more[0]


def test_sequence_stays_monotonic_after_emptying(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite3") as box:
        box.append([("A", reading(0))])
        last = box.peek_batch(1)[0]
        box.ack([last.id])
        box.append([("A", reading(1))])
        assert box.peek_batch(1)[0].seq > last.seq


def test_bounded_drop_oldest_counts_and_emits_event(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite3", max_readings=10) as box:
        ids = box.append([("A", reading(i)) for i in range(8)])
        assert box.next_event() is None
        ids += box.append([("A", reading(i)) for i in range(8, 13)])
        assert box.depth() == 10
        assert [e.id for e in box.peek_batch(100)] == ids[3:]
        assert box.next_event() == OutboxOverflow(dropped=3, total_dropped=3, max_readings=10)
        assert box.next_event() is None
        box.append([("A", reading(99))])
        assert box.next_event() == OutboxOverflow(dropped=1, total_dropped=4, max_readings=10)
    with Outbox(tmp_path / "o.sqlite3", max_readings=10) as box:
        assert box.dropped() == 4


def test_per_device_state_persists(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite3") as box:
        assert box.racp_last_seq("aa:bb:cc:dd:ee:ff") is None
        assert box.clock_offset("AA:BB:CC:DD:EE:FF") is None
        box.set_racp_last_seq("aa:bb:cc:dd:ee:ff", 41)
        box.set_clock_offset("AA:BB:CC:DD:EE:FF", -3.5)
        box.set_racp_last_seq("AA:BB:CC:DD:EE:FF", 42)
    with Outbox(tmp_path / "o.sqlite3") as box:
        assert box.racp_last_seq("AA:BB:CC:DD:EE:FF") == 42
        assert box.clock_offset("aa:bb:cc:dd:ee:ff") == -3.5


def test_wal_and_full_sync(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite3") as box:
        assert box._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert box._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_closed_outbox_raises(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    box.close()
    with pytest.raises(OutboxError, match="closed"):
        box.append([("A", reading(0))])


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(OutboxError, match=r"o\.sqlite3"):
        Outbox(path)


WRITER = textwrap.dedent(
    """
    import sys
    from gateway_agent.outbox import Outbox
    box = Outbox(sys.argv[1])
    out = sys.stdout
    i = 0
    while True:
        ids = box.append([("AA:00:00:00:00:0%d" % (i % 5), {"metric": "spo2", "value": float(i), "unit": "%"})
                          for _ in range(1 + i % 3)])
        out.write("+ " + " ".join(ids) + "\\n")
        out.flush()
        if i % 7 == 0:
            acked = [e.id for e in box.peek_batch(2)]
            out.write("? " + " ".join(acked) + "\\n")  # intent: these may vanish from here on
            out.flush()
            box.ack(acked)
        i += 1
    """
)


@pytest.mark.slow
def test_sigkill_mid_stream_loses_nothing_returned(tmp_path: Path, spawn: Spawner) -> None:
    path = tmp_path / "o.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    appended: list[str] = []
    maybe_acked: set[str] = set()
    for _round in range(3):
        proc = spawn([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout is not None
        with proc.stdout:
            lines = 0
            while lines < 400:
                line = proc.stdout.readline()
                assert line, "writer died"
                lines += 1
                kind, *ids = line.split()
                (appended.extend if kind == "+" else maybe_acked.update)(ids)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            for line in proc.stdout.read().split("\n")[:-1]:  # complete lines written before the signal hit
                kind, *ids = line.split()
                (appended.extend if kind == "+" else maybe_acked.update)(ids)
        with Outbox(path) as box:
            assert box.integrity_check() == "ok"
            entries = box.peek_batch(1_000_000)
            assert [e.seq for e in entries] == sorted(e.seq for e in entries)
            stored = {e.id for e in entries}
            lost = [i for i in appended if i not in stored and i not in maybe_acked]
            assert lost == []
            assert len(stored) == box.depth()
