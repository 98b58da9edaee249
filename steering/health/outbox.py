"""Transitions waiting for the database: a Redis list between the prober and the recorder.

A shard's event loop must never wait for the relational DB (a wave of transitions is one
transaction per batch, with row locks and a publish): in a Celery worker the sink shares the
process, and a DB write holds the GIL the loop needs to keep probes on schedule. So a shard only
applies results in Redis (one Lua call) and appends the transitions here; a separate task
(`steering.record_probe_transitions`, another process) writes them through
steering.services.health. Redis already holds the new health, so nothing is lost if a recorder
dies: the entries stay until one records them, and a failed batch goes back to the front.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack

from steering.health.store import P, Transition

KEY = P + "transitions"
SCHEDULED = P + "transitions:scheduled"   # set while a recorder task is queued (one at a time)
LOCK = P + "transitions:lock"             # held while draining: one drainer keeps each backend's order

# Takes up to ARGV[1] entries from the front, atomically: two drainers never get the same entry.
_TAKE = """
local items = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #items > 0 then redis.call('LTRIM', KEYS[1], #items, -1) end
return items
"""


def encode(t: Transition) -> bytes:
    return bytes(msgpack.packb([t.backend_id, t.pool_id, t.from_health, t.to_health, t.evidence], use_bin_type=True))


def decode(raw: bytes) -> Transition:
    backend_id, pool_id, from_health, to_health, evidence = msgpack.unpackb(raw, raw=False)
    return Transition(int(backend_id), int(pool_id), str(from_health), str(to_health), dict(evidence))


def push(r: Any, transitions: Sequence[Transition]) -> None:
    if transitions:
        r.rpush(KEY, *(encode(t) for t in transitions))


def take(r: Any, limit: int) -> list[bytes]:
    return list(r.eval(_TAKE, 1, KEY, limit))


def give_back(r: Any, raw: Sequence[bytes]) -> None:
    """Put a batch that could not be recorded back at the front, in its order."""
    if raw:
        r.lpush(KEY, *reversed(list(raw)))


def pending(r: Any) -> int:
    return int(r.llen(KEY))
