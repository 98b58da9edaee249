"""`GET /api/v1/operations/<id>/?wait=N` on the real ASGI server: answered when the operation ends,
with Django's own answer (auth, 404, 400), and waiting holds no thread and no database connection,
so a drain posted while many wait is answered before any of them."""

from __future__ import annotations

import concurrent.futures
import datetime
import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from steering.choices import OPERATION_FINAL_STATES
from steering.models import Operation
from steering.services.actions import do_drain
from steering.services.context import Actor
from steering.services.operations import sweep_due
from steering.services.tokens import do_create_token
from tests import factories as f
from tests.conftest import make_user
from tests.processes import WebProcess
from tests.support import db_connections, threads_of, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
OPERATOR = Actor(name="otto", source="api")


@pytest.fixture
def token(transactional_db: Any) -> str:
    user = make_user("olga-operator", "operator")
    return do_create_token(user, name="ops", role="operator", actor=Actor.system("test"))[1]


def call(url: str, token: str, *, body: dict[str, Any] | None = None, timeout: float = 60) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Authorization": f"Bearer {token}",
                                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:  # noqa: S310 (loopback)
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def end_due_drains() -> None:
    sweep_due(timezone.now() + datetime.timedelta(hours=1))


def test_a_waiter_hears_the_end_with_djangos_own_answer(web: WebProcess, token: str) -> None:
    pool = f.fleet(3, capacity_rps=1000, expected_rps=100)
    op, _ = do_drain(pool.backends.first(), actor=OPERATOR, reason="deploy", grace_seconds=600)
    assert op is not None
    url = f"{web.url}/api/v1/operations/{op.pk}/"
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        waiting = executor.submit(call, f"{url}?wait=30", token)
        assert not concurrent.futures.wait([waiting], timeout=1.0).done  # still running: it waits
        end_due_drains()
        status, body = waiting.result(timeout=30)
    assert status == 200 and body["status"] in OPERATION_FINAL_STATES and body["id"] == op.pk
    # Ended already: answered at once. What Django refuses is refused the same way.
    assert call(f"{url}?wait=30", token, timeout=10)[1]["status"] == body["status"]
    assert call(f"{url}?wait=soon", token)[0] == 400
    assert call(f"{url}?wait=9999", token)[0] == 400
    assert call(f"{web.url}/api/v1/operations/987654/?wait=5", token)[0] == 404
    assert call(f"{url}?wait=5", "not-a-token")[0] == 401


def test_a_waiter_that_runs_out_gets_the_running_operation(web: WebProcess, token: str) -> None:
    pool = f.fleet(2, capacity_rps=1000, expected_rps=100)
    op, _ = do_drain(pool.backends.first(), actor=OPERATOR, reason="deploy", grace_seconds=600)
    assert op is not None
    status, body = call(f"{web.url}/api/v1/operations/{op.pk}/?wait=1", token)
    assert status == 200 and body["status"] == "running"


def test_three_hundred_waiters_hold_no_thread_or_connection_and_a_drain_is_answered_first(
        web: WebProcess, token: str) -> None:
    pool = f.fleet(4, capacity_rps=1000, expected_rps=100)
    first, second = list(pool.backends.order_by("pk"))[:2]
    op, _ = do_drain(first, actor=OPERATOR, reason="long one", grace_seconds=600)
    assert op is not None
    url = f"{web.url}/api/v1/operations/{op.pk}/?wait=40"
    call(f"{web.url}/api/v1/operations/{op.pk}/?wait=0", token)  # warm: the executor exists
    assert web.proc is not None
    threads_before = threads_of(web.proc.pid)
    conns_before = db_connections() if connection.vendor == "postgresql" else None
    with concurrent.futures.ThreadPoolExecutor(300) as executor:
        waiting = [executor.submit(call, url, token) for _ in range(300)]
        # Each waiter is answered once by Django (a thread and a connection, briefly), then parked:
        # the process comes back to its threads and connections of before while all 300 still wait.
        wait_for(lambda: threads_of(web.proc.pid) - threads_before < 10, "the waiters to be parked, threadless",
                 timeout=30)
        if conns_before is not None:
            # Connections come from the process's pool and go back to it after each answer: the
            # count is bounded by the pool however many wait (one per waiter would exhaust PostgreSQL).
            pool_max = settings.DATABASES["default"]["OPTIONS"]["pool"]["max_size"]
            assert db_connections() - conns_before <= pool_max
        status, answer = call(f"{web.url}/api/v1/backends/{second.pk}/drain/", token,
                              body={"reason": "while many wait", "grace_seconds": 30})
        # The drain was answered while all 300 still wait.
        assert status == 202, answer
        assert not any(w.done() for w in waiting)
        end_due_drains()
        finals = [w.result(timeout=60) for w in waiting]
    assert {(s, b["status"]) for s, b in finals} == {(200, Operation.objects.get(pk=op.pk).status)}
    assert Operation.objects.get(pk=op.pk).status in OPERATION_FINAL_STATES
