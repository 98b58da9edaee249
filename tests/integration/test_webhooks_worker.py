"""Webhooks end to end, as `make run` runs them: the web process (uvicorn) records the deliveries
with the action that caused them and enqueues them after commit; a real Celery worker sends them to
a real receiver on 127.0.0.1, signed with the secret the API showed once."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from steering.services.context import Actor
from steering.services.tokens import do_create_token
from tests import factories as f
from tests.conftest import make_user
from tests.processes import CeleryProcess, WebProcess
from tests.webhook_receiver import Receiver, receiver, verify

pytestmark = pytest.mark.integration


def call(web: WebProcess, token: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    request = urllib.request.Request(f"{web.url}{path}", method=method, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310  (our own server on loopback)
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def wait_for(hook: Receiver, event_type: str, worker: CeleryProcess, seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while not hook.of_type(event_type):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {event_type} reached the receiver in {seconds:.0f} s:\n{worker.log()[-3000:]}")
        time.sleep(0.1)
    return hook.of_type(event_type)[0]


def test_a_drain_reaches_the_receiver_through_the_worker_signed_with_the_secret_shown_once(
        web: WebProcess, tmp_path: Path) -> None:
    admin, operator = make_user("ada-hooks", "admin"), make_user("otto-hooks", "operator")
    _t, admin_token = do_create_token(admin, name="hooks", role="admin", actor=Actor.system("test"))
    _t, operator_token = do_create_token(operator, name="deploy", role="operator", actor=Actor.system("test"))
    backend = f.fleet(backends=4).backends.first()
    assert backend is not None
    worker = CeleryProcess("worker", tmp_path, "--concurrency", "1", "--hostname", "webhooks@%h")
    try:
        deadline = time.monotonic() + 90
        while " ready." not in worker.log():
            assert worker.proc.poll() is None and time.monotonic() < deadline, worker.log()[-3000:]
            time.sleep(0.2)
        with receiver() as hook:
            status, created = call(web, admin_token, "POST", "/api/v1/webhooks/",
                                   {"name": "oncall", "url": hook.url, "events": ["operation.started", "operation.finished",
                                                                                 "webhook.test"]})
            assert status == 201, created
            secret = created["secret"]
            assert secret.startswith("whsec_")
            status, shown = call(web, admin_token, "GET", f"/api/v1/webhooks/{created['id']}/")
            assert status == 200 and "secret" not in shown

            status, drained = call(web, operator_token, "POST", f"/api/v1/backends/{backend.pk}/drain/",
                                   {"reason": "deploy 1.4.2", "grace_seconds": 0})
            assert status == 202, drained
            started = wait_for(hook, "operation.started", worker)
            finished = wait_for(hook, "operation.finished", worker)
            status, _ = call(web, admin_token, "POST", f"/api/v1/webhooks/{created['id']}/test/", {})
            assert status == 202
            ping = wait_for(hook, "webhook.test", worker)

            for got in (started, finished, ping):
                assert verify(secret, got.headers, got.body)
            assert started.json["data"]["operation"]["id"] == drained["operation"]["id"]
            assert started.json["data"]["operation"]["actor"] == operator.username
            status, log = call(web, operator_token, "GET", f"/api/v1/webhooks/{created['id']}/deliveries/")
            assert status == 200
            assert sorted(d["status"] for d in log["results"]) == ["succeeded"] * 3
    finally:
        worker.stop()
