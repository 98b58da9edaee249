"""Redis goes away and comes back, with the real web process, worker and beat on it.

While it is away: API writes still commit and are audited, `/readyz` says `degraded` (200), and
nothing answers 5xx. When it is back (a fresh, empty redis-server on the same address, as after a
crash with no persistence): the timers resume (drains due meanwhile complete), `/readyz` says
`ready`, and a live browser that stayed connected is brought up to date. The figures (time from
Redis back to each recovery) are printed; nothing asserts on them.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from config.embedded import PrivateRedis
from steering.models import Backend, Change
from steering.readmodels.version import current_version
from steering.services.context import Actor
from steering.services.tokens import do_create_token
from tests import factories as f
from tests.api.live_support import session_cookie
from tests.conftest import make_user
from tests.processes import CeleryProcess, WebProcess
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def call(url: str, token: str | None = None, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as r:  # noqa: S310 (loopback)
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


class Browser:
    """The dashboard's live feed as the browser keeps it: reconnect on close, keep the newest version."""

    def __init__(self, web: WebProcess, cookie: str) -> None:
        self.url, self.origin, self.cookie = f"ws://127.0.0.1:{web.port}/ws/live/", web.url, cookie
        self.ws: Any = None
        self.version = 0
        wait_for(lambda: self.poll() > 0, "the live feed's hello", timeout=30, interval=0)

    def poll(self) -> int:
        """Read what is there for up to a second (connecting first if needed); the newest version."""
        try:
            if self.ws is None:
                opened = connect(self.url, origin=self.origin, additional_headers={"Cookie": self.cookie},
                                 open_timeout=5)
                self.ws = opened.__enter__()  # the connection, kept open across calls
            message = json.loads(self.ws.recv(timeout=1))
            self.version = max(self.version, int(message.get("version", 0)))
        except TimeoutError:
            pass
        except (ConnectionClosed, OSError, InvalidStatus):
            self.ws = None
            time.sleep(0.5)  # the dashboard's backoff is longer; the test need not wait as long
        return self.version

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    redis = PrivateRedis().start()
    env = {"REDIS_URL": redis.url}
    web = WebProcess(tmp_path, **env).start()
    worker = CeleryProcess("worker", tmp_path, "--concurrency", "1", env=env)
    beat = CeleryProcess("beat", tmp_path, env=env)
    state: dict[str, Any] = {"redis": redis, "web": web, "worker": worker, "beat": beat}
    try:
        yield state
    finally:
        beat.stop()
        worker.stop()
        web.stop()
        state["redis"].stop()


def test_writes_go_on_while_redis_is_away_and_everything_resumes_when_it_is_back(stack: dict[str, Any]) -> None:
    pool = f.fleet(4, capacity_rps=1000, expected_rps=100)
    first, second, third = list(pool.backends.order_by("pk"))[:3]
    token = do_create_token(make_user("olga-operator", "operator"), name="ops", role="operator",
                            actor=Actor.system("test"))[1]
    web = stack["web"]
    api = f"{web.url}/api/v1/backends"
    status, _ = call(f"{api}/{first.pk}/drain/", token, {"reason": "before", "grace_seconds": 2})
    assert status == 202
    wait_for(lambda: Backend.objects.get(pk=first.pk).admin_state == "drained", "the worker's timers", timeout=60)

    # A browser with the map open through it all: it reconnects whenever its socket closes, as the
    # dashboard does, and takes the version of each hello.
    browser = Browser(web, session_cookie(make_user("vic-viewer", "viewer")).decode())
    hello_version = browser.version

    redis: PrivateRedis = stack["redis"]
    redis.process.kill()  # SIGKILL: no goodbye to its clients
    redis.process.wait(10)
    answers: list[int] = []
    for backend in (second, third):
        status, body = call(f"{api}/{backend.pk}/drain/", token, {"reason": "during the outage", "grace_seconds": 2})
        answers.append(status)
        assert status == 202, body
    assert Change.objects.filter(action="backend.drain", reason="during the outage").count() == 2
    status, ready = call(f"{web.url}/readyz")
    assert (status, ready["status"]) == (200, "degraded") and ready["checks"]["database"] == "ok"
    status, topology = call(f"{web.url}/api/v1/topology/", token)
    answers.append(status)
    assert all(code < 500 for code in answers), answers
    version_during = current_version()

    redis.stop()
    back = PrivateRedis(port=redis.port, password=redis.password).start()
    stack["redis"] = back
    t_back = time.monotonic()
    wait_for(lambda: call(f"{web.url}/readyz")[1]["status"] == "ready", "/readyz to say ready", timeout=60)
    ready_after = time.monotonic() - t_back
    wait_for(lambda: all(b.admin_state == "drained" for b in Backend.objects.filter(pk__in=[second.pk, third.pk])),
             "the drains due meanwhile to complete once Redis is back", timeout=90)
    timers_after = time.monotonic() - t_back
    drained = Change.objects.filter(action="backend.drained", object_id__in=[second.pk, third.pk])
    assert drained.count() == 2  # each exactly once
    assert current_version() > version_during
    # The browser hears of every version up to the last: by deltas, or by a hello with the
    # current version (then it refetches), whatever the outage cost the channel layer.
    wait_for(lambda: browser.poll() >= current_version(), "the live browser to catch up", timeout=60, interval=0)
    assert browser.version > hello_version
    live_after = time.monotonic() - t_back
    browser.close()
    print(f"\nredis back -> /readyz ready {ready_after:.2f} s; -> both drains due meanwhile completed "
          f"{timers_after:.2f} s (grace 2 s elapsed during the outage); live browser up to date {live_after:.2f} s")
