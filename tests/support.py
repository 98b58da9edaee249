"""Small helpers the tests share: the repository's root, a free loopback port, a bounded wait, and
what to do when a real component is missing."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ROOT = Path(__file__).resolve().parent.parent  # the repository (tests/ is at its top)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 10.0, *, interval: float = 0.02,
             step: Callable[[], Any] | None = None) -> Any:
    """Poll until `condition()` is truthy and return it; fail saying what never happened.
    A generous deadline for "eventually", never a timed assertion. `step` runs before each look
    (a test driving the sweeper or an agent pass itself)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if step is not None:
            step()
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"gave up waiting for {what}")


def missing(what: str) -> NoReturn:
    """A real component the test needs is not installed: a failure in CI (where a skip would hide
    a missing install step), a skip elsewhere, saying what to install."""
    if IN_CI:
        pytest.fail(what, pytrace=False)
    pytest.skip(what)


def threads_of(pid: int) -> int:
    """Threads of a process of ours (a web process holding a thread per waiter would show here)."""
    return len(os.listdir(f"/proc/{pid}/task"))


def db_connections() -> int:
    """Connections to the test's PostgreSQL database (a waiter holding one would show here)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        return int(cursor.fetchone()[0])
