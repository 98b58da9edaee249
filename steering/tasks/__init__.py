"""Thin Celery entry points: explicit names, ids not instances, no results, time limits."""

from steering.tasks.outliers import outlier_tick
from steering.tasks.probes import probe_shard, probe_sweep_stale, probe_tick
from steering.tasks.sweeper import purge_idempotency_records, sweep_due

__all__ = ["outlier_tick", "probe_shard", "probe_sweep_stale", "probe_tick", "purge_idempotency_records", "sweep_due"]
