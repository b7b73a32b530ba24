"""What the HTTP benchmarks share: ``tbib server`` in a subprocess on a free port, and the nearest-rank percentile."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

import httpx

from teleconsult.bench.ingest import REPO, free_port


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, ``q`` in (0, 1]."""
    ordered = sorted(values)
    return ordered[max(0, round(q * len(ordered)) - 1)]


class ApiServer:
    """``tbib server`` on a free loopback port against ``dsn`` (test settings), ready when ``/healthz`` answers 200."""

    def __init__(self, dsn: str, secret: str, env: Mapping[str, str] | None = None, timeout_s: float = 60) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = os.environ | {
            "TBIB_DATABASE_URL": dsn,
            "TBIB_SECRET_KEY": secret,
            "TBIB_ENV": "test",
            "TBIB_ACCESS_TOKEN_TTL_S": "7200",
            "TBIB_COOKIE_SECURE": "false",
            **(env or {}),
        }
        self.proc = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "teleconsult.cli.main", "server", "--port", str(self.port)], cwd=REPO, env=full_env
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tbib server exited with status {self.proc.returncode} while starting")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.close()
        raise RuntimeError(f"tbib server did not answer /healthz within {timeout_s:.0f} s")

    def close(self) -> None:
        """SIGTERM, then SIGKILL after 20 s; always reaped."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
