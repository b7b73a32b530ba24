"""A ``tbib demo`` process under test: its output read by a thread (never a full pipe, never a blocked test), every
process it starts found by a marker in the environment, everything killed and reaped by :meth:`DemoRun.close` —
which the fixtures call in their finalizers, so that one failing test never leaves processes or pipes to the next."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

MARKER = "PYTEST_TBIB_DEMO_RUN"


def marked_processes(marker: str) -> list[tuple[int, str]]:
    """Live (not zombie) processes whose environment carries ``MARKER=marker``: (pid, command line)."""
    found = []
    needle = f"{MARKER}={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if state != "Z":
            found.append((int(entry.name), cmdline.strip()))
    return found


def _ignore_sigint() -> None:
    # As a background job of a non-interactive shell starts its commands (and some CI runners do).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class DemoRun:
    """One ``tbib demo`` child of the test."""

    def __init__(self, data_dir: Path, *args: str, ignore_sigint: bool = True) -> None:
        self.marker = uuid.uuid4().hex
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TBIB_TEST_", "TBIB_DATABASE", "TBIB_MQTT"))}
        env[MARKER] = self.marker
        env["PYTHONUNBUFFERED"] = "1"
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "teleconsult.cli.main", "demo", "--data-dir", str(data_dir), "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, env=env,
            preexec_fn=_ignore_sigint if ignore_sigint else None,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float) -> str:
        """Read output until a line contains ``text``; AssertionError (with the output so far) otherwise."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"the demo exited ({self.proc.wait()}) before {text!r}:\n{self.text}")
            self.lines.append(line)
            if text in line:
                return line
        raise AssertionError(f"no {text!r} within {timeout:.0f} s:\n{self.text}")

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def interrupt(self) -> float:
        """Ctrl-C (SIGINT to the demo process only, as a terminal's Ctrl-C reaches only its foreground process group,
        of which the demo's children are not members); returns the time it was sent (monotonic)."""
        self.proc.send_signal(signal.SIGINT)
        return time.monotonic()

    def wait_exit(self, timeout: float) -> int:
        """The exit code; the output read to its end."""
        code = self.proc.wait(timeout)
        self._reader.join(5)
        while (line := self._queue.get_nowait() if not self._queue.empty() else None) is not None:
            self.lines.append(line)
        return code

    def leftovers(self, settle_s: float = 3.0) -> list[tuple[int, str]]:
        """Processes started by this demo that are still alive ``settle_s`` after its exit (SIGKILLed ones need a
        moment to be reaped)."""
        deadline = time.monotonic() + settle_s
        while (left := marked_processes(self.marker)) and time.monotonic() < deadline:
            time.sleep(0.1)
        return left

    def close(self) -> None:
        """Kill the demo and everything it started, reap, close the pipe (idempotent)."""
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        for pid, _ in marked_processes(self.marker):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self._reader.join(5)  # EOF once every writer is gone
        if self.proc.stdout is not None:
            self.proc.stdout.close()
