"""Generated requests against the agent contract, with real agent tokens: whatever the input, never a 5xx.

tests/api/test_schemathesis.py fuzzes every operation with an admin token, which the agent
endpoints refuse (only a data plane's agent acknowledges or reports), so there they test the auth
wall only.
Here the three agent operations of the app's own OpenAPI schema get requests made with agent
tokens (steering.api.agent_scope): one bound to a PoP (the local and anycast layers) and one bound
to no PoP (the DNS layer). Each token gets the generated cases as they come (positive and negative)
and positive cases steered into its own scope (its layer, its PoP or none, its PoP's backends as
report keys), so they pass auth and scope and reach validation and storage.

- In-process through the WSGI app: the DRF views (steering.api.views.agent), inside the test's
  transaction, each request in a savepoint as in test_schemathesis.
- Over HTTP against the real ASGI app (tests.processes.WebProcess, uvicorn): there GET
  /api/v1/agent/desired/ is served by steering.api.longpoll (a raw ASGI app), not the DRF view.

`wait` is kept small (a generated wait over 1 s becomes 1 s, except over HTTP one over 60 s, which
the long-poll refuses; values that are not numbers are sent as generated), so a long-poll never
holds a run. Each test prints one line, e.g.
`schemathesis agents (WSGI): 3 operations, 412 requests, 0 5xx` (`-s` shows it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from django.core import signals
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from config.wsgi import application
from steering.api.agent_scope import INSTANCE_RE
from steering.api.longpoll import MAX_WAIT_SECONDS
from steering.choices import DataplaneLayer
from steering.models import PoP
from steering.readmodels.version import current_version
from steering.services.context import Actor
from steering.services.tokens import do_create_token
from tests import factories as f
from tests.conftest import make_user
from tests.processes import WebProcess

AGENT_PATHS = r"^/api/v1/agent/"
SCHEMA = schemathesis.openapi.from_wsgi("/api/schema/", application).include(path_regex=AGENT_PATHS)
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]  # type: ignore[union-attr]
MAX_EXAMPLES = 40
HTTP_MAX_EXAMPLES = 30
# What a generated `If-None-Match` may be on the desired state (the schema does not name the header).
RUNNING_ETAGS = [None, '"0000"', "*", ""]


@dataclass
class Scope:
    """An agent token and what its scope is: the layers it serves, its PoP and that PoP's backends."""

    label: str
    raw: str
    layers: list[str]
    pop: PoP | None
    backend_ids: list[int]


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    per_operation: dict[str, Counter[int]] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)

    def add(self, label: str, status: int, case: Any) -> None:
        self.statuses[status] += 1
        self.per_operation.setdefault(label, Counter())[status] += 1
        if status >= 500:
            self.server_errors.append(f"{status}: {case.as_curl_command()}")

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    def line(self, what: str, operations: int) -> str:
        return f"schemathesis {what}: {operations} operations, {self.requests} requests, {len(self.server_errors)} 5xx"


def agent_scopes() -> list[Scope]:
    """A PoP with a pool of backends and an anycast prefix, a region with a DNS service; an agent
    token for that PoP (local and anycast) and one for the DNS layer (no PoP)."""
    service = f.service(anycast_prefix=f.prefix())
    region = f.region()
    pop = f.pop(region)
    pool = f.pool(pop, service, expected_rps=100)
    for _ in range(3):
        f.backend(pool, capacity_rps=1000)
    f.vip(service, region)
    f.pool(f.pop(f.region()), service, expected_rps=100)  # another PoP: out of scope for the PoP's token
    owner = make_user("ada-agent-owner", "admin")
    system = Actor.system("test")
    _t, pop_raw = do_create_token(owner, name="agent-pop", role="agent", pop=pop, actor=system)
    _t, dns_raw = do_create_token(owner, name="agent-dns", role="agent", pop=None, actor=system)
    backend_ids = list(pool.backends.order_by("pk").values_list("pk", flat=True))
    return [Scope("pop", pop_raw, [DataplaneLayer.LOCAL, DataplaneLayer.ANYCAST], pop, backend_ids),
            Scope("dns", dns_raw, [DataplaneLayer.DNS], None, [])]


def _short_wait(query: dict[str, Any], longest: int | None) -> None:
    """A long-poll's `wait` over 1 s and up to `longest` (None: any) becomes 1 s: the answer is
    the same, sooner. The long-poll refuses more than MAX_WAIT_SECONDS (400), which is sent as is;
    the DRF view caps it at 60 s instead, so there every larger wait becomes 1 s."""
    wait = query.get("wait")
    try:
        seconds = int(wait) if wait is not None else None
    except (TypeError, ValueError):
        return
    if seconds is not None and seconds > 1 and (longest is None or seconds <= longest):
        query["wait"] = 1


