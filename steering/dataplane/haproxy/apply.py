"""Desired state vs what HAProxy reports -> the minimal Runtime API commands, drift and reconcile.

Drift vs a pending change: we remember what we last applied to each server (AppliedStore). When
HAProxy still shows what we last applied, a difference from the desired state is ours to push (a
change not synced yet, a slow-start ramp): applied quietly. When HAProxy shows something we never
applied (a hand-typed runtime command, a restart from an old config), that is drift: repaired and
audited as system:reconciler (steering.services.dataplane).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from steering.dataplane.haproxy.model import DRAIN, MAINT, READY, PopSpec, ServerSpec
from steering.dataplane.haproxy.render import observe_words
from steering.dataplane.haproxy.runtime import Runtime, RuntimeAPIError, ServerStat, ServerState

logger = logging.getLogger(__name__)

Key = str  # "proxy/server"


@dataclass(frozen=True)
class Want:
    """What we drive on one server: state and (for ready) weight."""

    state: str
    weight: int

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "weight": self.weight}


def want_of(s: ServerSpec) -> Want:
    return Want(s.state, s.weight)


def satisfied(want: Want, state: str, weight: int) -> bool:
    """Does a server in `state` with user weight `weight` do what `want` asks for new traffic?

    A ready server at weight 0 takes no new sessions, like a draining one: the rendered config
    writes draining as weight 0, so a fresh HAProxy already satisfies a drain.
    """
    if want.state == MAINT:
        return state == MAINT
    if want.state == DRAIN:
        return state == DRAIN or (state == READY and weight == 0)
    return state == READY and weight == want.weight


@dataclass(frozen=True)
class Step:
    op: str              # add | addr | state | weight | delete
    proxy: str
    server: str
    value: Any = None
    why: str = ""

    def line(self) -> str:
        if self.op == "add":  # as the Runtime API command reads
            address, port, weight, backup, passive = self.value
            words = [f"{address}:{port}", f"weight {weight}", "backup" if backup else "", passive]
            return f"add {self.proxy}/{self.server} " + " ".join(w for w in words if w)
        return f"{self.op} {self.proxy}/{self.server}" + (f" {self.value}" if self.value is not None else "")


@dataclass(frozen=True)
class Difference:
    proxy: str
    server: str
    observed: dict[str, Any] | None   # None: HAProxy does not have the server
    desired: dict[str, Any] | None    # None: we do not want the server
    backend_id: int | None = None
    drift: bool = False               # HAProxy moved away from what we applied (vs. a pending change)

    @property
    def key(self) -> Key:
        return f"{self.proxy}/{self.server}"


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    missing_proxies: list[str] = field(default_factory=list)    # pools HAProxy lacks: re-render and reload
    waiting: list[str] = field(default_factory=list)             # removals waiting for sessions to end
    retiring: list[Key] = field(default_factory=list)            # those servers: drained by us, kept for now


@dataclass
class Result:
    plan: Plan
    applied: list[Step] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def drift(self) -> list[Difference]:
        return [d for d in self.plan.differences if d.drift]

    @property
    def repaired(self) -> list[Difference]:
        """Drifted servers whose every step went through."""
        failed = {e.split(" ", 1)[0] for e in self.errors}
        return [d for d in self.drift if d.key not in failed]


class AppliedStore(Protocol):
    def get(self, pop: str) -> dict[Key, Want] | None: ...

    def put(self, pop: str, applied: Mapping[Key, Want]) -> None: ...

    def lock(self, pop: str) -> AbstractContextManager[Any]:
        """Serialises read-desired / observe / apply / remember per PoP. Without it a reconcile
        reading the record while a sync pushes a change would take that change for drift."""
        ...


class MemoryAppliedStore:
    def __init__(self) -> None:
        self.data: dict[str, dict[Key, Want]] = {}
        self._lock = threading.RLock()

    def lock(self, pop: str) -> AbstractContextManager[Any]:
        return self._lock

    def get(self, pop: str) -> dict[Key, Want] | None:
        return dict(self.data[pop]) if pop in self.data else None

    def put(self, pop: str, applied: Mapping[Key, Want]) -> None:
        self.data[pop] = dict(applied)


def observe(runtime: Runtime) -> tuple[set[str], dict[Key, ServerState], dict[Key, ServerStat]]:
    proxies = set(runtime.backends())
    states = {f"{s.backend}/{s.name}": s for s in runtime.show_servers_state()}
    stats = {f"{s.backend}/{s.name}": s for s in runtime.show_stat()}
    return proxies, states, stats


def plan(spec: PopSpec, proxies: set[str], states: Mapping[Key, ServerState], stats: Mapping[Key, ServerStat],
         applied: Mapping[Key, Want] | None) -> Plan:
    """The minimal steps from what HAProxy reports to `spec`. Pure: no I/O."""
    out = Plan()
    ups: list[Step] = []      # adds, enables, weights: first, so a pool never dips to nothing
    downs: list[Step] = []    # drains, maintenance, deletions: after
    wanted: set[Key] = set()

    def drifted(key: Key, observed: ServerState | None) -> bool:
        if applied is None:
            return False      # nothing pushed yet by us: we cannot blame anyone
        last = applied.get(key)
        if observed is None:
            return last is not None
        if last is None:
            return True       # a server we never put there
        return not satisfied(last, observed.state, observed.weight)

    for pool in spec.pools:
        if pool.proxy not in proxies:
            out.missing_proxies.append(pool.proxy)
            continue
        for s in pool.servers:
            key = f"{pool.proxy}/{s.name}"
            wanted.add(key)
            want = want_of(s)
            cur = states.get(key)
            if cur is None:
                # The pool's passive-health words too: a server added at runtime is watched on live
                # traffic like one from the config, not only after the next reload.
                ups.append(Step("add", pool.proxy, s.name, (s.address, s.port, s.weight, s.backup, observe_words(pool)),
                                "not in HAProxy"))
                if s.state != MAINT:  # a dynamic server is born in maintenance
                    ups.append(Step("state", pool.proxy, s.name, s.state, "enable the added server"))
                out.differences.append(Difference(pool.proxy, s.name, None, want.as_dict(), s.backend_id,
                                                  drifted(key, None)))
                continue
            steps: list[Step] = []
            if (cur.address, cur.port) != (s.address, s.port):
                steps.append(Step("addr", pool.proxy, s.name, (s.address, s.port), "address changed"))
            if not satisfied(want, cur.state, cur.weight):
                if s.state == READY:
                    if cur.weight != s.weight:
                        steps.append(Step("weight", pool.proxy, s.name, s.weight, f"weight {cur.weight}"))
                    if cur.state != READY:
                        steps.append(Step("state", pool.proxy, s.name, READY, f"was {cur.state}"))
                else:
                    steps.append(Step("state", pool.proxy, s.name, s.state, f"was {cur.state}"))
            if steps:
                (ups if s.state == READY else downs).extend(steps)
                out.differences.append(Difference(
                    pool.proxy, s.name, {"state": cur.state, "weight": cur.weight}, want.as_dict(), s.backend_id,
                    drifted(key, cur)))
    ours = {p.proxy for p in spec.pools}
    for key, cur in states.items():
        if key in wanted or cur.backend not in ours:
            continue
        sessions = stats[key].scur if key in stats else 0
        observed = {"state": cur.state, "weight": cur.weight}
        if sessions > 0:
            # Removed from the model: no new traffic now, delete once its sessions are gone.
            if cur.state == READY and cur.weight > 0:
                downs.append(Step("state", cur.backend, cur.name, DRAIN, "removed; draining before delete"))
            out.waiting.append(f"{key}: {sessions} sessions")
            out.retiring.append(key)
        else:
            if cur.state != MAINT:
                downs.append(Step("state", cur.backend, cur.name, MAINT, "removed"))
            downs.append(Step("delete", cur.backend, cur.name, None, "removed"))
        out.differences.append(Difference(cur.backend, cur.name, observed, None, None, drifted(key, cur)))
    out.steps = ups + downs
    return out


def run(runtime: Runtime, step: Step) -> None:
    if step.op == "add":
        address, port, weight, backup, passive = step.value
        runtime.add_server(step.proxy, step.server, address, port, weight=weight, backup=backup, extra=passive)
    elif step.op == "addr":
        runtime.set_addr(step.proxy, step.server, step.value[0], step.value[1])
    elif step.op == "state":
        runtime.set_state(step.proxy, step.server, step.value)
    elif step.op == "weight":
        runtime.set_weight(step.proxy, step.server, step.value)
    elif step.op == "delete":
        runtime.del_server(step.proxy, step.server)
    else:  # pragma: no cover - plan() makes only the ops above
        raise ValueError(step.op)


def sync(spec: PopSpec, runtime: Runtime, store: AppliedStore) -> Result:
    """Bring one PoP's HAProxy to `spec` through the Runtime API (no reload) and remember it.

    Callers hold `store.lock(pop)` around reading `spec` and this call (see jobs.py)."""
    proxies, states, stats = observe(runtime)
    result = Result(plan(spec, proxies, states, stats, store.get(spec.slug)))
    failed: set[Key] = set()
    for step in result.plan.steps:
        key = f"{step.proxy}/{step.server}"
        if key in failed:
            continue  # later steps of a server whose earlier step failed would act on a wrong state
        try:
            run(runtime, step)
            result.applied.append(step)
        except (RuntimeAPIError, ValueError) as exc:
            failed.add(key)
            result.errors.append(f"{key} {step.line()}: {exc}")
            logger.warning("haproxy %s: %s failed: %s", spec.slug, step.line(), exc)
    # What HAProxy now holds for us: the desired state, except where a step failed (keep the
    # observed value, so the next pass still sees the difference as ours to push, not as drift).
    remembered: dict[Key, Want] = {}
    previous = store.get(spec.slug) or {}
    for pool in spec.pools:
        if pool.proxy in result.plan.missing_proxies:
            continue
        for s in pool.servers:
            key = f"{pool.proxy}/{s.name}"
            if key in failed:
                if key in previous:
                    remembered[key] = previous[key]
            else:
                remembered[key] = want_of(s)
    for key in result.plan.retiring:
        if key not in failed:
            remembered[key] = Want(DRAIN, 0)  # ours, so the next pass does not call it drift
    store.put(spec.slug, remembered)
    return result


Auditor = Callable[[str, list[Difference]], Any]


def reconcile(spec: PopSpec, runtime: Runtime, store: AppliedStore, audit: Auditor | None = None) -> Result:
    """sync(), then hand the repaired drift (not pending changes) to `audit` (pop slug, differences)."""
    result = sync(spec, runtime, store)
    if result.repaired and audit is not None:
        audit(spec.slug, result.repaired)
    return result
