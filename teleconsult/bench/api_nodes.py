"""N `tbib server` processes behind a private HAProxy, for `tbib bench cluster` and tests/cluster (docs/scale-out.md,
"API nodes").

- :class:`ApiNode`: one `tbib server` child on its own port; its database sessions carry ``application_name`` =
  the node's name, so the alert leader's node is read from ``pg_locks`` (:func:`leader_node`). ``kill9()`` and
  ``start()`` again on the same port (what a supervisor does).
- :class:`Haproxy`: ``haproxy -f <our config> -db`` as a child (HTTP mode, websockets tunnelled, ``/healthz`` checks
  every 250 ms, ``option redispatch`` + ``retries``: a connect refused by a dead node is retried on another one).
  The binary comes from ``scripts/haproxy.sh install`` (Debian package ``haproxy``).
Every process here is ours and stopped by ``stop()``/``close()``; nothing else on the machine is touched.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

import psycopg

from teleconsult.alerts.service import LEADER_LOCK
from teleconsult.errors import TeleconsultError

REPO: Final = Path(__file__).resolve().parents[2]
HAPROXY_SCRIPT: Final = REPO / "scripts" / "haproxy.sh"


class ClusterRigError(TeleconsultError):
    """The API-node rig could not start or drive one of its processes."""


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def healthy(port: int, timeout: float = 1.0) -> bool:
    """``GET /healthz`` on ``127.0.0.1:port`` answers 200."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def with_app_name(dsn: str, name: str) -> str:
    """``dsn`` (a URI) with ``application_name=name``."""
    url = urlsplit(dsn)
    query = "&".join(p for p in (url.query, urlencode({"application_name": name})) if p)
    return url._replace(query=query).geturl()


def leader_node(dsn: str) -> str | None:
    """``application_name`` of the session holding the alert leader's advisory lock (None: no leader)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "select a.application_name from pg_locks l join pg_stat_activity a on a.pid = l.pid"
            " where l.locktype = 'advisory' and l.granted and l.classid = %s and l.objid = %s"
            # pg_locks lists every database's locks: another tbib database on the same server has its own leader
            " and l.database = (select oid from pg_database where datname = current_database())",
            (LEADER_LOCK >> 32, LEADER_LOCK & 0xFFFFFFFF),
        ).fetchone()
    return None if row is None else str(row[0])


class ApiNode:
    """One `tbib server` process (see the module docstring)."""

    def __init__(self, name: str, dsn: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.dsn = with_app_name(dsn, name)
        self.env = {**os.environ, **env, "TBIB_DATABASE_URL": self.dsn}
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> float:
        """Start and wait until ``/healthz`` answers; returns the seconds it took."""
        t0 = time.monotonic()
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: S603 - our own CLI
                [sys.executable, "-m", "teleconsult.cli.main", "server", "--port", str(self.port)],
                cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        while not healthy(self.port):
            if self.proc.poll() is not None:
                raise ClusterRigError(f"{self.name} exited ({self.proc.returncode}): {tail(self.log_path)}")
            if time.monotonic() - t0 > timeout:
                raise ClusterRigError(f"{self.name} not healthy after {timeout:.0f} s: {tail(self.log_path)}")
            time.sleep(0.1)
        return time.monotonic() - t0

    @property
    def pid(self) -> int | None:
        return None if self.proc is None or self.proc.poll() is not None else self.proc.pid

    def kill9(self) -> None:
        """SIGKILL, then reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 15 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.kill9()


def haproxy_binary() -> str:
    """The haproxy binary, installed by ``scripts/haproxy.sh install`` when missing (root)."""
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if found is not None:
        return found
    run = subprocess.run([str(HAPROXY_SCRIPT), "install"], capture_output=True, text=True, timeout=600, check=False)  # noqa: S603
    if run.returncode != 0:
        raise ClusterRigError(run.stderr.strip() or "scripts/haproxy.sh install failed")
    return subprocess.run([str(HAPROXY_SCRIPT), "path"], capture_output=True, text=True, check=True).stdout.strip()  # noqa: S603


def haproxy_config(port: int, backends: list[tuple[str, int]]) -> str:
    """HTTP load balancing with websockets over ``backends`` (name, port); see the module docstring."""
    servers = "\n".join(f"  server {name} 127.0.0.1:{p} check" for name, p in backends)
    return f"""global
  maxconn 4096
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  timeout tunnel 1h
  timeout client-fin 2s
  timeout server-fin 2s
  option redispatch
  retries 3
frontend api
  bind 127.0.0.1:{port}
  default_backend nodes
backend nodes
  balance roundrobin
  option httpchk GET /healthz
  http-check expect status 200
  default-server inter 250ms fastinter 250ms downinter 250ms fall 2 rise 1 on-marked-down shutdown-sessions
{servers}
"""


class Haproxy:
    """A private HAProxy in front of the nodes (see the module docstring)."""

    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="tbib-haproxy-"))
        cfg = self.dir / "haproxy.cfg"
        cfg.write_text(haproxy_config(self.port, backends))
        binary = haproxy_binary()
        check = subprocess.run([binary, "-c", "-q", "-f", str(cfg)], capture_output=True, text=True, check=False)  # noqa: S603
        if check.returncode != 0:
            raise ClusterRigError(f"haproxy rejected its config: {check.stderr.strip()}")
        self.log_path = self.dir / "haproxy.log"
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen([binary, "-db", "-f", str(cfg)], stdout=out, stderr=subprocess.STDOUT)  # noqa: S603
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise ClusterRigError(f"haproxy did not listen: {tail(self.log_path)}")
            time.sleep(0.05)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def close(self) -> None:
        """Stop it and remove its directory."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


def tail(path: Path, n: int = 15) -> str:
    """The last ``n`` lines of a log file."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def server_env(secret: str, mqtt_url: str, ext: dict[str, Any] | None = None) -> dict[str, str]:
    """Environment of a benchmark node (test mode, the benchmark's secret and broker)."""
    return {
        "TBIB_ENV": "test",
        "TBIB_SECRET_KEY": secret,
        "TBIB_MQTT_URL": mqtt_url,
        "TBIB_DB_POOL_MAX_SIZE": "10",
        "TBIB_EXT": json.dumps(ext or {}),
    }
