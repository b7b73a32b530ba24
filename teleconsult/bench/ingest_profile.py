"""Where an ingest worker's CPU goes: py-spy samples of the running workers, folded into the stages of the path.

``tbib bench ingest --profile`` records every worker with ``py-spy record --nonblocking -f raw`` during the first
steady phase and puts :func:`breakdown` of the samples in the result (``profile``): the share of the workers' busy
samples per stage (idle threads are not sampled, so the shares are of CPU, not of wall time). A stack belongs to the
first stage in :data:`STAGES` order whose test matches one of its frames, so a psycopg frame under the receipt code is
"receipts", not "db".
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

_FRAME: Final = re.compile(r"^(?P<func>[^ ]+) \((?P<file>[^:]+)(?::(?P<line>\d+))?\)$")


def _line_of(module: object, text: str) -> tuple[str, int]:
    """(file name, first line number) of ``text`` in ``module``'s source."""
    path = Path(str(getattr(module, "__file__", "")))
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if text in line:
            return path.name, i
    return path.name, -1


def _idle_leaves() -> set[tuple[str, int]]:
    """(file name, line) of the calls that block without CPU (py-spy ``--nonblocking`` samples them as active)."""
    import paho.mqtt.client

    from teleconsult.ingest import link

    return {
        _line_of(paho.mqtt.client, "socklist = select.select("),  # paho's network thread waiting for the socket
        _line_of(link, "time.sleep(self.read_pause_s)"),  # its nap between reads
    }


def _loads_line() -> int:
    """The line of ``orjson.loads`` in :func:`teleconsult.ingest.payload.decode_general` (JSON decode proper)."""
    from teleconsult.ingest import payload

    return _line_of(payload, "doc = orjson.loads(payload)")[1]


_GENERAL: Final = ("decode_batch", "decode_general", "_check_reading")

Frame = tuple[str, str, int]
"""(function, file, line) of one stack frame."""


def _any(stack: list[Frame], test: Callable[[str, str, int], bool]) -> bool:
    return any(test(*f) for f in stack)


def _stages() -> list[tuple[str, Callable[[list[Frame]], bool]]]:
    loads = _loads_line()
    return [
        ("receipts", lambda s: _any(s, lambda fn, f, _l: "receipts" in f or fn.endswith("_send_receipts"))),
        ("mqtt send (PUBACKs)", lambda s: _any(s, lambda fn, _f, _l: fn.endswith(("_ack", "ack_many", "pubacks")))),
        ("db: COPY", lambda s: _any(s, lambda fn, f, _l: ("psycopg" in f and "copy" in fn.lower()) or "copy.py" in f)),
        ("db: other statements, commit", lambda s: _any(s, lambda _fn, f, _l: "psycopg" in f or "writer.py" in f)),
        ("json decode", lambda s: _any(s, lambda fn, _f, line: fn.endswith("decode_general") and line == loads)),
        ("msgspec decode + validation", lambda s: _any(s, lambda fn, _f, _l: fn.endswith("decode_valid"))),
        (
            "validation",
            lambda s: _any(s, lambda fn, _f, _l: fn.endswith(("decode_batch", "decode_general", "_check_reading"))),
        ),
        ("row building", lambda s: _any(s, lambda fn, f, _l: fn.endswith(("copy_rows", "_prepare")) or "batch" in f)),
        ("mqtt receive", lambda s: _any(s, lambda fn, f, _l: "paho" in f or "link.py" in f or "_on_pub" in fn)),
        ("metrics", lambda s: _any(s, lambda _fn, f, _l: "metrics.py" in f)),
        ("event loop, other", lambda _s: True),
    ]


def parse_raw(lines: Iterable[str]) -> list[tuple[list[Frame], int]]:
    """py-spy's raw (collapsed) output: one ``frame;frame;... count`` per line, root first."""
    out = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        stack_text, _, count = line.rpartition(" ")
        frames: list[Frame] = []
        for part in stack_text.split(";"):
            m = _FRAME.match(part)
            if m:
                frames.append((m["func"], m["file"], int(m["line"] or -1)))
            else:
                frames.append((part, "", -1))
        out.append((frames, int(count)))
    return out


def breakdown(stacks: Iterable[tuple[list[Frame], int]]) -> dict[str, float]:
    """Share (%) of the busy samples per stage, in :func:`_stages` order, with ``samples`` their total (samples of a
    thread blocked in select or in the read path's nap are left out)."""
    stages = _stages()
    idle = _idle_leaves()
    counts = dict.fromkeys((name for name, _ in stages), 0)
    total = 0
    for frames, n in stacks:
        leaf = frames[-1] if frames else ("", "", -1)
        if (leaf[0].endswith("select") and "selectors" in leaf[1]) or (Path(leaf[1]).name, leaf[2]) in idle:
            continue  # waiting, not working
        total += n
        for name, test in stages:
            if test(frames):
                counts[name] += n
                break
    out: dict[str, float] = {name: round(100 * c / max(total, 1), 1) for name, c in counts.items()}
    out["samples"] = total
    return out


class Recorder:
    """``py-spy record`` of some processes for a while (in the background); :meth:`result` folds the samples."""

    def __init__(self, pids: list[int], seconds: float, directory: Path, rate: int = 100) -> None:
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        self.files = [directory / f"py-spy-{pid}.txt" for pid in pids]
        self.procs = [
            subprocess.Popen(  # noqa: S603 - the dev extra's py-spy on our own workers
                [spy, "record", "--nonblocking", "-r", str(rate), "-d", str(max(int(seconds), 1)), "-f", "raw",
                 "-o", str(f), "-p", str(pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            for pid, f in zip(pids, self.files, strict=True)
        ]  # fmt: skip

    def result(self, timeout: float = 60) -> dict[str, float]:
        """Wait for the recordings; the breakdown of all of them together."""
        for p in self.procs:
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.terminate()
                p.wait(10)
        stacks: list[tuple[list[Frame], int]] = []
        for f in self.files:
            if f.exists():
                stacks += parse_raw(f.read_text().splitlines())
                f.unlink()
        with contextlib.suppress(OSError):
            self.files[0].parent.rmdir()
        return breakdown(stacks)
