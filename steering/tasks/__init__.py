"""Thin Celery entry points: explicit names, ids not instances, no results, time limits."""

from steering.tasks.notifications import notify_drift, notify_watch, webhook_deliver, webhook_purge, webhook_sweep
from steering.tasks.outliers import outlier_tick
from steering.tasks.probes import probe_shard, probe_sweep_stale, probe_tick
from steering.tasks.sweeper import purge_idempotency_records, sweep_due

__all__ = ["notify_drift", "notify_watch", "outlier_tick", "probe_shard", "probe_sweep_stale", "probe_tick",
           "purge_idempotency_records", "sweep_due", "webhook_deliver", "webhook_purge", "webhook_sweep"]
