"""Transitions waiting for the database: a Redis stream between the prober and the recorder.

A shard's event loop must never wait for the relational DB (a wave of transitions is one
transaction per batch, with row locks and a publish): in a Celery worker the sink shares the
process, and a DB write holds the GIL the loop needs to keep probes on schedule. So a shard only
applies results in Redis, and the same Lua call (store.APPLY_SCRIPT) that moves a backend's
state appends its transition to the stream: no transition exists in Redis without its entry.
A separate task (`steering.record_probe_transitions`, another process) writes them through
steering.services.health.

At least once: the recorder reads through a consumer group, so an entry it was handed stays
pending until it is acknowledged, and it is acknowledged only after its DB transaction committed.
A recorder that dies mid-batch (even SIGKILL) leaves its entries pending; the next recorder
claims them (XAUTOCLAIM) once they have been idle as long as a recorder's lock lives, and
records them again before anything newer. Recording one twice is harmless: the service skips a
transition whose `from` no longer matches the DB or whose seq is not newer than the one applied.
One recorder at a time (LOCK), so a backend's transitions are committed in their order.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Sequence
from typing import Any

from redis.exceptions import ResponseError

from steering import redis_keys as keys
from steering.health.store import TRANSITIONS_MAXLEN, Transition

STREAM = keys.PROBE_TRANSITIONS
GROUP = keys.PROBE_TRANSITIONS_GROUP
FIELD = b"t"
SCHEDULED = keys.PROBE_TRANSITIONS_SCHEDULED  # set while a recorder task is queued (one at a time)
LOCK = keys.PROBE_TRANSITIONS_LOCK            # held while draining: one drainer keeps each backend's order
LOCK_MS = 30_000                              # a drainer renews it after each read; a dead one's expires
Entry = tuple[str, Transition | None]         # (stream id, the transition; None when it was trimmed or unreadable)


def consumer_name() -> str:
    """This process, as the consumer group knows it (XINFO CONSUMERS shows who holds what)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def push(r: Any, transitions: Sequence[Transition]) -> None:
    """Append from Python (tests and tools; the prober appends inside store.APPLY_SCRIPT)."""
    for t in transitions:
        r.xadd(STREAM, {FIELD: t.pack()}, maxlen=TRANSITIONS_MAXLEN, approximate=True)


def ensure_group(r: Any) -> None:
    """The recorders' group, reading from the start of the stream (nothing already there is skipped)."""
    try:
        r.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entries(rows: Any) -> list[Entry]:
    out: list[Entry] = []
    for entry_id, fields in rows:
        raw = (fields or {}).get(FIELD)
        try:
            transition = Transition.unpack(raw) if raw is not None else None
        except (ValueError, TypeError):  # not ours to understand: acknowledged and dropped, never retried forever
            transition = None
        out.append((_text(entry_id), transition))
    return out


def claim_abandoned(r: Any, consumer: str, *, idle_ms: int, batch: int = 1000) -> int:
    """Make entries another recorder left pending for `idle_ms` or more ours."""
    claimed, cursor = 0, "0-0"
    while True:
        # Not JUSTID: redis-py then drops the cursor from the reply.
        reply = r.xautoclaim(STREAM, GROUP, consumer, idle_ms, start_id=cursor, count=batch)
        cursor = _text(reply[0])
        claimed += len(reply[1])
        if cursor == "0-0":
            return claimed


def held_by_others(r: Any, consumer: str) -> int:
    """Entries other consumers hold: a dead recorder's not yet claimable. Nothing newer is read
    while there are any, or a backend's later transition could be recorded before its earlier one."""
    summary = r.xpending(STREAM, GROUP)
    return sum(int(c["pending"]) for c in summary["consumers"] if _text(c["name"]) != consumer)


def let_go(r: Any, consumer: str, *, idle_ms: int) -> None:
    """After a failed batch: make the entries this consumer holds claimable by the next recorder
    at once (XCLAIM to itself with IDLE), instead of once they have been idle `idle_ms`."""
    rows = r.xpending_range(STREAM, GROUP, min="-", max="+", count=100_000, consumername=consumer)
    entry_ids = [row["message_id"] for row in rows]
    if entry_ids:
        r.xclaim(STREAM, GROUP, consumer, 0, entry_ids, idle=idle_ms, justid=True)


def read(r: Any, consumer: str, *, limit: int) -> Iterator[list[Entry]]:
    """Batches in stream order: this consumer's pending entries first (claimed, or left by a batch
    that failed here), then new ones. A pending entry is handed out again until acknowledged."""
    after = "0"
    while True:
        reply = r.xreadgroup(GROUP, consumer, {STREAM: after}, count=limit)
        rows = _entries(reply[0][1]) if reply else []
        if rows:
            if after != ">":
                after = rows[-1][0]
            yield rows
        elif after == ">":
            return
        else:
            after = ">"


def ack(r: Any, entry_ids: Sequence[str]) -> None:
    if entry_ids:
        r.xack(STREAM, GROUP, *entry_ids)


def _after(entry_id: str) -> str:
    ms, n = entry_id.split("-")
    return f"{ms}-{int(n) + 1}"


def tidy(r: Any, consumer: str) -> None:
    """Trim what every recorder acknowledged (entries before the oldest pending or undelivered one)
    and forget consumers that hold nothing (recorders that ended). Run by the lock holder."""
    group = next((g for g in r.xinfo_groups(STREAM) if _text(g["name"]) == GROUP), None)
    if group is None:
        return
    pending = r.xpending(STREAM, GROUP)
    oldest_needed = _text(pending["min"]) if pending["pending"] else _after(_text(group["last-delivered-id"]))
    r.xtrim(STREAM, minid=oldest_needed, approximate=False)  # exact: once per drain, not per entry
    for c in r.xinfo_consumers(STREAM, GROUP):
        if _text(c["name"]) != consumer and not c["pending"]:
            r.xgroup_delconsumer(STREAM, GROUP, c["name"])


def undelivered(r: Any) -> int:
    """Entries no recorder has been handed yet (all of them while the group does not exist)."""
    try:
        groups = r.xinfo_groups(STREAM)
    except ResponseError:  # no stream at all
        return 0
    group = next((g for g in groups if _text(g["name"]) == GROUP), None)
    if group is None:
        return int(r.xlen(STREAM))
    if group.get("lag") is not None:  # Redis 7 keeps the count
        return int(group["lag"])
    return len(r.xrange(STREAM, min="(" + _text(group["last-delivered-id"]), count=10_000))


def backlog(r: Any) -> int:
    """Entries not yet recorded: handed out but unacknowledged, or never handed out."""
    waiting = undelivered(r)
    try:
        return waiting + int(r.xpending(STREAM, GROUP)["pending"])
    except ResponseError:  # no group yet
        return waiting
