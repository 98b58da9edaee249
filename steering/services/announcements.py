"""Anycast announcements, write side: what each PoP's agent says ExaBGP announces.

A measurement: it goes to Redis (never to the relational DB), key steering.redis_keys.ANYCAST_AGENT.
When a PoP's observed set changes, the dashboard gets a push on the channel-layer group "live"
after commit. The read side (desired, observed, the overview) is steering.readmodels.announcements.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from django.db import transaction

from steering.dataplane.exabgp.desired import sort_prefixes
from steering.models import PoP
from steering.readmodels.announcements import desired_for, read_reports
from steering.redis_keys import ANYCAST_AGENT
from steering.redisconn import sync_client
from steering.services.effects import publish_observed

AGENT_KEY_TTL = 7 * 86400            # long enough that a dead agent shows as stale, not absent


def record_agent_report(pop: PoP, observed: Iterable[str], *, session: str | None = None,
                        now: float | None = None) -> dict[str, Any]:
    """Store what the PoP's agent says ExaBGP announces; push it live when it changed.

    A measurement, so no Change row; Redis errors propagate (the report view drops the measurement
    and says so in `skipped`; the agent reports again a second later).
    """
    at = now if now is not None else time.time()
    observed_list = list(sort_prefixes(observed))
    key = ANYCAST_AGENT.format(slug=pop.slug)
    r = sync_client()
    previous = read_reports([pop.slug]).get(pop.slug)
    report = {"observed": observed_list, "at": at, "session": session}
    r.set(key, json.dumps(report), ex=AGENT_KEY_TTL)
    if previous is None or previous.get("observed") != observed_list or previous.get("session") != session:
        decision = desired_for([pop])[pop.pk][1]
        message = {"type": "observed", "layer": "anycast", "pop": pop.pk, "desired": list(decision.desired),
                   "observed": observed_list, "at": at}
        transaction.on_commit(lambda: publish_observed(message))
    return report
