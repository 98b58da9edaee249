"""The service kernel: shared steps in leaf modules, operation kinds dispatched through one
registry, previews that neither lock nor write, and a guard whose queries do not grow with the fleet."""

from __future__ import annotations

import ast
import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

import steering.services
from steering.models import Backend, Operation, Pool, PoP, Region
from steering.services import actions, anycast, guard, layered, operation_kinds, weights
from steering.services.context import Actor
from steering.services.layered import STEPS, TRANSITIONS, Phase, phase_of, steps_view
from steering.services.operation_kinds import OperationKindHandler
from steering.services.operation_lifecycle import open_operation
from steering.services.operations import do_abort_operation, sweep_due
from tests import factories as f

SERVICES = Path(steering.services.__file__).parent
ALLOWED_PRIVATE: set[tuple[str, str]] = set()  # the Redis client is steering.redisconn.sync_client()
TEST = Actor.system("test")


# --- no module reaches into another's private names ---------------------------------------------


def private_uses(source: str, module: str) -> list[tuple[str, str]]:
    """(module, name) for every underscore name `module` takes from another steering.services module,
    by `from steering.services.x import _name` or by `x._name` on an imported services module."""
    tree = ast.parse(source)
    found: list[tuple[str, str]] = []
    modules: dict[str, str] = {}  # local name -> services module it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            package = "steering.services" if node.level == 1 else None
            dotted = f"{package}.{node.module}" if package and node.module else package or node.module or ""
            if dotted == "steering.services":
                modules.update({a.asname or a.name: a.name for a in node.names})
            elif dotted.startswith("steering.services."):
                other = dotted.rsplit(".", 1)[1]
                found += [(other, a.name) for a in node.names if a.name.startswith("_") and other != module]
        elif isinstance(node, ast.Import):
            modules.update({a.asname: a.name.rsplit(".", 1)[1] for a in node.names
                            if a.asname and a.name.startswith("steering.services.")})
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                and node.attr.startswith("_") and not node.attr.startswith("__")
                and modules[node.value.id] != module):
            found.append((modules[node.value.id], node.attr))
    return found


def test_the_check_finds_private_names_taken_across_modules():
    source = ("from steering.services.actions import _lock_target\n"
              "from steering.services import guard as g\n"
              "from . import anycast\n"
              "from .operations import _finish\n"
              "g._eff(1)\n"
              "anycast._set_announce()\n")
    assert sorted(private_uses(source, "layered")) == [
        ("actions", "_lock_target"), ("anycast", "_set_announce"), ("guard", "_eff"), ("operations", "_finish")]
    assert private_uses("from steering.services.layered import _plan\n", "layered") == []  # its own


def test_no_services_module_uses_another_ones_private_names():
    files = sorted(SERVICES.glob("*.py"))
    assert len(files) > 10, "found no services modules: the check would be vacuous"
    offenders = {p.stem: [u for u in private_uses(p.read_text(), p.stem) if u not in ALLOWED_PRIVATE] for p in files}
    assert {m: uses for m, uses in offenders.items() if uses} == {}


def services_imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "steering.services":
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("steering.services."):
            names.add((node.module or "").rsplit(".", 1)[1])
    return names


@pytest.mark.parametrize("leaf", ["kernel", "operation_lifecycle"])
def test_the_kernel_imports_no_action_module(leaf):
    imported = services_imported(SERVICES / f"{leaf}.py")
    assert imported, "the parse found no imports at all"
    # notifications: where an operation's start and end are told to webhooks; a leaf itself (below).
    assert imported <= {"audit", "context", "errors", "guard", "targets", "kernel", "notifications"}


def test_notifications_import_no_action_module():
    # Every action module may emit an event: the emitter imports none of them back.
    assert services_imported(SERVICES / "notifications.py") <= {"context"}


# --- operation kinds: one registry, used by abort, the sweeper and drain completion --------------


