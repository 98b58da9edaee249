"""The live feed's recent deltas, kept so a browser that missed some catches up cheaply.

The feed is at-most-once (a full channel drops messages). A browser that sees a gap asks for the
deltas after the version it holds (`GET /api/v1/live/deltas/?after=V`) instead of refetching the
whole topology, which is megabytes on a big fleet. Each published delta is kept in a Redis sorted
set scored by its version, the last STEERING_LIVE_CATCHUP_VERSIONS of them. A catch-up is served
only when every version after V is there; otherwise (too old, or a version that published no
delta) the answer is "refetch", as before.
"""

from __future__ import annotations

from typing import Any

import orjson
from django.conf import settings

from steering.redis_keys import LIVE_DELTAS
from steering.redisconn import sync_client


def record(version: int, message: dict[str, Any]) -> None:
    """Keep one version's delta (as the feed sent it), dropping the oldest beyond the limit."""
    keep = settings.STEERING_LIVE_CATCHUP_VERSIONS
    if keep <= 0:
        sync_client().delete(LIVE_DELTAS)
        return
    pipe = sync_client().pipeline(transaction=False)
    # Anything kept at or above this version is from before the database went back in time
    # (a restore): it must never be served as what came after.
    pipe.zremrangebyscore(LIVE_DELTAS, version, "+inf")
    pipe.zadd(LIVE_DELTAS, {orjson.dumps(message): version})
    pipe.zremrangebyrank(LIVE_DELTAS, 0, -keep - 1)
    pipe.execute()


def kept_after(after: int) -> list[dict[str, Any]] | None:
    """Every delta published after version `after`, in order ([] when none is newer), or None
    when a catch-up cannot be trusted: a version after `after` is not kept (too old, or it
    published no delta), or nothing is kept at all (Redis restarted)."""
    client = sync_client()
    rows: list[bytes] = client.zrangebyscore(LIVE_DELTAS, f"({after}", "+inf")  # type: ignore[assignment]
    deltas = [orjson.loads(row) for row in rows]
    versions = [int(d["version"]) for d in deltas]
    if not versions:
        oldest = client.zrange(LIVE_DELTAS, 0, 0, withscores=True)
        return [] if oldest and int(oldest[0][1]) <= after else None
    if versions != list(range(after + 1, after + 1 + len(versions))):
        return None
    return deltas
