"""Stats collector: `show stat` -> per-backend sessions and rates in Redis (steering.dataplane.stats).

Rates come from counter deltas between two samples, so one sample every 1-2 s is enough:
- session_rate    = d(stot) / dt                      (new sessions per second)
- completion_rate = (d(stot) - d(scur)) / dt          (sessions that ended per second)
- rate_5xx        = d(hrsp_5xx) / dt                  (a passive health signal)
- rate_errors     = d(econ + eresp + wretr + wredis) / dt   (failed attempts, ditto)
A counter that went backwards means HAProxy restarted: that interval gives no rate.
The cumulative counters travel too (stot, hrsp_5xx, errors), so the outlier policy can take
exact deltas over any window whatever samples it missed, and `observed_down` says HAProxy's own
live-traffic watch (`observe layer4`, see render.py) took the server out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from steering.dataplane.haproxy.model import PopSpec
from steering.dataplane.haproxy.runtime import Runtime, ServerStat


@dataclass(frozen=True)
class Sample:
    sessions: int
    total: int
    errors_5xx: int
    at: float
    errors: int = 0          # econ + eresp + wretr + wredis
    down: bool = False       # HAProxy's status says DOWN (its observe/check took the server out)


@dataclass(frozen=True)
class Figures:
    """One backend's figures as the agent reports them: every field a finite number >= 0."""

    sessions: int
    session_rate: float
    completion_rate: float
    rate_5xx: float
    rate_errors: float = 0.0
    stot: int = 0
    hrsp_5xx: int = 0
    errors: int = 0
    observed_down: int = 0
    # 1 when the agent put the server back this pass: HAProxy's observe had taken out more of its
    # pool than the pool's bound allows (steering.dataplane.haproxy.observe); the control plane tells
    # the operator (outlier panic).
    observe_held: int = 0


def observed_down(status: str) -> bool:
    """`DOWN`, `DOWN 1/2` (coming back): taken out by HAProxy's checks, here its observe (servers
    from the config and those the agent adds at runtime alike: apply.py gives an added server its
    pool's observe words and enables its check). Not MAINT or DRAIN (ours), not `no check` (a pool
    with observe off)."""
    return status.startswith("DOWN")


def figures(prev: Sample | None, cur: Sample, last_second_rate: int = 0) -> Figures:
    dt = cur.at - prev.at if prev else 0.0
    counters = {"stot": cur.total, "hrsp_5xx": cur.errors_5xx, "errors": cur.errors, "observed_down": int(cur.down)}
    if (prev is None or dt <= 0 or cur.total < prev.total or cur.errors_5xx < prev.errors_5xx
            or cur.errors < prev.errors):
        return Figures(cur.sessions, float(last_second_rate), 0.0, 0.0, **counters)
    started = cur.total - prev.total
    ended = max(0, started - (cur.sessions - prev.sessions))
    return Figures(cur.sessions, started / dt, ended / dt, (cur.errors_5xx - prev.errors_5xx) / dt,
                   rate_errors=(cur.errors - prev.errors) / dt, **counters)


def sample_of(row: ServerStat, at: float) -> Sample:
    return Sample(row.scur, row.stot, row.hrsp_5xx, at, errors=row.econ + row.eresp + row.wretr + row.wredis,
                  down=observed_down(row.status))


def backend_ids(spec: PopSpec) -> dict[tuple[str, str], int]:
    return {(p.proxy, s.name): s.backend_id for p in spec.pools for s in p.servers if s.backend_id is not None}


class FigureStore(Protocol):
    """Where figures go when the collector runs beside the control plane (tests, benches); the
    agent keeps its samples in memory and reports figures over the API instead."""

    def write(self, backend_id: int, figures: Figures, at: float) -> None: ...

    def previous(self, backend_id: int) -> Sample | None: ...


class StatsCollector:
    """One per PoP in a long-running loop. With a `store`, figures are written there and the
    previous samples come back from it after a restart; without one (the agent), only memory."""

    def __init__(self, runtime: Runtime, store: FigureStore | None = None) -> None:
        self.runtime = runtime
        self.store = store
        self.previous: dict[int, Sample] = {}

    def observed_down(self, spec: PopSpec) -> tuple[set[int], list[ServerStat]]:
        """The servers HAProxy's live-traffic watch has taken out now, and the rows it read (so a
        report made at once need not ask again)."""
        rows: list[ServerStat] = self.runtime.show_stat()
        ids = backend_ids(spec)
        down = {bid for row in rows if (bid := ids.get((row.backend, row.name))) is not None
                and observed_down(row.status)}
        return down, rows

    def collect(self, spec: PopSpec, *, now: float | None = None,
                rows: list[ServerStat] | None = None) -> dict[int, Figures]:
        rows = self.runtime.show_stat() if rows is None else rows
        now = now if now is not None else time.time()
        ids = backend_ids(spec)
        out: dict[int, Figures] = {}
        for row in rows:
            backend_id = ids.get((row.backend, row.name))
            if backend_id is None:
                continue
            cur = sample_of(row, now)
            prev = self.previous.get(backend_id) or (self.store.previous(backend_id) if self.store else None)
            out[backend_id] = fig = figures(prev, cur, row.rate)
            self.previous[backend_id] = cur
            if self.store is not None:
                self.store.write(backend_id, fig, cur.at)
        return out
