"""Playwright's `expect`, for the browser tests: a test module that imports it from here is skipped
when the playwright package is missing, except in CI, where a missing package fails (the
chromium fixture says what to install)."""

from __future__ import annotations

import pytest

from tests.conftest import IN_CI

try:
    from playwright.sync_api import expect
except ImportError:
    if IN_CI:
        raise
    pytest.skip("the playwright Python package is not installed", allow_module_level=True)

__all__ = ["expect"]
