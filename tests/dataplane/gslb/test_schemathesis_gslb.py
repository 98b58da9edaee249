"""Generated requests against the running GSLB server, from its hand-written OpenAPI document.

steering/agents/gslb_openapi.json describes what `python -m steering.agents gslb` serves
(steering.gslb.app.RemoteBackendApp): PowerDNS's remote backend under /dns, /healthz, /stats and
/stats/reset. First, that document cannot drift: every path the app's router names is in it, and
every (path, method) the app answers (not 404/405) is an operation of it, and the reverse.

Then the real server, started as tests/dataplane/gslb/test_gslb_agent.py starts it (a control plane
on uvicorn, tests.processes.WebProcess, and the agent as a subprocess with a DNS agent token and no
database), gets schemathesis cases over HTTP: positive and negative ones per operation, remote-backend calls
steered onto the methods and names it answers, /stats/reset with the agent's token, another token
or none, plus explicit malformed and oversized bodies. Every answer is checked against the document
(status, content type, body schema) and against what the server must say for that request: never
a 5xx; a remote-backend body that is not a call 400, one over 64 KiB 413; /stats/reset 401 without
the agent's token; a GET of /stats that asks for a reset 405. One line is printed (`-s` shows it),
e.g. `schemathesis gslb: 7 operations, 470 requests, 0 5xx`.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from steering.agents import gslb as gslb_agent
from steering.gslb import app as gslb_app
from steering.gslb.app import BACKEND_PREFIX, MAX_BODY_BYTES, BadRequest, RemoteBackendApp, SnapshotHolder, parse_call
from steering.gslb.counters import AnswerCounter
from tests.dataplane.gslb.lab import GslbAgent, dns_agent_token, get_json, weighted_fleet
from tests.processes import ROOT, WebProcess
from tests.support import free_port, wait_for

DOCUMENT_PATH = ROOT / "steering" / "agents" / "gslb_openapi.json"
DOCUMENT = json.loads(DOCUMENT_PATH.read_text())
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]  # type: ignore[union-attr]
MAX_EXAMPLES = 100
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# What steered remote-backend calls ask for: the methods the server answers (and one it does not),
# names it has (the service, the zone) and one it has not.
REMOTE_METHODS = ["lookup", "LOOKUP", "initialize", "getDomainInfo", "getAllDomains", "getAllDomainMetadata"]
QNAMES = ["api.example.net.", "api.example.net", "example.net.", "nowhere.invalid."]
QTYPES = ["A", "AAAA", "SOA", "NS", "ANY", "TXT"]


# --- the document and the server's routes -----------------------------------------------------------


def _template(path: str) -> str:
    """A document path as the server sees one request to it (/dns/{method} -> /dns/lookup)."""
    return path.replace("{method}", "lookup")


def _router_paths() -> set[str]:
    """The paths RemoteBackendApp.__call__ compares the request's path with: its string literals
    that start with '/', and BACKEND_PREFIX, with and without a method after it."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(RemoteBackendApp.__call__)))
    literals = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
                and isinstance(node.value, str) and node.value.startswith("/")}
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert "BACKEND_PREFIX" in names, "the router no longer routes BACKEND_PREFIX: update this test and the document"
    return {*literals - {"/"}, BACKEND_PREFIX, f"{BACKEND_PREFIX}/{{method}}"}


def _status(app: Any, method: str, path: str) -> int:
    """The status the ASGI app answers `method path` with (no body, no token)."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "query_string": b"", "headers": []}
    asyncio.run(app(scope, receive, send))
    return int(sent[0]["status"])


def test_the_document_is_openapi_3_and_the_module_says_where_it_is() -> None:
    assert str(DOCUMENT["openapi"]).startswith("3.")
    assert "steering/agents/gslb_openapi.json" in (gslb_agent.__doc__ or "")
    assert {op.label for op in OPERATIONS} == {
        "POST /dns", "POST /dns/{method}", "GET /healthz", "HEAD /healthz", "GET /stats", "HEAD /stats",
        "POST /stats/reset"}


def test_every_route_the_gslb_server_serves_is_in_the_document() -> None:
    documented = {(path, method.upper()) for path, item in DOCUMENT["paths"].items() for method in item
                  if method.upper() in HTTP_METHODS}
    router = _router_paths()
    assert router == set(DOCUMENT["paths"]), "paths the router names vs. the document's"
    app = RemoteBackendApp(SnapshotHolder(), AnswerCounter(), admin_token="the-agent-token")
    assert _status(app, "GET", "/not-a-route") == 404
    served = {(path, method) for path in router for method in HTTP_METHODS
              if _status(app, method, _template(path)) not in (404, 405)}
    assert served == documented
    # The module docstring lists the same routes.
    for path in router:
        assert path.replace("/{method}", "/<method>") in (gslb_app.__doc__ or ""), path


# --- the running server -------------------------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(the GSLB server's URL, its agent token), serving a snapshot of a two-region service."""
    weighted_fleet({"eu": 1, "us": 1})
    token = dns_agent_token(tmp_path / "dns.token")
    web = WebProcess(tmp_path).start()
    agent: GslbAgent | None = None
    try:
        agent = GslbAgent(web.url, tmp_path / "dns.token", tmp_path / "gslb-state", free_port(),
                          tmp_path / "gslb.log").start()
        running = agent
        wait_for(lambda: running.health().get("snapshot_version") is not None, "the GSLB server to serve", 30)
        yield agent.url, token
    finally:
        if agent is not None:
            agent.stop()
        web.stop()


def _body(response: Any) -> bytes:
    body = response.request.body
    if body is None:
        return b""
    return body.encode() if isinstance(body, str) else bytes(body)


