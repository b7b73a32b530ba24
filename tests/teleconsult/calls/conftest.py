"""Fixtures of the call tests: the dashboard tests' headless Debian Chromium."""

from tests.dashboard.conftest import browser

__all__ = ["browser"]
