"""LOG_FORMAT=json: the real web process (uvicorn, as `make run` starts it) writes one JSON object a
line, and the line of a request carries the request id the audit wrote for that action; the Celery
worker and beat (as `make run` and docker-compose start them) write nothing else either, from
their start to their shutdown."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from steering.logs import JsonFormatter
from steering.middleware import RequestIdLogFilter
from steering.models import Change
from tests import factories as f
from tests.conftest import token_client
from tests.processes import ROOT, CeleryProcess, WebProcess, subprocess_env


class JsonLogServer(WebProcess):
    """The web process (tests.processes.WebProcess) logging JSON at INFO."""

    def __init__(self, var_dir: Path) -> None:
        super().__init__(var_dir, STEERING_VAR_DIR=str(var_dir), LOG_FORMAT="json", LOG_LEVEL="INFO")


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_drain_logged_as_json_carries_the_request_id_of_its_change(tmp_path: Path, operator: Any) -> None:
    backend = f.fleet(4).backends.first()
    assert backend is not None
    raw = token_client(operator).raw_token  # type: ignore[attr-defined]
    server = JsonLogServer(var_dir=tmp_path)
    server.start()
    try:
        request = urllib.request.Request(
            f"{server.url}/api/v1/backends/{backend.pk}/drain/", method="POST",
            data=json.dumps({"reason": "deploy 1.4.2", "grace_seconds": 0}).encode(),
            headers={"Authorization": f"Bearer {raw}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 (our loopback server)
            assert response.status == 202
            header_id = response.headers["X-Request-ID"]
    finally:
        server.stop()
    change = Change.objects.get(action="backend.drain", object_id=backend.pk)
    log = server.log_path.read_text()
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    ours = [r for r in records if r["logger"] == "steering.request" and r.get("route") == "/api/v1/backends/<pk>/drain/"]
    assert len(ours) == 1, log[-3000:]
    line = ours[0]
    assert line["request_id"] == change.request_id == header_id
    assert line["level"] == "INFO" and line["method"] == "POST" and line["status"] == 202
    assert line["message"] == f"POST /api/v1/backends/{backend.pk}/drain/ 202 ({line['duration_ms']:.0f} ms)"
    assert line["user"] == operator.username
    assert line["time"].endswith("+00:00") and "T" in line["time"]
    # Every line the process wrote is JSON, uvicorn's own too (the "=== start" marks are the harness's).
    assert any(r["logger"] == "uvicorn.error" for r in records)
    for text in log.splitlines():
        if text.strip() and not text.startswith("=== start"):
            assert text.startswith("{"), text


def json_lines(log: str) -> list[dict[str, Any]]:
    """Every line parsed as JSON (a line that is not fails the test, naming it)."""
    records = []
    for text in log.splitlines():
        if text.strip():
            try:
                records.append(json.loads(text))
            except ValueError:
                pytest.fail(f"not a JSON line: {text!r}\n--- the log:\n{log[-3000:]}", pytrace=False)
    return records


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_the_celery_worker_and_beat_log_only_json_from_start_to_shutdown(tmp_path: Path) -> None:
    """No text banner, no plain warning (the worker runs as root in CI), no plain shutdown line."""
    env = {"LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}
    worker = CeleryProcess("worker", tmp_path, "--concurrency", "1", "--hostname", "json@%h", env=env)
    beat = CeleryProcess("beat", tmp_path, env=env)
    try:
        deadline = time.monotonic() + 90
        while not ("ready." in worker.log() and "beat: Starting..." in beat.log()):
            assert time.monotonic() < deadline, f"no start within 90 s:\n{worker.log()[-2000:]}\n{beat.log()[-2000:]}"
            assert worker.proc.poll() is None and beat.proc.poll() is None, worker.log()[-2000:] + beat.log()[-2000:]
            time.sleep(0.2)
    finally:
        worker.stop()  # SIGTERM: a warm shutdown, which Celery announces outside logging
        beat.stop()
    started = [r for r in json_lines(worker.log()) if r["logger"] == "celery.apps.worker"]
    assert any(r["message"].endswith("ready.") and r["level"] == "INFO" for r in started), started
    assert {"time", "level", "logger", "message", "request_id"} <= set(started[0])
    said = [r["message"] for r in json_lines(worker.log()) if r["logger"] == "celery.worker"]
    assert said == ["worker: Warm shutdown (MainProcess)"]
    assert any(r["logger"] == "celery.beat" and r["message"] == "beat: Starting..." for r in json_lines(beat.log()))


def test_plain_logs_leave_celery_as_it_is(settings: Any) -> None:
    """Under the default (plain) the JSON hooks stay out: Celery's banner and its own logging."""
    from celery.signals import setup_logging

    import config.celery

    settings.LOG_FORMAT = "plain"
    worker = SimpleNamespace(quiet=False)
    config.celery._worker_json_logs(worker)
    assert worker.quiet is False and not setup_logging.receivers
    assert config.celery.app.Beat(quiet=False).quiet is False


def test_the_formatter_names_the_fields_and_keeps_extras_and_exceptions() -> None:
    record = logging.LogRecord("steering.x", logging.ERROR, __file__, 1, "failed %s", ("twice",), None)
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    record.pool = 7
    RequestIdLogFilter().filter(record)
    line = json.loads(JsonFormatter().format(record))
    assert {k: line[k] for k in ("level", "logger", "message", "request_id", "pool")} == {
        "level": "ERROR", "logger": "steering.x", "message": "failed twice", "request_id": "-", "pool": 7}
    assert "ValueError: boom" in line["exc_info"]


def test_a_bad_log_format_stops_the_start() -> None:
    done = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=subprocess_env(LOG_FORMAT="xml"))
    assert done.returncode != 0 and "LOG_FORMAT='xml': use plain or json" in done.stderr
