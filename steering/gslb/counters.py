"""Answers handed out per service and region: counted in the GSLB server, stored in Redis.

The GSLB server (steering.agents.gslb) counts in process and reports the counts every second
through the agent contract (POST /api/v1/agent/report/ `answers`); the control plane adds them
(steering.services.agent_reports.store_dns_answers) to the Redis buckets read here.
Measurements live in Redis, never in the relational DB: one hash per second
(`steering:gslb:answers:<unix second>`, steering.redis_keys.GSLB_ANSWERS_PREFIX; field
`<service id>:<region id>`) that expires after two minutes, so the last 60 s are always readable
and nothing needs cleaning up.

Standard library only (the Redis client is passed in): the GSLB server imports this module.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from steering.redis_keys import GSLB_ANSWERS_PREFIX, GSLB_HEARTBEAT

WINDOW_SECONDS = 60
BUCKET_TTL_SECONDS = 120
# The server beats every second; a heartbeat older than this means the DNS layer is not connected.
HEARTBEAT_FRESH_SECONDS = 5.0


class AnswerCounter:
    """Thread-safe in-memory counts; the lookup path only takes an uncontended lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[int, int], int] = {}

    def add(self, service_id: int, regions: Iterable[int]) -> None:
        with self._lock:
            for region_id in regions:
                key = (service_id, region_id)
                self._counts[key] = self._counts.get(key, 0) + 1

    def take(self) -> dict[tuple[int, int], int]:
        with self._lock:
            counts, self._counts = self._counts, {}
        return counts

    def put_back(self, counts: dict[tuple[int, int], int]) -> None:
        """Counts that could not be delivered: added to what is counted next, not lost."""
        with self._lock:
            for k, n in counts.items():
                self._counts[k] = self._counts.get(k, 0) + n

    def flush(self, client: Any, now: float | None = None) -> int:
        """Add what was counted since the last flush to this second's bucket; returns answers flushed."""
        counts = self.take()
        if not counts:
            return 0
        key = f"{GSLB_ANSWERS_PREFIX}{int(now if now is not None else time.time())}"
        try:
            pipe = client.pipeline(transaction=False)
            for (service_id, region_id), n in counts.items():
                pipe.hincrby(key, f"{service_id}:{region_id}", n)
            pipe.expire(key, BUCKET_TTL_SECONDS)
            pipe.execute()
        except Exception:
            # Redis away: keep the counts for the next flush rather than lose them.
            self.put_back(counts)
            raise
        return sum(counts.values())


def beat(client: Any, now: float | None = None) -> None:
    client.set(GSLB_HEARTBEAT, repr(now if now is not None else time.time()))


def fresh(heartbeat: Any, now: float) -> bool:
    """Is a heartbeat value (unix time, as bytes or str) recent enough to call the server up?"""
    try:
        return heartbeat is not None and now - float(heartbeat) <= HEARTBEAT_FRESH_SECONDS
    except ValueError:
        return False


def is_connected(client: Any, now: float | None = None) -> bool:
    try:
        heartbeat = client.get(GSLB_HEARTBEAT)
    except Exception:
        return False
    return fresh(heartbeat, time.time() if now is None else now)


def read_answers(client: Any, now: float | None = None) -> dict[str, Any]:
    """The /api/v1/dns/answers/ body: answers in the last 60 s by service and region."""
    now = time.time() if now is None else now
    second = int(now)
    try:
        pipe = client.pipeline(transaction=False)
        pipe.get(GSLB_HEARTBEAT)
        for s in range(second - WINDOW_SECONDS + 1, second + 1):
            pipe.hgetall(f"{GSLB_ANSWERS_PREFIX}{s}")
        heartbeat, *buckets = pipe.execute()
    except Exception:  # no figures is a state to show ("not connected"), not an error
        return {"connected": False, "window_seconds": WINDOW_SECONDS, "services": {}}
    connected = fresh(heartbeat, now)
    totals: dict[str, dict[str, int]] = {}
    for bucket in buckets:
        for field, value in bucket.items():
            service_id, _, region_id = (field.decode() if isinstance(field, bytes) else field).partition(":")
            regions = totals.setdefault(service_id, {})
            regions[region_id] = regions.get(region_id, 0) + int(value)
    services: dict[str, Any] = {}
    for service_id, regions in totals.items():
        total = sum(regions.values())
        services[service_id] = {
            "total": total,
            "qps": round(total / WINDOW_SECONDS, 3),
            "regions": {r: {"answers": n, "share": round(n / total, 4) if total else 0.0} for r, n in regions.items()},
        }
    return {"connected": connected, "window_seconds": WINDOW_SECONDS, "services": services}
