"""Our own coturn (``turnserver``) for tests, benchmarks and the demo: free ports, own files, REST-API secret.

``Coturn(home, secret).start()`` writes ``home/turnserver.conf`` (``config/coturn/tbib.conf`` plus the instance lines:
listening and relay address, a port free for both UDP and TCP, realm, ``static-auth-secret``, pid, log and sqlite
files under ``home``) and starts ``turnserver`` in a session of its own; :attr:`Coturn.urls` are the TURN URLs to put
in ``turn_urls`` (UDP first, then TCP: aiortc uses only the first TURN URL of its list). ``loopback_peers`` lets the
relay reach peers on 127.0.0.1 (every peer of a test or of the local demo is there); a deployment never sets it.
``scripts/services.sh`` starts the same configuration from the shell (``services.sh up turn``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from teleconsult.errors import TeleconsultError

REPO: Final = Path(__file__).resolve().parents[2]
TEMPLATE: Final = REPO / "config" / "coturn" / "tbib.conf"
#: The template's lines, for installs without the source tree (same content as ``config/coturn/tbib.conf``).
_FALLBACK: Final = (
    "use-auth-secret\nfingerprint\nno-tls\nno-dtls\nno-cli\nno-rfc5780\nno-stun-backward-compatibility\n"
    "response-origin-only-with-rfc5780\nno-software-attribute\nno-multicast-peers\nuser-quota=12\ntotal-quota=1200\n"
    "stale-nonce=600\nsimple-log\nno-stdout-log\n"
)


class CoturnError(TeleconsultError):
    """coturn is missing or did not start; the message says why (and where its log is)."""


def coturn_binary() -> str | None:
    """The ``turnserver`` executable (Debian package ``coturn``), if installed."""
    found = shutil.which("turnserver")
    if found:
        return found
    return "/usr/bin/turnserver" if Path("/usr/bin/turnserver").is_file() else None


def free_udp_tcp_port(host: str = "127.0.0.1", attempts: int = 50) -> int:
    """A port free for both TCP and UDP on ``host`` (TURN listens on both)."""
    for _ in range(attempts):
        with socket.socket() as tcp:
            tcp.bind((host, 0))
            port: int = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
        return port
    raise CoturnError(f"no port free for both UDP and TCP on {host}")


def new_secret() -> str:
    """A fresh shared secret (``static-auth-secret`` = the server's ``turn_secret``)."""
    return secrets.token_urlsafe(32)


def render_config(
    home: Path,
    *,
    secret: str,
    port: int,
    listen_ip: str = "127.0.0.1",
    relay_ip: str = "127.0.0.1",
    realm: str = "tbib.local",
    loopback_peers: bool = True,
    min_port: int | None = None,
    max_port: int | None = None,
) -> str:
    """``turnserver.conf`` text: the project template, then this instance's lines."""
    if not secret or any(c in secret for c in "\n\r "):
        raise ValueError("the TURN secret must be a non-empty single word")
    base = TEMPLATE.read_text() if TEMPLATE.is_file() else _FALLBACK
    lines = [
        "# written by teleconsult.signaling.coturn",
        f"listening-ip={listen_ip}",
        f"listening-port={port}",
        f"relay-ip={relay_ip}",
        f"realm={realm}",
        f"server-name={realm}",
        f"static-auth-secret={secret}",
        f"pidfile={home / 'turnserver.pid'}",
        f"log-file={home / 'turnserver.log'}",
        f"userdb={home / 'turndb.sqlite'}",
    ]
    if min_port is not None and max_port is not None:
        lines += [f"min-port={min_port}", f"max-port={max_port}"]
    if loopback_peers:
        lines.append("allow-loopback-peers")
    return base.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n"


def turn_urls(host: str, port: int) -> list[str]:
    """TURN over UDP first (aiortc's choice: the first TURN URL), then TURN over TCP."""
    return [f"turn:{host}:{port}?transport=udp", f"turn:{host}:{port}?transport=tcp"]


@dataclass
class Coturn:
    """One turnserver process of ours. Use as a context manager, or :meth:`start` / :meth:`stop`."""

    home: Path
    secret: str = field(default_factory=new_secret)
    port: int = 0
    """0: a free port (UDP and TCP)."""
    listen_ip: str = "127.0.0.1"
    relay_ip: str = "127.0.0.1"
    realm: str = "tbib.local"
    loopback_peers: bool = True
    proc: subprocess.Popen[bytes] | None = None

    @property
    def urls(self) -> list[str]:
        """``turn_urls`` for the signaling settings (UDP, then TCP)."""
        return turn_urls(self.listen_ip, self.port)

    @property
    def log(self) -> Path:
        """coturn's own log (``simple-log``: one file, no date suffix)."""
        return self.home / "turnserver.log"

    def start(self, timeout: float = 10.0) -> Coturn:
        """Write the configuration, start turnserver and wait until its TCP listener accepts."""
        binary = coturn_binary()
        if binary is None:
            raise CoturnError("coturn is not installed: `apt-get install coturn` (or `make setup` as root)")
        self.home.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_udp_tcp_port(self.listen_ip)
        conf = self.home / "turnserver.conf"
        conf.touch(mode=0o600)
        conf.chmod(0o600)  # it holds the shared secret
        conf.write_text(
            render_config(
                self.home,
                secret=self.secret,
                port=self.port,
                listen_ip=self.listen_ip,
                relay_ip=self.relay_ip,
                realm=self.realm,
                loopback_peers=self.loopback_peers,
            )
        )
        with (self.home / "turnserver.out").open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: S603 - our own binary and config
                [binary, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CoturnError(f"turnserver exited with {self.proc.returncode}; see {self.log}")
            with contextlib.suppress(OSError), socket.create_connection((self.listen_ip, self.port), 0.2):
                return self
            time.sleep(0.05)
        self.kill()
        raise CoturnError(f"turnserver did not listen on {self.listen_ip}:{self.port} within {timeout:.0f} s")

    def stop(self, timeout: float = 3.0) -> None:
        """SIGTERM, then SIGKILL of its process group after ``timeout``."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def kill(self) -> None:
        """End it at once (safe from a signal handler)."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(2)

    def __enter__(self) -> Coturn:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
