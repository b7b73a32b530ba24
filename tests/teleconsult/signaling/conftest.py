"""Fixtures for signaling tests: a real uvicorn signaling server on port 0, headless Debian Chromium."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from teleconsult.signaling.core import SignalingConfig
from teleconsult.signaling.service import SignalingService
from teleconsult.signaling.standalone import running
from teleconsult.signaling.tokens import Role, issue_token

SERVER_KEY = b"signaling-test-key-0123456789abcd"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]


@dataclass
class Server:
    base: str
    service: SignalingService

    @property
    def ws(self) -> str:
        return self.base.replace("http://", "ws://") + "/ws/v1/signaling"

    def token(self, role: Role, sub: str, cid: str = "c1") -> str:
        return issue_token(key=SERVER_KEY, consultation_id=cid, role=role, subject=sub, now=datetime.now(UTC))


@pytest.fixture
async def signaling_server() -> AsyncIterator[Server]:
    service = SignalingService(SignalingConfig(token_key=SERVER_KEY))
    async with running(service) as base:
        yield Server(base, service)


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
