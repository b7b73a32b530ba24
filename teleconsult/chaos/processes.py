"""The real engines of a chaos run, each a process we own and may kill -9, pause or restart.

- :class:`Broker`: a private Mosquitto (the project's tuned ``config/mosquitto/tbib.conf``, persistence on, a long
  ``autosave_interval`` so that a kill -9 loses what it queued since its start or last save: the failure receipts
  exist for).
- :class:`Postgres`: a private PostgreSQL cluster made with ``initdb`` and driven with ``pg_ctl`` (run as the
  ``postgres`` user when we are root), TimescaleDB preloaded when installed; never the shared test cluster.
- :class:`Child`: any other child process (``tbib ingest``, ``gateway_agent.cli gateway run``) with kill -9, SIGSTOP and
  SIGCONT.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from teleconsult.errors import TeleconsultError

REPO: Final = Path(__file__).resolve().parents[2]
MOSQUITTO: Final = "/usr/sbin/mosquitto"


class ChaosError(TeleconsultError):
    """A chaos run could not set up or drive one of its engines."""


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    """Wait until something accepts connections on ``127.0.0.1:port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise ChaosError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


@dataclass
class Child:
    """A child process we can kill -9, pause and restart with the same command."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False
    starts: int = 0

    def start(self) -> None:
        """Start (or restart) the process; output goes to its log file."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=REPO, stdout=log, stderr=log)  # noqa: S603
        self.paused = False
        self.starts += 1

    def alive(self) -> bool:
        """Whether the process runs (or is paused)."""
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
        self.paused = False

    def pause(self) -> None:
        """SIGSTOP."""
        if self.alive() and self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        """SIGCONT."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` (then SIGKILL); the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.resume()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@dataclass
class Broker:
    """A private Mosquitto with persistence in ``dir`` and a long autosave interval."""

    dir: Path
    autosave_interval: int = 3600
    port: int = field(default_factory=free_port)
    child: Child | None = None
    hosts: list[str] = field(default_factory=list)
    """More addresses to listen on (same port): the host side of emulated links."""

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        base = "\n".join(
            line
            for line in (REPO / "config/mosquitto/tbib.conf").read_text().splitlines()
            if not line.startswith(("persistence", "autosave"))
        )
        conf = self.dir / "mosquitto.conf"
        conf.write_text(
            f"{base}\npersistence true\nautosave_interval {self.autosave_interval}\n"
            f"persistence_location {self.dir}/\nlistener {self.port} 127.0.0.1\nallow_anonymous true\n"
            + "".join(f"listener {self.port} {host}\n" for host in self.hosts)
            + ("user root\n" if os.geteuid() == 0 else "")  # keep root: our run directory may be root-only
        )
        if self.child is None:
            self.child = Child("broker", [MOSQUITTO, "-c", str(conf)], dict(os.environ), self.dir.parent / "broker.log")
        self.child.start()
        wait_port(self.port)

    def kill9(self) -> None:
        assert self.child is not None
        self.child.kill9()

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop(10)


class Postgres:
    """A private PostgreSQL cluster (``initdb`` in ``dir``) that we may crash (immediate shutdown) and restart."""

    def __init__(self, dir: Path | None = None) -> None:
        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not versions:
            raise ChaosError("no PostgreSQL binaries under /usr/lib/postgresql (apt-get install postgresql)")
        self.bindir = versions[-1].parent
        # its own directory under the system temp dir: the postgres user must reach it (pytest's are root-only)
        self.dir = dir if dir is not None else Path(tempfile.mkdtemp(prefix="tbib-chaos-pg-"))
        self.data = self.dir / "pgdata"
        self.port = free_port()
        self.root = os.geteuid() == 0
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.root:
            shutil.chown(self.dir, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        lib = Path(self._output("pg_config", "--pkglibdir").strip())
        self.timescaledb = (lib / "timescaledb.so").exists()
        preload = "shared_preload_libraries = 'timescaledb'\ntimescaledb.telemetry_level = off\n"
        with (self.data / "postgresql.conf").open("a") as f:
            f.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.dir}'\n"
                "fsync = off\nmax_connections = 100\n" + (preload if self.timescaledb else "")
            )

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _cmd(self, tool: str, *args: str) -> list[str]:
        exe = str(self.bindir / tool)
        return ["runuser", "-u", "postgres", "--", exe, *args] if self.root else [exe, *args]

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run(self._cmd(tool, *args), capture_output=True, text=True, check=False)  # noqa: S603
        if done.returncode != 0:
            raise ChaosError(f"{tool} failed: {done.stderr.strip()[-500:]}")

    def _output(self, tool: str, *args: str) -> str:
        cmd = [str(self.bindir / tool), *args]
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout  # noqa: S603

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "postgres.log"), "-w", "-t", "60", "start")

    def crash(self) -> None:
        """``pg_ctl stop -m immediate``: no checkpoint, crash recovery from the WAL at the next start."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def pids(self) -> list[int]:
        """The postmaster and its children (to pause the whole server)."""
        pidfile = self.data / "postmaster.pid"
        try:
            main = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        cmd = ["/usr/bin/pgrep", "-P", str(main)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout  # noqa: S603
        return [main, *(int(p) for p in out.split())]

    def signal_all(self, sig: signal.Signals) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def destroy(self) -> None:
        self.signal_all(signal.SIGCONT)
        with contextlib.suppress(ChaosError):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


def python_argv(*args: str) -> list[str]:
    """``python -m ...`` with this interpreter."""
    return [sys.executable, *args]


def tail(path: Path, n: int = 20) -> str:
    """The last ``n`` lines of a log file (for failure reports)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8000))
            return "\n".join(f.read().decode(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


__all__ = ["Broker", "ChaosError", "Child", "Postgres", "free_port", "python_argv", "tail", "wait_port"]
