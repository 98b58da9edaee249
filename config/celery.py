"""The Celery app. Tasks are thin entry points in steering.tasks.

Under LOG_FORMAT=json (config/settings.py LOGGING) the worker and beat write JSON lines only,
however they are started (runstack, docker-compose, by hand): no text banner (as --quiet), Celery
leaves logging to Django's configuration (a setup_logging receiver; --loglevel still applies), a
Python warning (running as root) is logged, and the shutdown line is JSON too (steering.logs).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery
from celery.apps import worker as worker_app
from celery.apps.beat import Beat as CeleryBeat
from celery.signals import beat_init, celeryd_init, setup_logging, worker_init

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


def _json_logs() -> bool:
    from django.conf import settings

    return bool(settings.LOG_FORMAT == "json")


def _our_logging(loglevel: int | str | None = None, **_: Any) -> None:
    """Connected only under json: with a receiver here, Celery configures no logging of its own."""
    from django.conf import settings
    from django.utils.log import configure_logging

    configure_logging(settings.LOGGING_CONFIG, settings.LOGGING)
    if loglevel:
        logging.getLogger().setLevel(loglevel)


def _json_only() -> None:
    from steering.logs import say_as_json

    _our_logging()  # already now: a warning at start (check_privileges) is logged as JSON
    logging.captureWarnings(True)
    setup_logging.connect(_our_logging, weak=False, dispatch_uid="steering-json-logs")
    worker_app.safe_say = say_as_json  # type: ignore[assignment]  # the shutdown lines it prints


@celeryd_init.connect
def _worker_json_logs(instance: Any, **_: Any) -> None:
    if _json_logs():
        instance.quiet = True  # no text banner
        _json_only()


class Beat(CeleryBeat):
    """`celery beat` (Celery builds it from app.Beat): under json, no text banner."""

    def __init__(self, *args: Any, quiet: bool = False, **kwargs: Any) -> None:
        json_logs = _json_logs()
        if json_logs:
            _json_only()
        super().__init__(*args, quiet=quiet or json_logs, **kwargs)


app.Beat = app.subclass_with_self(Beat)  # type: ignore[method-assign]
