"""A signaling-only server on real uvicorn: tests, the benchmark and two-node demos (not the production entry point,
which is ``tbib server`` with the signaling extension).

``async with running(service) as base_url:`` serves ``/ws/v1/signaling`` and ``/consult/*`` on 127.0.0.1, port 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI

from teleconsult.errors import SignalingError
from teleconsult.signaling.router import pages_router, ws_router
from teleconsult.signaling.service import SignalingService


def build_app(service: SignalingService) -> FastAPI:
    """A minimal app with only the signaling routes."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.signaling = service
    app.include_router(ws_router, prefix="/ws/v1")
    app.include_router(pages_router)
    return app


@contextlib.asynccontextmanager
async def running(service: SignalingService, *, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve :func:`build_app` on uvicorn in the current loop; yields ``http://host:port``."""
    config = uvicorn.Config(
        build_app(service), host=host, port=port, log_level=logging.WARNING, lifespan="off", ws="websockets-sansio"
    )
    server = uvicorn.Server(config)
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
