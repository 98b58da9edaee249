"""Outlier ejection, read side (for /metrics): how many backends are ejected now, and what the
outlier tick (steering.services.outliers) counted."""

from __future__ import annotations

import datetime

from django.utils import timezone

from steering.models import Backend
from steering.redis_keys import METRICS_OUTLIER
from steering.redisconn import sync_client


def ejected_now(now: datetime.datetime | None = None) -> int:
    when = now or timezone.now()
    return Backend.objects.filter(ejected_at__isnull=False, ejected_until__gt=when).count()


def metrics_counters() -> dict[str, float]:
    """What the tick counted (for /metrics): eject:<rule>, end:<how>, panic, held_now."""
    try:
        raw = sync_client().hgetall(METRICS_OUTLIER)
    except Exception:
        return {}
    return {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}
