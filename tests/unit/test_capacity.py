"""steering.capacity: the pure math operators reason with (ARCHITECTURE.md §1: a pure module). No database here."""

from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from steering import capacity
from steering.capacity import WeightInputs, effective_weight, estimate_drain_seconds

# --- effective weight ---------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["draining", "drained", "maint"])
def test_it_gives_no_new_traffic_to_a_backend_out_of_service(state):
    assert effective_weight(WeightInputs(weight=100, admin_state=state, health="up")) == 0
    # Not even when the pool panics: the operator took it out on purpose.
    assert effective_weight(WeightInputs(weight=100, admin_state=state, health="down", pool_in_panic=True)) == 0
    assert "admin state" in capacity.explain_effective_weight(WeightInputs(weight=100, admin_state=state)).reason


def test_it_gives_no_traffic_to_a_down_backend():
    explained = capacity.explain_effective_weight(WeightInputs(weight=100, health="down"))
    assert explained.effective == 0
    assert "down" in explained.reason


def test_it_keeps_a_down_backend_serving_when_the_pool_is_in_panic():
    explained = capacity.explain_effective_weight(WeightInputs(weight=80, health="down", pool_in_panic=True))
    assert explained.effective == 80
    assert "panic" in explained.reason


@pytest.mark.parametrize("health", ["unknown", "stale", "up"])
def test_it_keeps_the_weight_without_evidence_of_failure(health):
    assert effective_weight(WeightInputs(weight=120, health=health)) == 120


def test_it_gives_nothing_for_configured_weight_zero():
    assert effective_weight(WeightInputs(weight=0, health="up")) == 0
    assert effective_weight(WeightInputs(weight=0, health="down", pool_in_panic=True)) == 0


def test_it_ramps_slow_start_linearly():
    def at(seconds: float | None) -> int:
        return effective_weight(WeightInputs(weight=100, health="up", slow_start_seconds=60, seconds_since_ready=seconds))

    assert at(0) == 1  # at least 1, so the backend is actually tried
    assert at(15) == 25
    assert at(30) == 50
    assert at(45) == 75
    assert at(60) == 100
    assert at(3600) == 100
    assert at(None) == 100  # never been through a return to service: no ramp
    assert at(-5) == 1  # clock skew never makes it negative
    ramp = [at(s) for s in range(0, 61)]
    assert ramp == sorted(ramp)


def test_it_keeps_a_tiny_weight_at_one_during_slow_start():
    assert effective_weight(WeightInputs(weight=1, slow_start_seconds=30, seconds_since_ready=1)) == 1
    assert effective_weight(WeightInputs(weight=3, slow_start_seconds=300, seconds_since_ready=1)) == 1


@pytest.mark.parametrize(("configured", "expected"), [(300, 256), (256, 256), (-5, 0), (1, 1)])
def test_it_clamps_weight_to_0_256(configured, expected):
    assert effective_weight(WeightInputs(weight=configured, health="up")) == expected


@given(
    weight=st.integers(min_value=-1000, max_value=1000),
    admin_state=st.sampled_from(["ready", "draining", "drained", "maint"]),
    health=st.sampled_from(["unknown", "up", "down", "stale"]),
    slow_start=st.integers(min_value=0, max_value=3600),
    since=st.none() | st.floats(min_value=-1e6, max_value=1e7, allow_nan=False),
    panic=st.booleans(),
)
def test_it_always_gives_an_effective_weight_within_0_256(weight, admin_state, health, slow_start, since, panic):
    inputs = WeightInputs(weight, admin_state, health, slow_start, since, panic)
    w = effective_weight(inputs)
    assert 0 <= w <= 256
    assert w <= max(0, weight)
    if admin_state != "ready":
        assert w == 0


# --- drain time ------------------------------------------------------------------------------------


def test_it_estimates_drain_time_as_sessions_over_rate_plus_buffer():
    est = estimate_drain_seconds(2400, 80)
    assert est.seconds == 45
    assert (est.sessions, est.completion_rate, est.buffer_seconds) == (2400, 80, 15)
    assert "2400" in est.derivation and "80" in est.derivation
    assert "30 s" in est.derivation and "15 s" in est.derivation


def test_it_rounds_a_partial_second_up():
    assert estimate_drain_seconds(100, 30).seconds == 4 + 15
    assert estimate_drain_seconds(100, 30, buffer_seconds=0).seconds == 4


def test_it_needs_only_the_buffer_with_no_sessions():
    est = estimate_drain_seconds(0, 80)
    assert est.seconds == 15
    assert "buffer" in est.derivation
    assert estimate_drain_seconds(0, 0, buffer_seconds=5).seconds == 5


def test_it_refuses_a_zero_completion_rate_with_sessions_left():
    with pytest.raises(ValueError):
        estimate_drain_seconds(10, 0)


# --- purity ----------------------------------------------------------------------------------------


def test_it_imports_nothing_from_django():
    tree = ast.parse(inspect.getsource(capacity))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert imported, "the parse found no imports at all; the check would be vacuous"
    assert not {m for m in imported if m.split(".")[0] in ("django", "rest_framework")}
    for name, value in vars(capacity).items():
        module = value if isinstance(value, types.ModuleType) else sys.modules.get(getattr(value, "__module__", "") or "")
        if module is not None:
            assert not module.__name__.startswith("django"), name


def test_it_loads_without_django_in_a_fresh_interpreter():
    """Not even indirectly: importing the module alone pulls in no Django."""
    code = "import sys, steering.capacity; print(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(capacity.__file__).resolve().parents[1], env={"PATH": os.environ.get("PATH", "")})
    assert out.stdout.strip() == "[]"
