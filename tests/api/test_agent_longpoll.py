"""The desired-state long-poll on the real ASGI server: answered as soon as the version moves,
"unchanged" (304 + the version) for agents of PoPs the change does not touch, and waiting costs
neither a thread nor a database connection."""

from __future__ import annotations

import concurrent.futures
import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from django.db import connection

from steering.choices import Role
from steering.readmodels.version import current_version
from steering.services.actions import do_drain
from steering.services.context import Actor
from steering.services.tokens import do_create_token
from tests import factories as f
from tests.conftest import make_user
from tests.processes import WebProcess
from tests.support import db_connections, threads_of

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
OPERATOR = Actor(name="otto", source="api")


def get(url: str, token: str, etag: str | None = None, timeout: float = 30) -> tuple[int, dict[str, str], Any]:
    headers = {"Authorization": f"Bearer {token}", **({"If-None-Match": etag} if etag else {})}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:  # noqa: S310 (loopback)
            return r.status, {k.lower(): v for k, v in r.headers.items()}, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, None


def agent_token(pop: Any) -> str:
    owner = make_user(f"owner-{pop.slug}", "admin")
    return do_create_token(owner, name="agent", role=Role.AGENT, pop=pop, actor=Actor.system("test"))[1]


def test_waiting_agents_hear_of_a_change_at_once_and_others_are_told_nothing_changed(web: WebProcess) -> None:
    a, b = f.fleet(3, capacity_rps=1000, expected_rps=1000), f.fleet(3, capacity_rps=1000, expected_rps=1000)
    token_a, token_b = agent_token(a.pop), agent_token(b.pop)
    url = f"{web.url}/api/v1/agent/desired/?layer=local"
    status, headers, first_a = get(url, token_a)
    assert status == 200 and headers["x-steering-version"] == str(first_a["version"])
    _, _, first_b = get(url, token_b)
    v = current_version()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        wait_a = pool.submit(get, f"{url}&after={v}&wait=20", token_a, first_a["etag"])
        wait_b = pool.submit(get, f"{url}&after={v}&wait=20", token_b, first_b["etag"])
        nothing_yet = concurrent.futures.wait([wait_a, wait_b], timeout=1.0)
        assert not nothing_yet.done  # both wait: nothing moved
        do_drain(a.backends.first(), actor=OPERATOR, reason="deploy", grace_seconds=30)
        status_a, _, doc_a = wait_a.result(timeout=15)
        status_b, headers_b, _ = wait_b.result(timeout=15)
    assert status_a == 200 and doc_a["version"] == current_version() and doc_a["etag"] != first_a["etag"]
    states = {s["name"]: s["state"] for p in doc_a["spec"]["pools"] for s in p["servers"]}
    assert "drain" in states.values()
    # PoP b's spec did not change: it is told so, with the version to acknowledge.
    assert status_b == 304 and int(headers_b["x-steering-version"]) == current_version()


def test_an_agent_waits_out_its_wait_and_hears_304_with_its_own_version(web: WebProcess) -> None:
    pool = f.fleet(2)
    token = agent_token(pool.pop)
    v = current_version()
    status, headers, _ = get(f"{web.url}/api/v1/agent/desired/?layer=local&after={v}&wait=1", token)
    assert status == 304 and headers["x-steering-version"] == str(v)
    bad = get(f"{web.url}/api/v1/agent/desired/?layer=local&after=x", token)
    assert bad[0] == 400
    other = f.pop()
    assert get(f"{web.url}/api/v1/agent/desired/?layer=local&pop={other.slug}", token)[0] == 403
    assert get(f"{web.url}/api/v1/agent/desired/?layer=local", "nope")[0] == 401


def test_a_hundred_waiting_agents_hold_no_thread_and_no_database_connection(web: WebProcess) -> None:
    pool = f.fleet(3, capacity_rps=1000, expected_rps=1000)
    token = agent_token(pool.pop)
    v = current_version()
    url = f"{web.url}/api/v1/agent/desired/?layer=local&after={v}&wait=8"
    get(f"{web.url}/api/v1/agent/desired/?layer=local", token)  # warm: the watcher and the executor exist
    assert web.proc is not None
    threads_before = threads_of(web.proc.pid)
    conns_before = db_connections() if connection.vendor == "postgresql" else None
    with concurrent.futures.ThreadPoolExecutor(100) as executor:
        waiting = [executor.submit(get, url, token) for _ in range(100)]
        import time

        time.sleep(3)  # every waiter is in (authenticated, then parked on the version event)
        threads_during = threads_of(web.proc.pid)
        conns_during = db_connections() if conns_before is not None else None
        do_drain(pool.backends.first(), actor=OPERATOR, reason="wake them", grace_seconds=30)
        answers = [w.result(timeout=30)[0] for w in waiting]
    assert answers == [200] * 100
    # Waiting added no thread per waiter (the executor's few threads at most) and no connection.
    assert threads_during - threads_before < 10, (threads_before, threads_during)
    if conns_before is not None:
        assert conns_during is not None and conns_during - conns_before < 5, (conns_before, conns_during)


def test_a_revoked_token_is_refused_on_the_long_poll_within_the_reuse_window(web: WebProcess) -> None:
    from steering.api.longpoll import AUTH_REUSE_SECONDS
    from steering.models import ApiToken
    from steering.services.tokens import do_revoke_token

    pool = f.fleet(2)
    token = agent_token(pool.pop)
    url = f"{web.url}/api/v1/agent/desired/?layer=local"
    assert get(url, token)[0] == 200
    row = ApiToken.objects.get(pop=pool.pop)
    do_revoke_token(row, actor=Actor.system("test"), reason="host decommissioned")
    import time

    time.sleep(AUTH_REUSE_SECONDS + 0.2)
    assert get(url, token)[0] == 401


def test_a_reused_token_check_is_for_the_same_credential_and_scope_only() -> None:
    from steering.api.longpoll import AuthorizationCache

    cache = AuthorizationCache(seconds=2.0)
    mine = AuthorizationCache.key("Bearer a", "local", None, None)
    cache.put(mine, "identity-a", now=100.0)
    assert cache.get(mine, now=101.9) == "identity-a"
    assert cache.get(mine, now=102.0) is None                                           # expired
    assert cache.get(AuthorizationCache.key("Bearer b", "local", None, None), now=100.5) is None   # another token
    assert cache.get(AuthorizationCache.key("Bearer a", "anycast", None, None), now=100.5) is None  # another layer
    assert cache.get(AuthorizationCache.key("Bearer a", "local", "fra1", None), now=100.5) is None  # another PoP