def _bearer(response: Any) -> str | None:
    """The bearer token the request really carried (a negative case may have dropped ours)."""
    kind, _, credential = str(response.request.headers.get("Authorization") or "").partition(" ")
    return credential.strip() if kind.lower() == "bearer" else None


def expected(response: Any, token: str) -> set[int]:
    """The statuses the server may answer this request with (what the app's docstring promises),
    from the request as it was sent."""
    url = urlsplit(response.request.url)
    path, method, body = unquote(url.path), response.request.method, _body(response)
    if path == BACKEND_PREFIX or path.startswith(BACKEND_PREFIX + "/"):
        if len(body) > MAX_BODY_BYTES:
            return {413}
        try:
            parse_call(body)
        except BadRequest:
            return {400}
        return {200}
    if path == "/healthz" and method in ("GET", "HEAD"):
        return {200}
    if path == "/stats" and method in ("GET", "HEAD"):
        return {405} if "reset" in url.query else {200}
    if path == "/stats/reset" and method == "POST":
        if len(body) > MAX_BODY_BYTES:
            return {413}
        return {200} if _bearer(response) == token else {401}
    return {404}


def steer(case: Any, method: str, qname: str, qtype: str) -> Any:
    """A positive remote-backend call moved onto a method and a name the server answers."""
    if isinstance(case.body, dict):
        case.body["method"] = method
        parameters = case.body.get("parameters")
        if isinstance(parameters, dict):
            parameters.update({"qname": qname, "qtype": qtype, "name": qname})
    return case


def strategy_for(operation: Any) -> Any:
    plain = [operation.as_strategy(generation_mode=mode) for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
    if operation.path.startswith(BACKEND_PREFIX):
        plain.append(st.builds(steer, operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
                               st.sampled_from(REMOTE_METHODS), st.sampled_from(QNAMES), st.sampled_from(QTYPES)))
    return st.tuples(st.one_of(*plain), st.sampled_from(["none", "agent", "other"]))


def explicit_cases(token: str) -> list[tuple[Any, str]]:
    """Malformed and oversized bodies, and resets with and without the token."""
    by_label = {op.label: op for op in OPERATIONS}
    too_big = json.dumps({"method": "lookup", "parameters": {"qname": "a" * MAX_BODY_BYTES}}).encode()
    malformed = [b"", b"{not json", b"[]", b'{"method": 5}', b'{"method": ""}', b'{"method": "' + b"x" * 65 + b'"}',
                 b'{"method": "lookup", "parameters": "x"}', b'{"method": "lookup", "parameters": {"qname": ["a."]}}',
                 b'{"method": "lookup", "parameters": {"qname": "a.", "remote": 7}}', b"\xff\xfe\x00", b"[" * 50_000,
                 b'{"method": "lookup", "parameters": {"qname": "\\ud800."}}', too_big]
    cases: list[tuple[Any, str]] = []
    for label, path_parameters in (("POST /dns", {}), ("POST /dns/{method}", {"method": "lookup"})):
        cases += [(by_label[label].Case(path_parameters=path_parameters, body=body), "none") for body in malformed]
    reset = by_label["POST /stats/reset"]
    cases += [(reset.Case(), "none"), (reset.Case(), "other"), (reset.Case(body=b"x" * (MAX_BODY_BYTES + 1)), "agent"),
              (reset.Case(body=b"x" * (MAX_BODY_BYTES + 1)), "none"), (reset.Case(), "agent")]
    cases.append((by_label["GET /stats"].Case(query={"reset": "1"}), "none"))
    return cases


@pytest.mark.integration
@pytest.mark.schemathesis
@pytest.mark.django_db(transaction=True)
def test_the_running_gslb_server_never_answers_a_generated_request_with_a_server_error(
        server: tuple[str, str]) -> None:
    url, token = server
    other = "str_" + "x" * 43  # a token of the right shape that is not the agent's
    statuses: Counter[int] = Counter()
    server_errors: list[str] = []
    wrong: list[str] = []

    with requests.Session() as session:
        def send(case: Any, who: str) -> None:
            sent_token = {"none": None, "agent": token, "other": other}[who]
            headers = {"Authorization": f"Bearer {sent_token}"} if sent_token else {}
            response = case.call(base_url=url, session=session, headers=headers, timeout=30)
            statuses[response.status_code] += 1
            curl = case.as_curl_command(headers=headers)[:500]
            if response.status_code >= 500:
                server_errors.append(f"{response.status_code}: {curl}")
            allowed = expected(response, token)
            if response.status_code not in allowed:
                wrong.append(f"{response.status_code} not in {sorted(allowed)}: {curl} ")
            try:
                case.validate_response(response, checks=CHECKS)
            except (AssertionError, FailureGroup) as exc:
                wrong.append(f"does not conform to the document: {curl}\n{str(exc)[:800]}")

        for operation in OPERATIONS:
            @hypothesis_settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                                 phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(drawn=strategy_for(operation))
            def run(drawn: tuple[Any, str]) -> None:
                send(*drawn)

            run()
        for case, who in explicit_cases(token):
            send(case, who)

    print(f"\nschemathesis gslb: {len(OPERATIONS)} operations, {sum(statuses.values())} requests, "
          f"{len(server_errors)} 5xx")
    assert not server_errors, "\n".join(server_errors[:5])
    assert not wrong, "\n".join(wrong[:5])
    # Every kind of answer was reached: served, refused as malformed, too large, unauthenticated.
    assert {200, 400, 401, 405, 413} <= set(statuses), dict(statuses)
    assert get_json(f"{url}/healthz")["control_plane"]["connected"] is True
