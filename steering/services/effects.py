"""Side effects that run after commit: the state version in Redis and the live delta.

Delivery to browsers is at-most-once (Channels): a failure here is logged, never raised, and
browsers recover by noticing the version gap and catching up on the deltas kept for that
(steering.readmodels.live_deltas), or refetching the topology when those are gone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections import defaultdict
from typing import Any

from channels.layers import get_channel_layer

from steering.readmodels import live_deltas
from steering.redis_keys import LIVE_GROUP, STATE_VERSION, STATE_VERSION_CHANNEL
from steering.redisconn import sync_client
from steering.representation import TYPES, represent_many

logger = logging.getLogger(__name__)

# Sets the key only if the new version is higher, so late publishers never move it backwards;
# then tells the long-polls waiting on the channel (agents' long-polls wake on it, no polling loop).
_MAX_SCRIPT = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('PUBLISH', KEYS[2], ARGV[2])
  return 1
end
return 0
"""


def build_delta(version: int, deltas: list[dict[str, Any]]) -> dict[str, Any]:
    # Only what the live map shows travels (tokens, for one, do not).
    deltas = [d for d in deltas if d["type"] in TYPES]
    by_type: dict[str, set[int]] = defaultdict(set)
    for d in deltas:
        if d["op"] == "upsert":
            by_type[d["type"]].add(d["id"])
    data = {t: represent_many(t, ids) for t, ids in by_type.items()}
    seen: set[tuple[str, int]] = set()
    changes = []
    for d in deltas:
        key = (d["type"], d["id"])
        if key in seen:
            continue
        seen.add(key)
        if d["op"] == "upsert":
            obj = data.get(d["type"], {}).get(d["id"])
            if obj is None:  # deleted later in the same transaction
                changes.append({"op": "delete", "type": d["type"], "id": d["id"]})
            else:
                changes.append({"op": "upsert", "type": d["type"], "id": d["id"], "data": obj})
        else:
            changes.append({"op": "delete", "type": d["type"], "id": d["id"]})
    return {"type": "delta", "version": version, "changes": changes}


_last_warning = 0.0


def _warn(what: str, version: int, exc: Exception) -> None:
    # One line every 30 s while Redis is away, not a traceback per change.
    global _last_warning
    now = time.monotonic()
    if now - _last_warning > 30:
        _last_warning = now
        logger.warning("could not %s for version %s: %s (live clients will resync)", what, version, exc)


class _GroupSender:
    """Channel-layer sends from sync code on one long-lived event loop per process.

    channels-redis keeps its Redis connections per event loop, and async_to_sync runs each call
    on a fresh loop: every publish paid a new connection (~7-25 ms). One loop in a daemon thread
    keeps them; a send waits for its own completion, so sends from a thread stay in order.
    A forked child (Celery prefork) gets its own loop: threads do not survive a fork.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = 0

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="live-sender", daemon=True).start()
                self._loop, self._pid = loop, os.getpid()
            return self._loop

    def send(self, group: str, message: dict[str, Any], timeout: float = 5.0) -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        future = asyncio.run_coroutine_threadsafe(layer.group_send(group, message), self._running_loop())
        future.result(timeout)


_sender = _GroupSender()


# Objects whose changes no data plane sees (the desired state of every layer ignores them; a
# monitor reaches the data planes only through the health it gives backends).
_NO_DATAPLANE_EFFECT = frozenset({"operation", "apitoken", "user", "group", "dataplanestate", "idempotencyrecord",
                                  "monitor", "safetyrule", "changefreeze",
                                  "webhooksubscription", "webhookdelivery"})
# Objects (and, for an update, fields) only the DNS layer reads: no PoP's local or anycast state
# moves with them. A service's other fields (slug, protocol, port, prefix) are in every spec.
_DNS_ONLY = {"clientnetwork": None, "service": frozenset({"fqdn", "dns_policy", "ttl"})}
# Objects whose change moves the PoPs of one region (a VIP: the binds there; a region: its state).
_BY_REGION = frozenset({"vip", "region"})


def affected_pops(deltas: list[dict[str, Any]]) -> list[int] | None:
    """The PoPs whose local/anycast desired state this change can move; None: possibly all of
    them (a service, a region, a deleted object...). Lets waiting agents of other PoPs be told
    "nothing for you" without rebuilding their desired state."""
    from steering.models import Backend, Pool, PoP

    pops: set[int] = set()
    backends: set[int] = set()
    pools: set[int] = set()
    regions: set[int] = set()
    for d in deltas:
        kind = d["type"]
        if kind in _NO_DATAPLANE_EFFECT or _dns_only(d):
            continue
        if d["op"] != "upsert":
            return None
        if kind in _BY_REGION:
            if "region_id" in (d.get("fields") or ("region_id",)):  # created, or moved between regions
                return None
            regions.add(d["id"] if kind == "region" else _vip_region(d["id"]))
        elif kind == "pop":
            pops.add(d["id"])
        elif kind == "backend":
            backends.add(d["id"])
        elif kind == "pool":
            pools.add(d["id"])
        else:
            return None
    if regions:
        pops |= set(PoP.objects.filter(region_id__in=regions).values_list("pk", flat=True))
    if backends:
        pools |= set(Backend.objects.filter(pk__in=backends).values_list("pool_id", flat=True))
    if pools:
        # A pool's backup pool may sit in another PoP; its PoP's spec names only its own pools.
        pops |= set(Pool.objects.filter(pk__in=pools).values_list("pop_id", flat=True))
    return sorted(pops)


def _dns_only(delta: dict[str, Any]) -> bool:
    kind = delta["type"]
    if kind not in _DNS_ONLY:
        return False
    fields, changed = _DNS_ONLY[kind], delta.get("fields")
    return fields is None or (delta["op"] == "upsert" and changed is not None and set(changed) <= fields)


def _vip_region(vip_id: int) -> int:
    from steering.models import VIP

    return int(VIP.objects.values_list("region_id", flat=True).get(pk=vip_id))


def publish_after_commit(version: int, deltas: list[dict[str, Any]]) -> None:
    try:
        affected = affected_pops(deltas)
    except Exception:  # the database away right after commit: say "everything", which is safe
        affected = None
    try:
        event = json.dumps({"v": version, "pops": affected}, separators=(",", ":"))
        sync_client().eval(_MAX_SCRIPT, 2, STATE_VERSION, STATE_VERSION_CHANNEL, version, event)
    except Exception as exc:
        _warn("record the state version in Redis", version, exc)
        return
    try:
        message = build_delta(version, deltas)
        try:
            live_deltas.record(version, message)  # first: a browser told of this version can catch up to it
        except Exception as exc:
            _warn("keep the live delta for catch-up", version, exc)
        _sender.send(LIVE_GROUP, {"type": "live.delta", "delta": message})
    except Exception as exc:
        _warn("publish the live delta", version, exc)


def publish_observed(message: dict[str, Any]) -> None:
    """Push a measurement (a data plane's observed state, a passive health flag) to live browsers.

    Not a state change: no version, no audit. The consumer forwards `message` as-is."""
    try:
        _sender.send(LIVE_GROUP, {"type": "live.observed", "message": message})
    except Exception as exc:
        _warn("publish an observation", 0, exc)
