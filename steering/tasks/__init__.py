"""Thin Celery entry points: explicit names, ids not instances, no results, time limits."""

from steering.tasks.sweeper import purge_idempotency_records, sweep_due

__all__ = ["purge_idempotency_records", "sweep_due"]
