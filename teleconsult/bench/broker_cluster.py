"""The project's broker clusters started by ``scripts/cluster.sh``: where their nodes listen, their topology, kill -9.

- RabbitMQ: a quorum queue ``tbib.readings`` bound to ``amq.topic`` (the exchange of ``rabbitmq_mqtt``) with the
  routing key ``tbib.v1.gw.*.readings`` (the MQTT topic ``tbib/v1/gw/{id}/readings``, ``/`` read as ``.``).
- NATS: a JetStream stream ``TBIB_READINGS`` with 3 replicas over the subjects ``tbib.v1.gw.*.readings`` (NATS maps
  MQTT topics to subjects the same way) and a durable pull consumer ``ingest``.

``python -m teleconsult.bench.broker_cluster declare rabbitmq|nats`` declares them (idempotent; ``cluster up`` runs it).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

Kind = Literal["rabbitmq", "nats"]

QUEUE: Final = "tbib.readings"
EXCHANGE: Final = "amq.topic"
ROUTING_KEY: Final = "tbib.v1.gw.*.readings"
STREAM: Final = "TBIB_READINGS"
SUBJECTS: Final = "tbib.v1.gw.*.readings"
DURABLE: Final = "ingest"
REPO: Final = Path(__file__).resolve().parents[2]


class ClusterError(Exception):
    """The cluster is not there or not as expected."""


@dataclass(frozen=True, slots=True)
class Node:
    """One broker node of a cluster."""

    name: str
    mqtt_port: int
    client_port: int
    """AMQP (RabbitMQ) or NATS client port."""
    pid_file: Path

    @property
    def mqtt_url(self) -> str:
        """The node's MQTT listener."""
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    @property
    def client_url(self) -> str:
        """The node's AMQP or NATS URL (the consumers')."""
        scheme = "nats" if self.name.startswith("tbib-n") else "amqp"
        auth = "" if scheme == "nats" else "guest:guest@"
        return f"{scheme}://{auth}127.0.0.1:{self.client_port}/"

    def pid(self) -> int | None:
        """The running node's process id, or None."""
        try:
            pid = int(self.pid_file.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def kill9(self) -> int:
        """kill -9 the node; return its process id."""
        pid = self.pid()
        if pid is None:
            raise ClusterError(f"node {self.name} is not running")
        os.kill(pid, signal.SIGKILL)
        return pid


def state_dir() -> Path:
    """Where ``scripts/cluster.sh`` keeps its state."""
    cache = Path(os.environ.get("TBIB_CACHE_DIR", REPO / ".cache"))
    return cache / "services" / "cluster"


def nodes(kind: Kind, state: Path | None = None) -> list[Node]:
    """The three nodes of the ``kind`` cluster, as ``cluster up`` wrote them (in ``state``, else :func:`state_dir`)."""
    path = (state or state_dir()) / "cluster.json"
    try:
        raw = json.loads(path.read_text())[kind]
    except (OSError, ValueError, KeyError) as exc:
        raise ClusterError(f"{path}: no {kind} cluster (run scripts/services.sh cluster up): {exc}") from exc
    port_key = "amqp" if kind == "rabbitmq" else "client"
    return [Node(n["name"], int(n["mqtt"]), int(n[port_key]), Path(n["pid_file"])) for n in raw]


async def declare_rabbitmq(urls: list[str]) -> None:
    """The quorum queue bound to amq.topic (idempotent)."""
    import aio_pika

    conn = await aio_pika.connect_robust(urls[0], timeout=30)
    async with conn:
        ch = await conn.channel()
        queue = await ch.declare_queue(QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
        await queue.bind(EXCHANGE, ROUTING_KEY)


async def declare_nats(urls: list[str]) -> None:
    """The R3 stream and its durable pull consumer (idempotent)."""
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig
    from nats.js.errors import BadRequestError

    nc = await nats.connect(servers=urls, connect_timeout=10)
    try:
        js = nc.jetstream(timeout=30)
        cfg = StreamConfig(name=STREAM, subjects=[SUBJECTS], num_replicas=3, storage=StorageType.FILE)
        for attempt in range(30):  # the meta leader is elected a few seconds after the nodes start
            try:
                try:
                    await js.add_stream(cfg)
                except BadRequestError:
                    await js.update_stream(cfg)
                break
            except Exception:
                if attempt == 29:
                    raise
                await asyncio.sleep(1.0)
        await js.add_consumer(
            STREAM, ConsumerConfig(durable_name=DURABLE, ack_policy=AckPolicy.EXPLICIT, max_ack_pending=20000)
        )
    finally:
        await nc.close()


def main(argv: list[str]) -> int:
    """``declare rabbitmq|nats``."""
    if len(argv) != 2 or argv[0] != "declare" or argv[1] not in ("rabbitmq", "nats"):
        print("usage: python -m teleconsult.bench.broker_cluster declare rabbitmq|nats", file=sys.stderr)
        return 2
    urls = [n.client_url for n in nodes("rabbitmq" if argv[1] == "rabbitmq" else "nats")]
    asyncio.run(declare_rabbitmq(urls) if argv[1] == "rabbitmq" else declare_nats(urls))
    print(f"declared the {argv[1]} topology", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
