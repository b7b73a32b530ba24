"""Fixtures of the dashboard tests: a migrated database with a care team, a live server, headless Chromium."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from teleconsult.api.app import create_app
from teleconsult.store.migrate import upgrade
from tests.dashboard.helpers import Cast, seed_cast
from tests.teleconsult.api.helpers import LiveServer, make_settings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]


@pytest.fixture(scope="module")
def cast(db_dsn: str) -> Cast:
    upgrade(db_dsn)
    return seed_cast(db_dsn)


@pytest.fixture(scope="module")
def api_server(cast: Cast) -> Iterator[LiveServer]:
    settings = make_settings(cast.dsn, cookie_secure=False, ext={"dashboard": {"live_interval_s": 0.2}})
    with LiveServer(create_app(settings)) as server:
        yield server


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not shutil.which(CHROMIUM):
        pytest.skip("Debian chromium is not installed (apt-get install -y chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()
