"""Fixtures of the API tests: the installed steerctl, for test_cli.py and test_fleet_cli.py."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

BIN_DIR = Path(sys.executable).parent


@pytest.fixture(scope="session")
def steerctl_path() -> str:
    path = shutil.which("steerctl", path=str(BIN_DIR))
    if path is None:
        pytest.fail(f"steerctl is not installed in {BIN_DIR}: run `make deps` (pip install --no-deps -e .)")
    return path