def steer(case: Any, scope: Scope, layer: str, own_pop: bool) -> Any:
    """A positive case moved into the token's scope: its layer, its PoP named or omitted (none for
    DNS), an instance name it takes, an acknowledged version that exists, a long-poll's `after`
    near the latest version and a short `wait`, and a local report's backend ids mapped onto the
    PoP's own backends."""
    place = case.query if case.method == "GET" else case.body
    if not isinstance(place, dict):
        return case
    place["layer"] = layer
    latest = current_version()
    for name, modulo in (("version", latest + 1), ("after", latest + 2), ("wait", 2)):
        # A version that exists (an ACK that can move), a long-poll's `after` around the latest
        # (some wait, then 304) and a short wait.
        value = place.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            place[name] = value % modulo
    instance = place.get("instance")
    if isinstance(instance, str) and not INSTANCE_RE.match(instance):
        place["instance"] = f"fuzz-{len(instance)}"
    place.pop("pop", None)
    if own_pop and scope.pop is not None:
        place["pop"] = scope.pop.slug
    servers = place.get("servers")
    if isinstance(servers, dict) and scope.backend_ids:
        place["servers"] = {str(scope.backend_ids[i % len(scope.backend_ids)]): figures
                            for i, figures in enumerate(servers.values())}
    for repaired in place.get("repaired") or []:
        if isinstance(repaired, dict) and repaired.get("backend_id") is not None and scope.backend_ids:
            repaired["backend_id"] = scope.backend_ids[0]
    return case


def known_good(path: str, scope: Scope) -> tuple[str, dict[str, Any]]:
    """The request an agent of `scope` really sends to `path`."""
    layer = scope.layers[0]
    if path.endswith("/desired/"):
        return "GET", {"layer": layer}
    if path.endswith("/ack/"):
        return "POST", {"layer": layer, "version": current_version()}
    if layer == DataplaneLayer.DNS:
        return "POST", {"layer": layer, "answers": [[1, 1, 10]]}
    return "POST", {"layer": layer, "servers": {str(scope.backend_ids[0]): {"sessions": 1}}}


