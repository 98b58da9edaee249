"""Passive health: a backend whose share of 5xx answers spikes is flagged.

Active probes ask "does /healthz answer?"; real traffic can disagree (a backend passing its
check while failing half its requests). The flag is evidence shown beside the backend and
pushed live, not a health transition: one verdict (the prober's) steers traffic, and operators
decide what a 5xx spike means (DESIGN §1: healthy for new traffic and alive are different things).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from steering.dataplane.stats import KEY

logger = logging.getLogger(__name__)


class HasRates(Protocol):
    @property
    def session_rate(self) -> float: ...
    @property
    def rate_5xx(self) -> float: ...


@dataclass(frozen=True)
class FiveXXRule:
    min_rate: float = 1.0     # 5xx/s below this is noise, whatever the share
    min_share: float = 0.25   # 5xx per new session

    def spiking(self, f: HasRates) -> bool:
        if f.rate_5xx < self.min_rate:
            return False
        return f.rate_5xx >= self.min_share * max(f.session_rate, f.rate_5xx, 1e-9)


def set_flags(figures: Mapping[int, HasRates], rule: FiveXXRule, *, redis: Any) -> list[int]:
    """Store each backend's flag beside its figures; push the ones that changed. Returns those ids."""
    ids = list(figures)
    if not ids:
        return []
    pipe = redis.pipeline(transaction=False)
    for backend_id in ids:
        pipe.hget(KEY.format(id=backend_id), "flag_5xx")
    previous = pipe.execute()
    changed: list[int] = []
    pipe = redis.pipeline(transaction=False)
    for backend_id, before in zip(ids, previous, strict=True):
        now_flagged = rule.spiking(figures[backend_id])
        if (before == b"1") != now_flagged:
            changed.append(backend_id)
            pipe.hset(KEY.format(id=backend_id), "flag_5xx", "1" if now_flagged else "0")
    pipe.execute()
    from steering.services.effects import publish_observed

    for backend_id in changed:
        f = figures[backend_id]
        flagged = rule.spiking(f)
        if flagged:
            logger.warning("backend %s: 5xx spike (%.1f/s of %.1f sessions/s)", backend_id, f.rate_5xx, f.session_rate)
        publish_observed({"type": "observed", "layer": "local", "backend": backend_id, "flag_5xx": flagged,
                          "rate_5xx": round(f.rate_5xx, 2), "session_rate": round(f.session_rate, 2),
                          "at": time.time()})
    return changed
