"""The Celery app. Tasks are thin entry points in steering.tasks."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import beat_init, worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("steering")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["steering"])  # imports steering.tasks once Django is ready


def _refuse_unsafe_start(process: str) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from steering.startup import refuse_unsafe_start

    try:
        refuse_unsafe_start(process)
    except ImproperlyConfigured as exc:
        # Celery logs and carries on past an Exception in a signal handler; SystemExit stops it.
        raise SystemExit(str(exc)) from exc


@worker_init.connect
def _worker_checks(**_: Any) -> None:
    _refuse_unsafe_start("worker")


@beat_init.connect
def _beat_checks(**_: Any) -> None:
    _refuse_unsafe_start("beat")
