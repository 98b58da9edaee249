"""An agent that is stopping never starts a HAProxy: its follower thread may apply one more version
after the stop (it was inside a long-poll), and that HAProxy would outlive the agent."""

from __future__ import annotations

from pathlib import Path

from steering.dataplane.haproxy.model import PopSpec
from steering.dataplane.haproxy.process import ManagedHAProxy


def test_after_stop_neither_start_nor_reload_starts_a_process(tmp_path: Path) -> None:
    managed = ManagedHAProxy("fra1", tmp_path, {})
    managed.stop()
    managed.start(PopSpec(slug="fra1", services=(), pools=()), "/nonexistent/haproxy")
    managed.reload(PopSpec(slug="fra1", services=(), pools=()), "/nonexistent/haproxy")
    assert managed.proc is None and not managed.running()
    assert not managed.config_path.exists()  # nothing was even rendered
