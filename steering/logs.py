"""Log lines as JSON (LOG_FORMAT=json; config/settings.py LOGGING), one object a line:

    {"time": "2026-05-01T12:03:10.123+00:00", "level": "INFO", "logger": "steering.request",
     "message": "POST /api/v1/backends/3/drain/ 202 (41 ms)", "request_id": "9f0c...", ...}

`request_id` is the one the audit records (steering.middleware sets it per request; "-" outside a
request). Fields a call passes as `extra` (the request log's method, route, status, duration_ms,
user) follow as keys of their own; an exception adds `exc_info` as text.

python-json-logger (BSD-2, no dependencies, typed, maintained) does the JSON: escaping, `extra`
fields and exceptions are its tested code; we only name the fields and write the time in UTC.

Celery's worker and beat (config/celery.py) log through the same configuration under json: no
text banner, and the lines Celery writes outside logging (a shutdown) go through `say_as_json`.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
from typing import IO

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s"
RENAMED = {"asctime": "time", "levelname": "level", "name": "logger"}
# Record attributes that are objects or duplicates, not facts for a log line: Django's
# `request` (the HttpRequest), uvicorn's `color_message` (the message again, with ANSI colours).
NOT_LOGGED = (*RESERVED_ATTRS, "request", "color_message", "taskName")


class JsonFormatter(_JsonFormatter):
    def __init__(self) -> None:
        super().__init__(FIELDS, rename_fields=RENAMED, reserved_attrs=NOT_LOGGED)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 (logging's name)
        return datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC).isoformat(timespec="milliseconds")


def say_as_json(msg: str, f: IO[str] | None = None, logger: str = "celery.worker") -> None:
    """Stands in for celery.apps.worker.safe_say ("worker: Warm shutdown (MainProcess)") under
    LOG_FORMAT=json: the same words as one JSON line. It runs in signal handlers, so like safe_say it
    takes no lock (no logging handler) and writes with one os.write."""
    stream = f if f is not None else sys.__stderr__
    record = logging.LogRecord(logger, logging.INFO, __file__, 0, msg.strip(), None, None)
    record.request_id = "-"
    try:
        os.write(stream.fileno(), (JsonFormatter().format(record) + "\n").encode())  # type: ignore[union-attr]
    except (OSError, AttributeError, ValueError):
        pass  # as safe_say: losing the line must never stop a shutdown
