"""Live per-backend figures from the data plane, kept in Redis (never in the relational DB).

The HAProxy stats collector writes one hash per backend every 1-2 s; drains read it to
suggest a grace period (sessions / completion rate + buffer) and to finish early when a
draining backend's sessions reach zero. Figures older than MAX_AGE_SECONDS are ignored:
stale numbers must not end a drain.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

MAX_AGE_SECONDS = 10.0
KEY = "steering:stats:backend:{id}"


@dataclass(frozen=True)
class BackendStats:
    sessions: int             # current sessions (HAProxy scur)
    completion_rate: float    # sessions finishing per second, measured
    session_rate: float       # new sessions per second
    updated_at: float         # unix time of the sample
    rate_5xx: float = 0.0     # HTTP 5xx answers per second
    flag_5xx: bool = False    # passive health: 5xx spiking (steering.dataplane.passive)

    def fresh(self, now: float | None = None) -> bool:
        return (now or time.time()) - self.updated_at <= MAX_AGE_SECONDS


def _redis():  # type: ignore[no-untyped-def]
    from steering.services.effects import _redis as client

    return client()


def write_backend_stats(backend_id: int, stats: BackendStats) -> None:
    _redis().hset(KEY.format(id=backend_id), mapping={
        "sessions": stats.sessions,
        "completion_rate": stats.completion_rate,
        "session_rate": stats.session_rate,
        "updated_at": stats.updated_at,
    })


def read_backend_stats(backend_ids: Iterable[int]) -> dict[int, BackendStats]:
    """Fresh figures for the backends that have them; the others are simply absent."""
    ids = list(backend_ids)
    if not ids:
        return {}
    try:
        pipe = _redis().pipeline(transaction=False)
        for backend_id in ids:
            pipe.hgetall(KEY.format(id=backend_id))
        rows = pipe.execute()
    except Exception:  # no figures is a normal state (no data plane yet, Redis away)
        return {}
    now = time.time()
    found: dict[int, BackendStats] = {}
    for backend_id, row in zip(ids, rows, strict=True):
        if not row:
            continue
        try:
            stats = BackendStats(
                sessions=int(row[b"sessions"]),
                completion_rate=float(row[b"completion_rate"]),
                session_rate=float(row.get(b"session_rate", 0) or 0),
                updated_at=float(row[b"updated_at"]),
                rate_5xx=float(row.get(b"rate_5xx", 0) or 0),
                flag_5xx=row.get(b"flag_5xx") == b"1",
            )
        except (KeyError, ValueError):
            continue
        if stats.fresh(now):
            found[backend_id] = stats
    return found
