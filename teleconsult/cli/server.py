"""`tbib server`: run the API, dashboard and websockets server (uvicorn; HTTPS when a certificate is configured)."""

from __future__ import annotations

import argparse
import gc
import logging
from pathlib import Path
from typing import Any

from teleconsult.cli.common import CliError

log = logging.getLogger(__name__)


def add_parser(sub: Any) -> None:
    """Register `tbib server`."""
    p: argparse.ArgumentParser = sub.add_parser(
        "server",
        help="run the API, dashboard and websockets server",
        description="Serve the API under /api/v1 (OpenAPI at /docs), websockets, FHIR and the dashboard. "
        "Settings come from TBIB_* environment variables and an optional TOML file.",
    )
    p.add_argument("--config", type=Path, help="TOML settings file (default: $TBIB_CONFIG)")
    p.add_argument("--host", help="bind address (default: settings.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: settings.port, 8000; 0 picks a free one)")
    p.add_argument("--tls-cert", type=Path, help="PEM certificate chain; with --tls-key serves HTTPS")
    p.add_argument("--tls-key", type=Path, help="PEM private key")
    p.add_argument("--migrate", action="store_true", help="apply database migrations before serving")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build settings, optionally migrate, serve until interrupted."""
    import uvicorn

    from teleconsult.api.app import create_app
    from teleconsult.errors import ConfigError
    from teleconsult.settings import load_settings

    overrides = {
        k: v
        for k, v in {"host": args.host, "port": args.port, "tls_cert": args.tls_cert, "tls_key": args.tls_key}.items()
        if v is not None
    }
    try:
        settings = load_settings(args.config, **overrides)
    except ConfigError as exc:
        raise CliError(str(exc)) from exc
    if args.migrate:
        migrate_database(settings.database_url)
    for path in (settings.tls_cert, settings.tls_key):
        if path is not None and not path.is_file():
            raise CliError(f"TLS file {path} does not exist")
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        server_header=False,
        # No permessage-deflate: every socket would compress every frame on its own (the frames of one alert are
        # the same bytes for all its sockets, encoded once); deflate was ~45 % of the CPU of a send in the alert
        # fan-out (docs/benchmarks/alerts.md). Frames are small JSON.
        ws_per_message_deflate=False,
        log_level="info" if logging.getLogger().level <= logging.INFO else "warning",
    )
    freeze_heap()
    uvicorn.Server(config).run()
    return 0


def freeze_heap() -> None:
    """Move every object alive after start-up (modules, routes, models: ~hundreds of thousands) to the permanent
    generation, so the full collections that request allocations trigger no longer traverse them (docs/benchmarks/
    fhir.md: 70-140 ms per gen-2 pass before, collecting nothing)."""
    gc.collect()
    gc.freeze()


def migrate_database(conninfo: str) -> list[str]:
    """Apply pending migrations with the store's runner; returns the applied names."""
    try:
        from teleconsult.store.migrate import upgrade
    except ImportError as exc:
        raise CliError(f"the migration runner is not available: {exc}") from exc
    applied: list[str] = upgrade(conninfo)
    for name in applied:
        log.warning("applied migration %s", name)
    return applied
