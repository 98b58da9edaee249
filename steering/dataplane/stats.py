"""Live per-backend figures from the data plane, kept in Redis (never in the relational DB).

The HAProxy stats collector writes one hash per backend every 1-2 s (steering.redis_keys.BACKEND_STATS:
every field of `steering.dataplane.haproxy.stats.Figures`, plus `updated_at`); drains read it to suggest
a grace period (sessions / completion rate + buffer) and to finish early when a draining backend's
sessions reach zero; the outlier policy (steering.services.outliers) reads the cumulative
counters to judge live traffic over a window. Figures older than MAX_AGE_SECONDS are ignored:
stale numbers must not end a drain nor eject anyone.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, cast

from steering.redis_keys import BACKEND_STATS
from steering.redisconn import sync_client

MAX_AGE_SECONDS = 10.0


@dataclass(frozen=True)
class BackendStats:
    sessions: int             # current sessions (HAProxy scur)
    completion_rate: float    # sessions finishing per second, measured
    session_rate: float       # new sessions per second
    updated_at: float         # unix time of the sample
    rate_5xx: float = 0.0     # HTTP 5xx answers per second
    flag_5xx: bool = False    # passive health: 5xx spiking (steering.dataplane.passive)
    # Cumulative counters since HAProxy started (they go back to 0 when it restarts), for windows:
    stot: int = 0             # attempts: sessions sent to the server, failed ones included
    hrsp_5xx: int = 0         # HTTP 5xx answers
    errors: int = 0           # failed attempts: connection errors, broken responses, retries, redispatches
    rate_errors: float = 0.0  # failed attempts per second
    observed_down: int = 0    # 1 when HAProxy's own live-traffic watch (observe) has it down

    def fresh(self, now: float | None = None) -> bool:
        return (now or time.time()) - self.updated_at <= MAX_AGE_SECONDS


# The fields a writer stores (flag_5xx is steering.dataplane.passive's).
WRITTEN_FIELDS = ("sessions", "completion_rate", "session_rate", "updated_at", "rate_5xx", "stot", "hrsp_5xx",
                  "errors", "rate_errors", "observed_down")


def write_backend_stats(backend_id: int, stats: BackendStats) -> None:
    sync_client().hset(BACKEND_STATS.format(id=backend_id),
                       mapping={name: getattr(stats, name) for name in WRITTEN_FIELDS})


# Every hash in one reply: a guard check over a 20,000-backend fleet read them as 20,000
# pipelined HGETALLs, whose packing and parsing in redis-py was most of its time.
_HGETALL_MANY = """
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('HGETALL', key) end
return out
"""
_CHUNK = 5000  # keys per script call: Redis runs a script alone, so keep each one short


def _hgetall_many(keys: list[str]) -> list[dict[bytes, bytes]]:
    script = sync_client().register_script(_HGETALL_MANY)
    rows: list[dict[bytes, bytes]] = []
    for start in range(0, len(keys), _CHUNK):
        for flat in script(keys=keys[start:start + _CHUNK]):
            rows.append(dict(zip(flat[::2], flat[1::2], strict=True)))
    return rows


def _int(row: dict[bytes, bytes], key: bytes) -> int:
    return int(float(row.get(key, 0) or 0))  # a JSON client may send 12.0 for 12


def read_backend_stats(backend_ids: Iterable[int]) -> dict[int, BackendStats]:
    """Fresh figures for the backends that have them; the others are simply absent."""
    ids = list(backend_ids)
    if not ids:
        return {}
    try:
        rows = _hgetall_many([BACKEND_STATS.format(id=backend_id) for backend_id in ids])
    except Exception:  # no figures is a normal state (no data plane yet, Redis away)
        return {}
    now = time.time()
    found: dict[int, BackendStats] = {}
    for backend_id, row in zip(ids, rows, strict=True):
        if not row:
            continue
        try:
            stats = BackendStats(
                sessions=int(float(row[b"sessions"])),
                completion_rate=float(row[b"completion_rate"]),
                session_rate=float(row.get(b"session_rate", 0) or 0),
                updated_at=float(row[b"updated_at"]),
                rate_5xx=float(row.get(b"rate_5xx", 0) or 0),
                flag_5xx=row.get(b"flag_5xx") == b"1",
                stot=_int(row, b"stot"),
                hrsp_5xx=_int(row, b"hrsp_5xx"),
                errors=_int(row, b"errors"),
                rate_errors=float(row.get(b"rate_errors", 0) or 0),
                observed_down=_int(row, b"observed_down"),
            )
        except (KeyError, ValueError):
            continue
        if stats.fresh(now):
            found[backend_id] = stats
    return found


class RedisFigureStore:
    """A HAProxy stats collector's figures straight into Redis, as an agent's report would land
    (steering.dataplane.haproxy.stats.FigureStore), for collectors run beside the control plane."""

    def write(self, backend_id: int, figures: Any, at: float) -> None:
        sync_client().hset(BACKEND_STATS.format(id=backend_id),
                           mapping={**{k: v for k, v in asdict(figures).items()}, "updated_at": at})

    def previous(self, backend_id: int) -> Any:
        from steering.dataplane.haproxy.stats import Sample

        row = cast(dict[bytes, bytes], sync_client().hgetall(BACKEND_STATS.format(id=backend_id)))  # bytes: not decoded
        try:
            return Sample(int(float(row[b"sessions"])), int(float(row[b"stot"])), int(float(row[b"hrsp_5xx"])),
                          float(row[b"updated_at"]), errors=int(float(row.get(b"errors", 0) or 0)))
        except (KeyError, ValueError):
            return None
