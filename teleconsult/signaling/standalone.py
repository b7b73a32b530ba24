"""A signaling-only server on real uvicorn: tests, the benchmark and two-node demos (not the production entry point,
which is ``tbib server`` with the signaling extension).

``async with running(service) as base_url:`` serves ``/ws/v1/signaling`` and ``/consult/*`` on 127.0.0.1, port 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import FastAPI

from teleconsult.errors import SignalingError
from teleconsult.signaling.router import pages_router, ws_router
from teleconsult.signaling.service import SignalingService


def build_app(service: SignalingService, *, dashboard_assets: bool = False) -> FastAPI:
    """A minimal app with only the signaling routes (and, with ``dashboard_assets``, the dashboard's static files, so
    that ``/consult/doctor#panel=1`` can mount the vitals panel)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.signaling = service
    app.include_router(ws_router, prefix="/ws/v1")
    app.include_router(pages_router)
    if dashboard_assets:
        from dashboard.router import router as dashboard_router

        app.include_router(dashboard_router)
    return app


@contextlib.asynccontextmanager
async def running(
    service: SignalingService, *, host: str = "127.0.0.1", port: int = 0, dashboard_assets: bool = False
) -> AsyncIterator[str]:
    """Serve :func:`build_app` on uvicorn in the current loop; yields ``http://host:port``."""
    config = uvicorn.Config(
        build_app(service, dashboard_assets=dashboard_assets),
        host=host,
        port=port,
        log_level=logging.WARNING,
        lifespan="off",
        ws="websockets-sansio",
    )
    server = uvicorn.Server(config)
    await service.start()
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise SignalingError("uvicorn stopped before it started", code="server")
            await asyncio.sleep(0.01)
        sock = server.servers[0].sockets[0]
        bound_host, bound_port = sock.getsockname()[:2]
        yield f"http://{bound_host}:{bound_port}"
    finally:
        await service.aclose()
        server.should_exit = True
        await task


def main(argv: list[str] | None = None) -> int:
    """``python -m teleconsult.signaling.standalone``: serve signaling only (key from ``TBIB_SIGNALING_KEY``, hex).

    With ``--pg-dsn`` (or ``TBIB_SIGNALING_PG_DSN``) rooms live in that database (migrated at start), so any node
    serves any room, also after a restart (:mod:`.roomstore`).
    ``TBIB_SIGNALING_TURN_URLS`` (JSON list) and ``TBIB_SIGNALING_TURN_SECRET``: TURN handed out in ``joined``.
    ``--dashboard-assets``: also serve the dashboard's static files (the benchmark's vitals panel).
    Prints ``SIGNALING <base url>`` on stdout once listening; runs until SIGTERM/SIGINT.
    """
    import argparse
    import json
    import os
    import signal
    import sys

    from psycopg_pool import AsyncConnectionPool

    from teleconsult.signaling.core import SignalingConfig
    from teleconsult.signaling.roomstore import PgRoomStore
    from teleconsult.signaling.turn import IceConfig
    from teleconsult.store.migrate import upgrade_async

    parser = argparse.ArgumentParser(prog="python -m teleconsult.signaling.standalone")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--pg-dsn", default=os.environ.get("TBIB_SIGNALING_PG_DSN"), help="share rooms across nodes")
    parser.add_argument("--dashboard-assets", action="store_true", help="also serve /app/ (the vitals panel)")
    args = parser.parse_args(argv)
    key_hex = os.environ.get("TBIB_SIGNALING_KEY", "")
    try:
        key = bytes.fromhex(key_hex)
    except ValueError:
        key = b""
    if len(key) < 32:
        sys.stderr.write("TBIB_SIGNALING_KEY must hold at least 32 bytes in hex\n")
        return 2

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        pool: AsyncConnectionPool[Any] | None = None
        store = None
        if args.pg_dsn:
            await upgrade_async(args.pg_dsn)
            pool = AsyncConnectionPool(args.pg_dsn, min_size=1, max_size=8, open=False)
            await pool.open()
            store = PgRoomStore(pool, args.pg_dsn)
        turn_urls = tuple(json.loads(os.environ.get("TBIB_SIGNALING_TURN_URLS", "[]")))
        ice = IceConfig(turn_urls=turn_urls, turn_secret=os.environ.get("TBIB_SIGNALING_TURN_SECRET", "").encode())
        service = SignalingService(SignalingConfig(token_key=key, ice=ice), store=store)
        try:
            async with running(service, host=args.host, port=args.port, dashboard_assets=args.dashboard_assets) as base:
                sys.stdout.write(f"SIGNALING {base}\n")
                sys.stdout.flush()
                await stop.wait()
        finally:
            if pool is not None:
                await pool.close()

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