@pytest.fixture
def probe_kind(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int | None]]:
    """A kind only this test knows: whatever reaches it came through the registry."""
    calls: list[tuple[str, int | None]] = []

    def roll_back(op: Operation, changes: Any) -> int:
        calls.append(("roll_back", op.pk))
        return 7

    def advance(now: datetime.datetime | None) -> int:
        calls.append(("advance", None))
        return 3

    def drained(op: Operation, changes: Any) -> None:
        calls.append(("drained", op.pk))

    monkeypatch.setitem(operation_kinds.HANDLERS, "probe", OperationKindHandler(
        roll_back=roll_back, advance=advance, sweep_key="probe_steps", on_backends_drained=drained))
    return calls


def test_abort_rolls_back_through_the_operations_kind(db, probe_kind):
    backend = f.fleet(2).backends.first()
    op = open_operation("probe", backend, actor=TEST, reason="probe")
    aborted = do_abort_operation(op, actor=TEST, reason="stop")
    assert probe_kind == [("roll_back", op.pk)]
    assert aborted.status == "aborted" and aborted.result["backends_restored"] == 7


def test_the_sweeper_advances_every_kind_and_tells_an_operation_its_backends_drained(db, probe_kind):
    backend = f.fleet(2).backends.first()
    op = open_operation("probe", backend, actor=TEST, reason="probe")
    Backend.objects.filter(pk=backend.pk).update(admin_state="draining", operation=op,
                                                 drain_deadline=timezone.now() - datetime.timedelta(seconds=1))
    result = sweep_due()
    assert result["drains_completed"] == 1 and result["probe_steps"] == 3
    assert ("drained", op.pk) in probe_kind and ("advance", None) in probe_kind
    assert {"ramp_steps", "layered_steps"} <= set(result)  # the built-in kinds still run


# --- the layered drain's phase machine -------------------------------------------------------------


def test_the_layered_phases_only_move_forward():
    assert TRANSITIONS[Phase.DNS_WAIT] == {Phase.LOCAL}
    assert TRANSITIONS[Phase.LOCAL] == {Phase.ANYCAST_CONFIRM, Phase.DONE}
    assert TRANSITIONS[Phase.ANYCAST_CONFIRM] == {Phase.DONE}
    assert TRANSITIONS[Phase.DONE] == frozenset()


def test_the_visible_steps_follow_the_phase_and_each_layers_outcome():
    def statuses(phase: Phase, params: dict[str, Any], progress: dict[str, Any] | None = None) -> list[str]:
        view = steps_view(phase, params, progress or {})
        assert [s["name"] for s in view] == list(STEPS)
        return [s["status"] for s in view]

    both = {"vips": [1], "pops": [2]}
    assert statuses(Phase.DNS_WAIT, both) == ["done", "running", "pending", "pending", "pending"]
    assert statuses(Phase.DNS_WAIT, {"vips": [], "pops": [2]})[0] == "skipped"
    assert statuses(Phase.DNS_WAIT, {**both, "dns_confirmed": False})[0] == "unconfirmed"
    assert statuses(Phase.LOCAL, {"vips": [1], "pops": []}) == ["done", "done", "skipped", "running", "pending"]
    assert statuses(Phase.ANYCAST_CONFIRM, both) == statuses(Phase.LOCAL, both)
    notes = {"unconfirmed": ["anycast: fra9 ExaBGP silent", "fra9/api/app-1: fra9 HAProxy has not applied version 7"]}
    assert statuses(Phase.DONE, both) == ["done"] * 5
    assert statuses(Phase.DONE, both, notes) == ["done", "done", "unconfirmed", "unconfirmed", "done"]


def test_a_row_written_before_phases_were_named_still_reads():
    assert phase_of(Operation(params={"step": 1}, progress={})) is Phase.DNS_WAIT
    assert phase_of(Operation(params={"step": 3}, progress={"percent": 40})) is Phase.LOCAL
    assert phase_of(Operation(params={"step": 3}, progress={"step": "anycast"})) is Phase.ANYCAST_CONFIRM


