"""What the data planes report back: agents' last contact, each PoP's HAProxy status, live figures
per backend, and which layers are connected.

Measurements, read from Redis (the agents' reports write them, steering.services.agents and
steering.services.agent_reports); nothing here touches the relational DB beyond naming PoPs and
the backends of a PoP. Redis away reads as "nothing reported", never as an error.
"""

from __future__ import annotations

import json
import time
from typing import Any, cast

from steering.dataplane.stats import read_backend_stats
from steering.gslb.counters import is_connected
from steering.models import Backend, PoP
from steering.readmodels.announcements import connection_summary
from steering.redis_keys import AGENTS_SEEN, HAPROXY_STATUS
from steering.redisconn import sync_client

FRESH_SECONDS = 5.0


def read_seen() -> dict[str, float]:
    """Last contact per "<layer>:<scope>:<instance>", from Redis (empty when Redis is away)."""
    try:
        raw = cast(dict[bytes, bytes], sync_client().hgetall(AGENTS_SEEN))  # bytes: not decoded
    except Exception:
        return {}
    seen: dict[str, float] = {}
    for key, value in raw.items():
        try:
            seen[key.decode()] = float(json.loads(value)["at"])
        except (ValueError, KeyError, TypeError):
            continue
    return seen


def read_haproxy_status() -> dict[str, dict[str, Any]]:
    """What each PoP's HAProxy agent last said, by PoP slug (absent: never reported, or expired)."""
    out: dict[str, dict[str, Any]] = {}
    try:
        redis = sync_client()
        keys = list(redis.scan_iter(match=HAPROXY_STATUS.format(pop="*"), count=500))
        values = redis.mget(keys) if keys else []
    except Exception:
        return out
    for raw in values:
        if raw:
            try:
                body = json.loads(raw)
                out[body["pop"]] = body
            except (ValueError, KeyError, TypeError):
                continue
    return out


def _fresh(at: Any, now: float) -> bool:
    try:
        return now - float(at) <= FRESH_SECONDS
    except (TypeError, ValueError):
        return False


def backend_figures(pop: PoP | None = None) -> dict[str, Any]:
    """GET /api/v1/stats/backends/: is a HAProxy agent reporting (of `pop`, or of any PoP), and
    the fresh live figures of every backend (of `pop`) that has them, by backend id."""
    backends = Backend.objects.all()
    if pop is not None:
        backends = backends.filter(pool__pop=pop)
    stats = read_backend_stats(backends.values_list("pk", flat=True))
    now = time.time()
    reports = read_haproxy_status()
    connected = any(r.get("connected") and _fresh(r.get("at"), now)
                    for slug, r in reports.items() if pop is None or slug == pop.slug)
    return {
        "connected": connected,
        "backends": {str(bid): {"sessions": s.sessions, "session_rate": round(s.session_rate, 2),
                                "completion_rate": round(s.completion_rate, 2), "rate_5xx": round(s.rate_5xx, 2),
                                "flag_5xx": s.flag_5xx, "updated_at": s.updated_at}
                     for bid, s in stats.items()},
    }


def layer_connections() -> dict[str, dict[str, Any]]:
    """Which data planes answer, in words an operator can act on: {local, dns, anycast}."""
    now = time.time()
    pops = list(PoP.objects.values_list("slug", flat=True))
    reports = read_haproxy_status()
    up = sorted(s for s, r in reports.items() if r.get("connected") and _fresh(r.get("at"), now))
    local = {"connected": bool(up), "pops": up,
             "detail": (f"HAProxy answering in {len(up)} of {len(pops)} PoPs" if up else
                        "no HAProxy agent reporting: the local layer is not connected (run steering-agent haproxy at each PoP)")}
    dns_up = is_connected(sync_client(), now)
    dns = {"connected": dns_up,
           "detail": "the PowerDNS remote backend is answering" if dns_up else
                     "no GSLB server reporting: the DNS layer is not connected (run steering-agent gslb)"}
    anycast = connection_summary(now)
    if not anycast["connected"]:
        anycast["detail"] += ": the anycast layer is not connected"
    return {"local": local, "dns": dns, "anycast": anycast}
