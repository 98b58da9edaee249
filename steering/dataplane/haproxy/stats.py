"""Stats collector: `show stat` -> per-backend sessions and rates in Redis (steering.dataplane.stats).

Rates come from counter deltas between two samples, so one sample every 1-2 s is enough:
- session_rate    = d(stot) / dt                      (new sessions per second)
- completion_rate = (d(stot) - d(scur)) / dt          (sessions that ended per second)
- rate_5xx        = d(hrsp_5xx) / dt                  (a passive health signal)
A counter that went backwards means HAProxy restarted: that interval gives no rate.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from steering.dataplane.haproxy.model import PopSpec
from steering.dataplane.haproxy.runtime import Runtime, ServerStat
from steering.dataplane.stats import KEY, BackendStats, write_backend_stats


@dataclass(frozen=True)
class Sample:
    sessions: int
    total: int
    errors_5xx: int
    at: float


@dataclass(frozen=True)
class Figures:
    sessions: int
    session_rate: float
    completion_rate: float
    rate_5xx: float


def figures(prev: Sample | None, cur: Sample, last_second_rate: int = 0) -> Figures:
    dt = cur.at - prev.at if prev else 0.0
    if prev is None or dt <= 0 or cur.total < prev.total or cur.errors_5xx < prev.errors_5xx:
        return Figures(cur.sessions, float(last_second_rate), 0.0, 0.0)
    started = cur.total - prev.total
    ended = max(0, started - (cur.sessions - prev.sessions))
    return Figures(cur.sessions, started / dt, ended / dt, (cur.errors_5xx - prev.errors_5xx) / dt)


def backend_ids(spec: PopSpec) -> dict[tuple[str, str], int]:
    return {(p.proxy, s.name): s.backend_id for p in spec.pools for s in p.servers if s.backend_id is not None}


class StatsCollector:
    """One per PoP in a long-running loop; previous samples fall back to Redis after a restart."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.previous: dict[int, Sample] = {}

    def collect(self, spec: PopSpec, *, now: float | None = None, write: bool = True) -> dict[int, Figures]:
        rows: list[ServerStat] = self.runtime.show_stat()
        now = now if now is not None else time.time()
        ids = backend_ids(spec)
        out: dict[int, Figures] = {}
        for row in rows:
            backend_id = ids.get((row.backend, row.name))
            if backend_id is None:
                continue
            cur = Sample(row.scur, row.stot, row.hrsp_5xx, now)
            prev = self.previous.get(backend_id) or (self._stored(backend_id) if write else None)
            out[backend_id] = fig = figures(prev, cur, row.rate)
            self.previous[backend_id] = cur
            if write:
                self._write(backend_id, fig, cur)
        return out

    def _write(self, backend_id: int, fig: Figures, cur: Sample) -> None:
        write_backend_stats(backend_id, BackendStats(sessions=fig.sessions, completion_rate=fig.completion_rate,
                                                     session_rate=fig.session_rate, updated_at=cur.at))
        # Beside the contract's fields: the totals the next sample needs and the 5xx rate.
        _redis().hset(KEY.format(id=backend_id), mapping={"stot": cur.total, "hrsp_5xx": cur.errors_5xx,
                                                          "rate_5xx": fig.rate_5xx})

    def _stored(self, backend_id: int) -> Sample | None:
        row: Mapping[bytes, bytes] = _redis().hgetall(KEY.format(id=backend_id))
        try:
            return Sample(int(row[b"sessions"]), int(row[b"stot"]), int(row[b"hrsp_5xx"]), float(row[b"updated_at"]))
        except (KeyError, ValueError):
            return None


def _redis():  # type: ignore[no-untyped-def]
    from steering.services.effects import _redis as client

    return client()