# --- previews take no lock and write nothing ------------------------------------------------------


def _previews() -> dict[str, Callable[[Region, PoP, Pool, Backend], Any]]:
    said = {"actor": TEST, "reason": "what if"}
    return {
        "drain backend": lambda r, p, pool, b: actions.do_drain(b, **said, dry_run=True),
        "drain pool": lambda r, p, pool, b: actions.do_drain(pool, **said, grace_seconds=5, dry_run=True),
        "drain pop": lambda r, p, pool, b: actions.do_drain(p, **said, dry_run=True),
        "drain region": lambda r, p, pool, b: actions.do_drain(r, **said, dry_run=True),
        "maintenance": lambda r, p, pool, b: actions.do_maintenance(pool, **said, dry_run=True),
        "layered pop": lambda r, p, pool, b: layered.do_layered_drain(p, **said, dry_run=True),
        "layered region": lambda r, p, pool, b: layered.do_layered_drain(r, **said, dry_run=True),
        "weight": lambda r, p, pool, b: weights.do_set_weight(b, **said, weight=10, dry_run=True),
        "weight ramp": lambda r, p, pool, b: weights.do_set_weight(b, **said, weight=10, steps=[5], step_seconds=60,
                                                                   dry_run=True),
        "withdraw": lambda r, p, pool, b: anycast.do_withdraw(p, **said, dry_run=True),
        "impact drain": lambda r, p, pool, b: actions.impact_of(pool, "drain"),
        "impact maintenance": lambda r, p, pool, b: actions.impact_of(p, "maintenance"),
        "impact undrain": lambda r, p, pool, b: actions.impact_of(r, "undrain"),
        "withdraw impact": lambda r, p, pool, b: anycast.withdraw_impact(p),
        "layered impact": lambda r, p, pool, b: layered.layered_impact(r),
        "weight impact": lambda r, p, pool, b: weights.weight_impact(b, 10),
    }


@pytest.mark.django_db(transaction=True)  # no test transaction around it: a preview's own BEGIN would show
@pytest.mark.parametrize("name", sorted(_previews()))
def test_a_preview_takes_no_lock_and_writes_nothing(name):
    from tests.services.sites import site_fleet

    west, _east, fra, _lhr, _iad = site_fleet()
    pool = fra.pools.first()
    backend = pool.backends.first()
    with CaptureQueriesContext(connection) as ctx:
        answer = _previews()[name](west, fra, pool, backend)
    impact = answer[1] if isinstance(answer, tuple) else answer
    assert impact.verdict in ("safe", "overload", "outage")
    statements = [q["sql"].lstrip().upper() for q in ctx.captured_queries]
    assert statements, "the preview read nothing: the check would be vacuous"
    assert [s for s in statements if "FOR UPDATE" in s] == []
    assert [s for s in statements if s.startswith(("INSERT", "UPDATE", "DELETE", "REPLACE"))] == []
    assert [s for s in statements if s.startswith("BEGIN IMMEDIATE")] == []  # SQLite's database write lock
    assert not Operation.objects.exists()


# --- the guard reads the fleet in a constant number of queries ------------------------------------


def spread_fleet(pools: int) -> None:
    """Each pool in its own PoP and region, so a per-backend or per-pool lookup shows as more queries."""
    service = f.service()
    for _ in range(pools):
        pool = f.pool(f.pop(f.region()), service, expected_rps=100)
        for _ in range(3):
            f.backend(pool, capacity_rps=1000)


def guard_queries() -> int:
    with CaptureQueriesContext(connection) as ctx:
        fleet, _bases = guard.build_fleet(Pool.objects.select_related("pop"))
    assert fleet.backends, "no backends: the count would be vacuous"
    return len(ctx.captured_queries)


def test_the_guard_reads_the_fleet_in_a_constant_number_of_queries(db):
    spread_fleet(2)
    few = guard_queries()
    spread_fleet(10)
    assert guard_queries() == few
