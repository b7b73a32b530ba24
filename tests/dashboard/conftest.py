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
    # the alert engine is off here: these tests raise their own alerts and check the ordering they imply
    ext = {"dashboard": {"live_interval_s": 0.2}, "alerts": {"enabled": False}}
    settings = make_settings(cast.dsn, cookie_secure=False, ext=ext)
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


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Mosquitto of this module (the shared one carries other tests' gateways and ingest workers)."""
    from teleconsult.demo.services import Services, mosquitto_binary, start_mosquitto

    assert mosquitto_binary() is not None, "mosquitto is not installed: `make setup` installs it"
    broker = Services()
    try:
        start_mosquitto(tmp_path_factory.mktemp("mosquitto"), broker, auth=False)
        yield broker.mqtt_url
    finally:
        broker.stop()


@pytest.fixture
def update_docs(request: pytest.FixtureRequest) -> bool:
    """`make screenshots` (`-k screenshots`) refreshes docs/screenshots/; other runs only write test-artifacts/."""
    return "screenshots" in str(request.config.option.keyword or "")
