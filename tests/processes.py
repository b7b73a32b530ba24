"""Processes started by tests are always reaped and their pipes closed, even when the test fails.

``spawn`` (fixture, in ``tests/conftest.py``) is ``subprocess.Popen`` whose finalizer, after the test: SIGTERM, a
grace period, SIGKILL, ``wait()``, and closing of every pipe — so a failing assertion never leaves a process running
into the next test (nor an unclosed pipe that a later test's ``ResourceWarning`` check would trip over).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Iterator
from typing import Any


class Spawner:
    """Starts processes and reaps them all on :meth:`close`."""

    def __init__(self, grace_s: float = 10.0) -> None:
        self.grace_s = grace_s
        self.procs: list[subprocess.Popen[Any]] = []

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        proc: subprocess.Popen[Any] = subprocess.Popen(argv, **kwargs)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(self.grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
        self.procs.clear()


@contextlib.contextmanager
def spawner(grace_s: float = 10.0) -> Iterator[Spawner]:
    """A :class:`Spawner` closed on exit."""
    s = Spawner(grace_s)
    try:
        yield s
    finally:
        s.close()
