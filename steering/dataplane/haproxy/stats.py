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
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from steering.dataplane.haproxy.model import PopSpec
from steering.dataplane.haproxy.runtime import Runtime, ServerStat
from steering.dataplane.stats import KEY


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


def observed_down(status: str) -> bool:
    """`DOWN`, `DOWN 1/2` (coming back): taken out by HAProxy's checks, here its observe. Not
    MAINT or DRAIN (ours), not `no check` (a server added at runtime has no observe)."""
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


class StatsCollector:
    """One per PoP in a long-running loop; previous samples fall back to Redis after a restart."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.previous: dict[int, Sample] = {}

    def observed_down(self, spec: PopSpec) -> tuple[set[int], list[ServerStat]]:
        """The servers HAProxy's live-traffic watch has taken out now, and the rows it read (so a
        report made at once need not ask again)."""
        rows: list[ServerStat] = self.runtime.show_stat()
        ids = backend_ids(spec)
        down = {bid for row in rows if (bid := ids.get((row.backend, row.name))) is not None
                and observed_down(row.status)}
        return down, rows

    def collect(self, spec: PopSpec, *, now: float | None = None, write: bool = True,
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
            prev = self.previous.get(backend_id) or (self._stored(backend_id) if write else None)
            out[backend_id] = fig = figures(prev, cur, row.rate)
            self.previous[backend_id] = cur
            if write:
                self._write(backend_id, fig, cur)
        return out

    def _write(self, backend_id: int, fig: Figures, cur: Sample) -> None:
        # Every field of Figures, as the API stores an agent's report (steering.dataplane.stats).
        _redis().hset(KEY.format(id=backend_id), mapping={**asdict(fig), "updated_at": cur.at})

    def _stored(self, backend_id: int) -> Sample | None:
        row: Mapping[bytes, bytes] = _redis().hgetall(KEY.format(id=backend_id))
        try:
            return Sample(int(float(row[b"sessions"])), int(float(row[b"stot"])), int(float(row[b"hrsp_5xx"])),
                          float(row[b"updated_at"]), errors=int(float(row.get(b"errors", 0) or 0)))
        except (KeyError, ValueError):
            return None


def _redis():  # type: ignore[no-untyped-def]
    from steering.services.effects import _redis as client

    return client()
