"""Outlier ejection, every second: live traffic's verdicts, bounded and audited (steering.services.outliers)."""

from __future__ import annotations

from celery import shared_task

from steering.services import outliers


@shared_task(name="steering.outlier_tick", ignore_result=True, time_limit=30, soft_time_limit=25)
def outlier_tick() -> dict[str, int]:
    """Read the data plane's figures, eject within the bounds, end ejections that are due."""
    return outliers.tick()
