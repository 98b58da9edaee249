from __future__ import annotations

import datetime
import time

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from steering.services import operations

SWEEP_HEARTBEAT_KEY = "steering:sweeper:last"


@shared_task(name="steering.sweep_due", ignore_result=True, time_limit=30, soft_time_limit=25)
def sweep_due() -> dict[str, int]:
    """Every second: complete drains whose deadline passed (compare-and-set, safe in parallel)."""
    result = operations.sweep_due()
    # Heartbeat: proves beat ticks AND a worker runs them (see `manage.py check_sweeper`).
    from steering.services.effects import _redis

    _redis().set(SWEEP_HEARTBEAT_KEY, time.time(), ex=3600)
    return result


@shared_task(name="steering.purge_idempotency_records", ignore_result=True, time_limit=300)
def purge_idempotency_records() -> int:
    from steering.models import IdempotencyRecord

    cutoff = timezone.now() - datetime.timedelta(seconds=settings.STEERING_IDEMPOTENCY_TTL_SECONDS)
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted
