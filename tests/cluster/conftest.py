"""A fresh 3-node RabbitMQ cluster of the tests' own (``scripts/cluster.sh`` in a temporary state dir, so a developer's
running cluster is left alone), shared by the module tests of tests/cluster and stopped at the end."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from teleconsult.bench.broker_cluster import Node, nodes

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "scripts" / "cluster.sh"


def _cluster(action: str, state: Path, timeout: float) -> None:
    env = {**os.environ, "TBIB_CACHE_DIR": str(state)}  # for the script only: the rest of the session keeps its own
    run = subprocess.run([str(CLUSTER), action, "rabbitmq"], capture_output=True, text=True, timeout=timeout, env=env)
    assert run.returncode == 0, run.stderr[-3000:]


@dataclass(frozen=True)
class Cluster:
    """The tests' cluster: its nodes and its state dir."""

    nodes: list[Node]
    state: Path

    def up(self) -> None:
        """Start the nodes that are not running (a node killed by a test rejoins)."""
        _cluster("up", self.state, 240)


@pytest.fixture(scope="session")
def rabbit_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if shutil.which("rabbitmq-server") is None and not Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists():
        pytest.fail("rabbitmq-server is not installed: make setup installs it (Debian package rabbitmq-server)")
    state = tmp_path_factory.mktemp("cluster-cache")
    t0 = time.monotonic()
    try:
        _cluster("up", state, 240)
        print(f"cluster up in {time.monotonic() - t0:.1f} s")
        yield Cluster(nodes("rabbitmq", state / "services" / "cluster"), state)
    finally:
        _cluster("down", state, 120)
        shutil.rmtree(state, ignore_errors=True)
