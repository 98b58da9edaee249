"""What agents observe, stored where the rest of the product reads it.

- local (HAProxy): per-backend figures go to the Redis hash of steering.dataplane.stats (drains,
  the grace suggestion and the what-if read them there) and the 5xx flag is set; the HAProxy
  status goes to the heartbeat key the data-plane overview reads (steering.readmodels.dataplane);
  drift the agent repaired is audited as system:reconciler (steering.services.dataplane).
- anycast (ExaBGP): what ExaBGP announces (steering.services.announcements).
- dns (GSLB server): answers handed out, per service and region (steering.gslb.counters).

Measurements, so no Change rows, except the audit of a repair (which changed a data plane). The
keys are steering.redis_keys'.
Every backend, proxy and prefix named must belong to the reporting agent's PoP: the caller checks
scope with `foreign_backends` before anything is stored.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from steering.dataplane.passive import FiveXXRule, set_flags
from steering.models import Backend, PoP
from steering.redis_keys import BACKEND_STATS, GSLB_ANSWERS_PREFIX, HAPROXY_STATUS
from steering.redisconn import sync_client

HAPROXY_STATUS_TTL = 30
_RULE = FiveXXRule()


@dataclass(frozen=True)
class _Rates:
    session_rate: float
    rate_5xx: float


def foreign_backends(pop: PoP, backend_ids: Iterable[int]) -> list[int]:
    """Which of these ids are not backends of this PoP (so the report is out of scope)."""
    wanted = set(backend_ids)
    if not wanted:
        return []
    own = set(Backend.objects.filter(pk__in=wanted, pool__pop=pop).values_list("pk", flat=True))
    return sorted(wanted - own)


def store_local_figures(servers: Mapping[int, Mapping[str, float]], *, now: float | None = None) -> None:
    """Each backend's figures into its stats hash (every field the agent measured), then the flags."""
    if not servers:
        return
    at = now if now is not None else time.time()
    redis = sync_client()
    pipe = redis.pipeline(transaction=False)
    for backend_id, figures in servers.items():
        pipe.hset(BACKEND_STATS.format(id=backend_id), mapping={**{k: v for k, v in figures.items()}, "updated_at": at})
    pipe.execute()
    set_flags({bid: _Rates(float(f.get("session_rate", 0.0)), float(f.get("rate_5xx", 0.0)))
               for bid, f in servers.items()}, _RULE, redis=redis)


def store_haproxy_status(pop: PoP, status: Mapping[str, Any], *, instance: str, now: float | None = None) -> None:
    body = {**status, "pop": pop.slug, "instance": instance, "at": now if now is not None else time.time()}
    sync_client().set(HAPROXY_STATUS.format(pop=pop.slug), json.dumps(body), ex=HAPROXY_STATUS_TTL)


def store_dns_answers(answers: Iterable[tuple[int, int, int]], *, now: float | None = None) -> int:
    """Add (service id, region id, count) to this second's answer bucket and beat the DNS layer's
    heartbeat; returns the answers stored."""
    from steering.gslb import counters

    at = now if now is not None else time.time()
    redis = sync_client()
    key = f"{GSLB_ANSWERS_PREFIX}{int(at)}"
    pipe = redis.pipeline(transaction=False)
    total = 0
    for service_id, region_id, count in answers:
        pipe.hincrby(key, f"{service_id}:{region_id}", count)
        total += count
    pipe.expire(key, counters.BUCKET_TTL_SECONDS)
    pipe.execute()
    counters.beat(redis, at)
    return total