def strategy_for(operation: Any, scope: Scope) -> Any:
    """(case, If-None-Match): as generated in both modes, and positive ones steered into scope."""
    plain = [operation.as_strategy(generation_mode=mode) for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
    steered = st.builds(steer, operation.as_strategy(generation_mode=GenerationMode.POSITIVE), st.just(scope),
                        st.sampled_from(scope.layers), st.booleans())
    return st.tuples(st.one_of(*plain, steered, steered), st.sampled_from(RUNNING_ETAGS))


def fuzz(operation: Any, scope: Scope, tally: Tally, send: Callable[[Any, dict[str, str]], int],
         max_examples: int, *, longest_wait: int | None) -> None:
    @hypothesis_settings(max_examples=max_examples, deadline=None, database=None, derandomize=True,
                         phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(drawn=strategy_for(operation, scope))
    def run(drawn: tuple[Any, str | None]) -> None:
        case, running = drawn
        if case.method == "GET" and isinstance(case.query, dict):
            _short_wait(case.query, longest_wait)
        headers = {"Authorization": f"Bearer {scope.raw}"}
        if running is not None and case.method == "GET":
            headers["If-None-Match"] = running
        tally.add(f"{operation.label} [{scope.label}]", send(case, headers), case)

    run()


def check(tally: Tally, what: str, operations: list[Any], scopes: list[Scope]) -> None:
    print(f"\n{tally.line(what, len(operations))}")
    assert not tally.server_errors, "\n".join(tally.server_errors[:5])
    for operation in operations:
        for scope in scopes:
            seen = tally.per_operation.get(f"{operation.label} [{scope.label}]", Counter())
            # The agent token really got through: the run reached the endpoint's answers, not only
            # the auth wall (401) or the scope check (403).
            assert any(status < 300 for status in seen), (operation.label, scope.label, dict(seen))
    assert 401 not in tally.statuses, dict(tally.statuses)


# --- in-process: the DRF views -------------------------------------------------------------------


@pytest.fixture
def in_process_requests() -> Iterator[None]:
    """Serve requests through the real WSGI handler without it closing the test's DB connection
    at request end (Django's test client does the same)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@pytest.mark.schemathesis
def test_agent_tokens_never_get_a_server_error_from_the_drf_agent_views(db: Any, in_process_requests: None) -> None:
    assert sorted(op.label for op in OPERATIONS) == [
        "GET /api/v1/agent/desired/", "POST /api/v1/agent/ack/", "POST /api/v1/agent/report/"]
    scopes = agent_scopes()
    tally = Tally()

    def send(case: Any, headers: dict[str, str]) -> int:
        # Each request in a savepoint, as each runs in its own transaction in production.
        with transaction.atomic():
            return int(case.call(headers=headers).status_code)

    for operation in OPERATIONS:
        for scope in scopes:
            fuzz(operation, scope, tally, send, MAX_EXAMPLES, longest_wait=None)
    check(tally, "agents (WSGI, DRF views)", OPERATIONS, scopes)


# --- over HTTP: the real ASGI app, with the long-poll in front -------------------------------------


@pytest.mark.integration
@pytest.mark.schemathesis
@pytest.mark.django_db(transaction=True)
def test_agent_tokens_never_get_a_server_error_from_the_asgi_app_and_its_long_poll(web: WebProcess) -> None:
    scopes = agent_scopes()
    schema = schemathesis.openapi.from_url(f"{web.url}/api/schema/").include(path_regex=AGENT_PATHS)
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) == len(OPERATIONS) == 3
    tally = Tally()
    with requests.Session() as session:
        def send(case: Any, headers: dict[str, str]) -> int:
            return int(case.call(base_url=web.url, session=session, headers=headers, timeout=30).status_code)

        for operation in operations:
            for scope in scopes:
                fuzz(operation, scope, tally, send, HTTP_MAX_EXAMPLES, longest_wait=MAX_WAIT_SECONDS)
            # And what an agent really sends, once per scope: the generated cases may all miss the
            # scope (a derandomized run sees the same few shapes), this one must not.
            for scope in scopes:
                method, body = known_good(operation.path, scope)
                answer = session.request(method, f"{web.url}{operation.path}", timeout=30,
                                         headers={"Authorization": f"Bearer {scope.raw}"},
                                         **({"params": body} if method == "GET" else {"json": body}))
                tally.add(f"{operation.label} [{scope.label}]", answer.status_code, None)
    check(tally, "agents (ASGI over HTTP, long-poll)", operations, scopes)
    assert "Traceback" not in web.log(), web.log()[-3000:]


# --- what the fuzzing turned up: report bodies once answered 500 ------------------------------------


@pytest.mark.parametrize("layer, body, field_name", [
    # a DNS answer count over Redis's 64-bit counter (HINCRBY: "value is not an integer or out of range")
    ("dns", {"answers": [[1, 1, 2**70]]}, "answers"),
    # two counts whose sum overflows that counter ("increment or decrement would overflow")
    ("dns", {"answers": [[1, 1, 2**62], [1, 1, 2**62]]}, "answers"),
    # a backend id SQLite cannot hold (OverflowError), as a report key and as a repaired backend
    ("local", {"servers": {"9" * 30: {"sessions": 1}}}, "servers"),
    ("local", {"repaired": [{"proxy": "p", "server": "s", "observed": None, "desired": None,
                             "backend_id": 2**70}]}, "repaired"),
    # a key str.isdigit() takes and int() refuses (ValueError)
    ("local", {"servers": {"²": {"sessions": 1}}}, "servers"),
    # a repaired server's state without "state" and "weight" (KeyError when audited)
    ("local", {"repaired": [{"proxy": "p", "server": "s", "observed": {"a": 1}, "desired": None}]}, "repaired"),
])
def test_report_bodies_that_were_a_server_error_are_refused_with_400(db: Any, layer: str, body: dict[str, Any],
                                                                     field_name: str) -> None:
    from rest_framework.test import APIClient

    pop_scope, dns_scope = agent_scopes()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {(dns_scope if layer == 'dns' else pop_scope).raw}")
    answer = client.post("/api/v1/agent/report/", {"layer": layer, **body}, format="json")
    assert answer.status_code == 400, answer.content
    assert field_name in answer.json()["errors"], answer.json()
    # What an agent really sends is still stored.
    good: dict[str, Any] = {"dns": {"answers": [[1, 1, 10**12]]},
                            "local": {"servers": {str(pop_scope.backend_ids[0]): {"sessions": 1}},
                                      "repaired": [{"proxy": "p", "server": "s",
                                                    "observed": {"state": "maint", "weight": 0},
                                                    "desired": {"state": "ready", "weight": 100},
                                                    "backend_id": pop_scope.backend_ids[0]}]}}
    answer = client.post("/api/v1/agent/report/", {"layer": layer, **good[layer]}, format="json")
    assert answer.status_code == 200, answer.content


def test_the_drf_view_and_the_long_poll_refuse_the_same_waits(transactional_db: Any) -> None:
    """The DRF view (WSGI, the test client) and the ASGI long-poll answer a bad `wait` or `after`
    alike: 400, never a silent clamp."""
    from rest_framework.test import APIClient

    pop = f.pop()
    raw = do_create_token(make_user("agent-owner-w", "admin"), name="w", role="agent", pop=pop,
                          actor=Actor.system("test"))[1]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    for query in ("wait=61", "wait=-1", "after=-3", "wait=x"):
        answer = client.get(f"/api/v1/agent/desired/?layer=local&{query}")
        assert answer.status_code == 400, (query, answer.content)
    assert client.get("/api/v1/agent/desired/?layer=local&after=0&wait=0").status_code in (200, 304)
