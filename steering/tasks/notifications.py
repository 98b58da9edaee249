"""Webhooks: send deliveries, sweep the due ones, watch health, data planes and drift
(steering.services.webhooks, steering.services.watchers)."""

from __future__ import annotations

from celery import shared_task

from steering.services import watchers, webhooks


@shared_task(name="steering.webhook_deliver", ignore_result=True, time_limit=60, soft_time_limit=50)
def webhook_deliver(delivery_ids: list[int]) -> dict[str, int]:
    """Enqueued after the commit that recorded these deliveries: their first try, now."""
    counts: dict[str, int] = {}
    for pk in delivery_ids:
        result = webhooks.deliver(int(pk))
        counts[result] = counts.get(result, 0) + 1
    return counts


@shared_task(name="steering.webhook_sweep", ignore_result=True, time_limit=60, soft_time_limit=50)
def webhook_sweep() -> dict[str, int]:
    """Every 2 s: deliveries due (retries after their backoff, first tries whose enqueue was lost)."""
    return webhooks.deliver_due()


@shared_task(name="steering.notify_watch", ignore_result=True, time_limit=60, soft_time_limit=50)
def notify_watch() -> dict[str, int]:
    """Every health window: health transitions grouped per pool; data planes disconnected or lagging."""
    return {"health": watchers.health_changes(), "dataplanes": watchers.dataplane_changes()}


@shared_task(name="steering.notify_drift", ignore_result=True, time_limit=120, soft_time_limit=100)
def notify_drift() -> int:
    return watchers.drift_changes()


@shared_task(name="steering.webhook_purge", ignore_result=True, time_limit=300)
def webhook_purge() -> int:
    return webhooks.purge()
