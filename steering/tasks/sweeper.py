from __future__ import annotations

import datetime
import time

from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings
from django.utils import timezone

from steering.redis_keys import SWEEP_HEARTBEAT
from steering.redisconn import sync_client
from steering.services import operations, windows


@worker_ready.connect
def _sweep_on_start(sender, **kwargs):  # type: ignore[no-untyped-def]
    """A worker coming back (after a crash, a deploy) sweeps at once instead of waiting for the
    next beat tick: timers that fell due while no worker ran are late by as little as possible."""
    sweep_due.apply_async(expires=5)


@shared_task(name="steering.sweep_due", ignore_result=True, time_limit=30, soft_time_limit=25)
def sweep_due() -> dict[str, int]:
    """Every half second: complete drains whose deadline passed, move every running operation on
    through its kind's handler (steering.services.operation_kinds), start and end maintenance
    windows (steering.services.windows). Compare-and-set, safe in parallel."""
    result = operations.sweep_due()
    result.update(windows.sweep())  # maintenance windows due to start or end
    # Heartbeat: proves beat ticks AND a worker runs them (see `manage.py check_sweeper`).
    sync_client().set(SWEEP_HEARTBEAT, time.time(), ex=3600)
    return result


@shared_task(name="steering.purge_idempotency_records", ignore_result=True, time_limit=300)
def purge_idempotency_records() -> int:
    from steering.models import IdempotencyRecord

    cutoff = timezone.now() - datetime.timedelta(seconds=settings.STEERING_IDEMPOTENCY_TTL_SECONDS)
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted
