"""Helpers for alert integration tests: write readings through ingest's real database path, read frames."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime
from typing import Any

import psycopg

from teleconsult.ingest.writer import prepare_connection, write_batch


async def ingest(dsn: str, rows: list[tuple[uuid.UUID, str, float, str, datetime]]) -> None:
    """Store ``(patient, metric, value, unit, measured_at)`` rows as one ingest batch (COPY, ON CONFLICT, latest)."""
    lines = [
        f"{p}\t\\N\t{metric}\t{float(value)!r}\t{unit}\t{at.isoformat()}\t\\N\t{uuid.uuid4()}\t\\N\t\\N\n"
        for p, metric, value, unit, at in rows
    ]
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        await prepare_connection(conn)
        await write_batch(conn, lines, [])


async def recv_json(ws: Any, wait: float = 10.0) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), wait))
    return frame


async def recv_alerts(ws: Any, count: int, wait: float = 10.0) -> list[dict[str, Any]]:
    """The next ``count`` alert frames (heartbeats skipped)."""
    out: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while len(out) < count:
        frame = await recv_json(ws, max(0.01, deadline - loop.time()))
        if frame["type"] == "alert":
            out.append(frame)
    return out


async def quiet(ws: Any, seconds: float) -> list[dict[str, Any]]:
    """Frames other than heartbeats received within ``seconds``."""
    got: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        try:
            frame = await recv_json(ws, left)
        except TimeoutError:
            break
        if frame["type"] != "heartbeat":
            got.append(frame)
    return got


async def post(url: str, token: str | None, body: dict[str, Any] | None = None) -> Any:
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient() as client:
        return await client.post(url, json=body or {}, headers=headers)


async def get(url: str, token: str) -> Any:
    import httpx

    async with httpx.AsyncClient() as client:
        return await client.get(url, headers={"Authorization": f"Bearer {token}"})
