"""The demo's child processes and its Ctrl-C handling, with a bound on the time it takes to stop.

- :class:`Supervisor` starts each child in a session of its own (a Ctrl-C in the terminal reaches only the demo), with
  stdout+stderr to ``logs/<name>.log`` and stdin from ``/dev/null`` (no child ever holds the demo's own pipes), and
  stops them in reverse order: SIGTERM, then SIGKILL of the child's whole process group after a timeout.
- :class:`Shutdown` installs SIGINT and SIGTERM handlers explicitly — a process started with SIGINT ignored (a
  background job of a non-interactive shell, some CI runners) would otherwise never see Ctrl-C, because Python keeps an
  inherited ``SIG_IGN`` — and guarantees the end: the first signal interrupts whatever phase the demo is in (start-up
  included) and starts a watchdog; a second signal, or the watchdog firing, kills every child and service at once and
  exits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Final

#: From the first Ctrl-C to the forced end (the promise is "stopped within 10 s").
GRACE_S: Final = 8.0
#: How long each child gets between SIGTERM and SIGKILL in an orderly stop.
CHILD_STOP_S: Final = 4.0

_critical = {"depth": 0, "pending": False}


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """A first Ctrl-C inside this block is held until its end (e.g. between ``Popen`` and recording the child, so that
    no started process escapes the stop). A second one still ends everything at once."""
    _critical["depth"] += 1
    try:
        yield
    finally:
        _critical["depth"] -= 1
    if _critical["depth"] == 0 and _critical["pending"]:
        _critical["pending"] = False
        raise KeyboardInterrupt


@dataclass
class Child:
    """A process the demo started."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    critical: bool = True


@dataclass
class Supervisor:
    """Starts children with their logs and stops them in reverse order."""

    log_dir: Path
    children: list[Child] = field(default_factory=list)
    _files: list[IO[bytes]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, name: str, argv: list[str], env: dict[str, str], *, critical: bool = True) -> Child:
        """Start ``argv`` in its own session, stdout+stderr to ``logs/<name>.log``."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        path = self.log_dir / f"{name}.log"
        f = path.open("ab")
        with self._lock, uninterrupted():
            self._files.append(f)
            proc = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
                argv, env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
            child = Child(name, proc, path, critical)
            self.children.append(child)
        return child

    def dead(self) -> list[Child]:
        """Children that exited (and are not yet reported)."""
        return [c for c in self.children if c.proc.poll() is not None]

    def forget(self, child: Child) -> None:
        """Stop tracking an exited child."""
        with self._lock:
            self.children.remove(child)

    def stop_all(self, timeout: float = CHILD_STOP_S) -> list[str]:
        """SIGTERM in reverse start order, then SIGKILL (whole process group) of what did not exit; reap all.

        Returns the names of the children that had to be killed."""
        killed: list[str] = []
        with self._lock:
            children = list(reversed(self.children))
        for child in children:
            if child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in children:
            try:
                child.proc.wait(max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                killed.append(child.name)
                _killpg(child.proc)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.proc.wait(2)
        with self._lock:
            self.children.clear()
            for f in self._files:
                f.close()
            self._files.clear()
        return killed

    def kill_all(self) -> None:
        """SIGKILL every child's process group now, without waiting (signal handler and watchdog)."""
        for child in list(self.children):
            _killpg(child.proc)


def _killpg(proc: subprocess.Popen[bytes]) -> None:
    # start_new_session: the child's pid is its process group id. Skip a reaped child (its pid may be reused).
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


class Shutdown:
    """SIGINT/SIGTERM handling: the first interrupts, a second (or the watchdog after ``grace_s``) ends everything."""

    def __init__(self, kill_all: Callable[[], None], out: Callable[[str], None], grace_s: float = GRACE_S) -> None:
        self.kill_all = kill_all
        self.out = out
        self.grace_s = grace_s
        self.signals = 0
        self.stopping = False
        self._watchdog: threading.Timer | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        """Handle SIGINT and SIGTERM (main thread only), whatever the inherited disposition was."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def restore(self) -> None:
        """Put the previous handlers back and cancel the watchdog."""
        for sig, handler in self._previous.items():
            with contextlib.suppress(TypeError, ValueError):
                signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()
        if self._watchdog is not None:
            self._watchdog.cancel()

    def begin(self) -> None:
        """The orderly stop starts (after a signal, an error or the end): from now on it is bounded."""
        self.stopping = True
        if self._watchdog is None:
            self._watchdog = threading.Timer(self.grace_s, self._expired)
            self._watchdog.daemon = True
            self._watchdog.start()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signals += 1
        if self.stopping:
            self._force("second interrupt: stopping at once", 130)
        self.begin()
        if _critical["depth"]:
            _critical["pending"] = True
            return
        raise KeyboardInterrupt

    def _expired(self) -> None:
        self._force(f"not stopped within {self.grace_s:.0f} s: killing what is left", 1)

    def _force(self, why: str, code: int) -> None:
        with contextlib.suppress(Exception):
            self.out(f"stopping: {why}")
        with contextlib.suppress(Exception):
            self.kill_all()
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
