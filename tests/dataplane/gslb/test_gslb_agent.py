"""The GSLB server as an agent of the contract (steering.agents.gslb), end to end on loopback.

A real control plane (`uvicorn config.asgi:application`, its own process, the test DB and Redis),
the GSLB agent (`python -m steering.agents gslb`, a subprocess with a DNS agent token and no
database or Redis URL in its environment) and a real pdns_server asking it; queries with dig and
dnspython, all to 127.0.0.1. Then the agent's parts without processes: refusing a bad spec (NACK),
restoring the kept state, keeping answer counts that could not be sent, the CLI dispatcher and
the demo launcher's token. Every wait is a bounded poll, never a timed assertion.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dns.exception
import dns.rcode
import pytest
from django.contrib.auth.models import User

from steering.agents import cli
from steering.agents.contract import ContractClient, ControlPlaneError, Desired, StateFile
from steering.agents.gslb import GslbAgent, build_snapshot
from steering.gslb.app import MAX_BODY_BYTES, SnapshotHolder
from steering.gslb.counters import AnswerCounter
from steering.models import ApiToken, Region
from steering.readmodels.version import current_version
from steering.services.context import Actor
from steering.services.tokens import do_revoke_token
from tests import factories as f
from tests.conftest import make_user, token_client
from tests.dataplane.gslb.lab import GslbAgent as GslbAgentProcess
from tests.dataplane.gslb.lab import (
    Stack,
    control_plane_stack,
    dns_agent_token,
    dns_starter,
    get_json,
    weighted_fleet,
)
from tests.processes import ROOT, stop_process_group, subprocess_env
from tests.support import free_port, missing, wait_for

live = pytest.mark.django_db(transaction=True)
EU, US = "192.0.2.10", "192.0.2.20"


@pytest.fixture(scope="module")
def web(django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The control plane's web process for this module (tests.dataplane.gslb.lab.control_plane_stack)."""
    with control_plane_stack(django_db_blocker, tmp_path_factory.mktemp("gslb-agent")) as stack_:
        yield stack_


@pytest.fixture
def start_dns(web: Stack, tmp_path: Path) -> Iterator[Callable[[], Stack]]:
    """Call it after creating the test's data: a GSLB agent and PowerDNS on it (dns_starter)."""
    with dns_starter(web, tmp_path) as start:
        yield start


def dig_binary() -> str:
    found = shutil.which("dig")
    if found is None:
        message = "dig is not installed: apt-get install bind9-dnsutils"
        missing(message)
    return found


def dig(port: int, name: str) -> list[str]:
    out = subprocess.run([dig_binary(), "+short", "+time=2", "+tries=1", "-p", str(port), "@127.0.0.1", name, "A"],
                         capture_output=True, text=True, timeout=10)
    return [line for line in out.stdout.split() if line[:1].isdigit()]


def api(stack_: Stack, method: str, path: str, token: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", stack_.web.port, timeout=30)
    try:
        conn.request(method, path, json.dumps(body) if body is not None else None,
                     {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        response = conn.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None
    finally:
        conn.close()


def drain_region(stack_: Stack, region: Region, token: str) -> None:
    status, body = api(stack_, "POST", f"/api/v1/regions/{region.pk}/drain/", token, {
        "reason": "gslb agent test: drain eu", "force": True, "force_reason": "test: the whole region goes"})
    assert status == 202, body


def only(stack_: Stack, expected: set[str], what: str, timeout: float = 30) -> float:
    """Poll until 30 answers in a row come only from `expected`; returns the seconds it took."""
    started = time.monotonic()
    wait_for(lambda: all(set(stack_.addresses("api.example.net.")) <= expected for _ in range(30)), what, timeout)
    return time.monotonic() - started


def operator_token() -> str:
    # Before start_dns(): issuing a token is itself a versioned change.
    return str(token_client(make_user("otto-dns", "operator")).raw_token)


# --- (a) a change through the API reaches DNS, and the applied version is shown ---------------------

@pytest.mark.integration
@live
def test_a_region_drain_through_the_api_reaches_powerdns_and_the_dns_layer_shows_it_applied(start_dns):
    fleet = weighted_fleet({"eu": 1, "us": 1})
    token = operator_token()
    dns_stack = start_dns()
    assert {a for _ in range(20) for a in dig(dns_stack.dns_port, "api.example.net")} == {EU, US}
    drain_region(dns_stack, fleet["eu"], token)
    took = only(dns_stack, {US}, "the drained region to leave PowerDNS's answers")
    print(f"\nAPI drain to DNS answers: {1000 * took:.0f} ms")
    assert {a for _ in range(20) for a in dig(dns_stack.dns_port, "api.example.net")} == {US}

    def in_sync() -> dict[str, Any] | None:
        status, body = api(dns_stack, "GET", "/api/v1/dataplanes/", token)
        applied = body["applied"] if status == 200 else {}
        dns_state = applied.get("dns") or {}
        return dns_state if dns_state.get("state") == "in_sync" else None

    dns_state = wait_for(in_sync, "the DNS layer to show the drain applied", 30)
    assert dns_state["applied_version"] == dns_state["desired_version"] == current_version()
    assert [i["instance"] for i in dns_state["instances"]] == ["test-dns"]
    assert dns_state["instances"][0]["token"].startswith("agent-dns")
    # The answers PowerDNS handed out came back through the contract's report (and beat the heartbeat).
    status, answers = api(dns_stack, "GET", "/api/v1/dns/answers/", token)
    assert status == 200 and answers["connected"] is True
    assert answers["services"][str(fleet["service"].pk)]["total"] > 0


# --- (b) fail static --------------------------------------------------------------------------------

@pytest.mark.integration
@live
def test_with_the_control_plane_down_a_restarted_gslb_server_answers_from_its_kept_state(start_dns, tmp_path):
    fleet = weighted_fleet({"eu": 1, "us": 1})
    token = operator_token()
    dns_stack = start_dns()
    before = {a for _ in range(60) for a in dns_stack.addresses("api.example.net.")}
    assert before == {EU, US}
    agent = dns_stack.agent
    assert agent is not None
    version = agent.health()["snapshot_version"]
    state_file = agent.state_dir / "dns.json"
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    assert json.loads(state_file.read_text())["version"] == version

    dns_stack.web.stop()
    agent.stop()
    # Same port (PowerDNS's remote-connection-string), same token, same state dir.
    dns_stack.agent = GslbAgentProcess(agent.api, agent.token_file, agent.state_dir, agent.port,
                                       tmp_path / "gslb-restarted.log").start()
    restarted = dns_stack.agent
    health = wait_for(lambda: restarted.health() if restarted.serves(version) else None,
                      "the restarted agent to answer from its kept state", 30)
    assert health["control_plane"]["connected"] is False
    failed, seen = 0, set()
    for _ in range(200):
        try:
            reply = dns_stack.ask("api.example.net.")
            got = {rr.address for rrset in reply.answer for rr in rrset}
            if reply.rcode() != dns.rcode.NOERROR or not got:
                failed += 1
            seen |= got
        except (OSError, dns.exception.Timeout):
            failed += 1
    assert failed == 0 and seen == before

    dns_stack.web.start()
    drain_region(dns_stack, fleet["eu"], token)
    took = only(dns_stack, {US}, "a change made after the control plane came back to reach DNS", timeout=15)
    print(f"\ncontrol plane back: drain to DNS answers in {1000 * took:.0f} ms")
    # What was counted while the control plane was away was kept and sent when it came back.
    def counted() -> int:
        status, body = api(dns_stack, "GET", "/api/v1/dns/answers/", token)
        return int(body["services"].get(str(fleet["service"].pk), {}).get("total", 0)) if status == 200 else 0

    wait_for(lambda: counted() >= 200, "the answers counted during the outage to be reported", 15)


# --- (c) scope and hardening -------------------------------------------------------------------------

def _post(port: int, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body, {"Content-Type": "text/javascript", **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _post_chunked(port: int, path: str, chunks: list[bytes]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, iter(chunks), {"Content-Type": "text/javascript"}, encode_chunked=True)
        return conn.getresponse().status
    except (ConnectionError, BrokenPipeError):  # refused before we finished sending: also a refusal
        return 413
    finally:
        conn.close()


@pytest.mark.integration
@live
def test_a_pop_token_gets_403_for_dns_and_the_gslb_server_refuses_what_powerdns_never_sends(web, tmp_path):
    weighted_fleet({"eu": 1})
    pop_token = dns_agent_token(tmp_path / "pop.token", pop=f.pop())
    token_file = tmp_path / "dns.token"
    token = dns_agent_token(token_file)
    for call in (lambda c: c.fetch(), lambda c: c.report(answers=[]), lambda c: c.ack(1, '"x"')):
        with pytest.raises(ControlPlaneError) as refused:
            call(ContractClient(web.web.url, pop_token, "dns", instance="wrong-token"))
        assert refused.value.status == 403, refused.value
    version = web.publish()
    agent = web.start_agent(tmp_path, token_file=token_file)
    try:
        wait_for(lambda: agent.serves(version), "the GSLB agent to serve", 30)
        port = agent.port
        lookup = json.dumps({"method": "lookup", "parameters": {"qname": "api.example.net.", "qtype": "A",
                                                                 "remote": "127.0.0.1", "zone-id": 1}}).encode()
        status, body = _post(port, "/dns/lookup", lookup)
        assert status == 200 and json.loads(body)["result"][0]["content"] == EU
        # Oversized: declared, and chunked without a length.
        assert _post(port, "/dns/lookup", b" " * (MAX_BODY_BYTES + 1))[0] == 413
        assert _post_chunked(port, "/dns/lookup", [b" " * 16384] * 5) == 413
        for malformed in (b"{not json", b"[]", b'{"method": 5}', b'{"method": "lookup", "parameters": "x"}',
                          b'{"method": "lookup", "parameters": {"qname": ["api.example.net."]}}',
                          b'{"method": "lookup", "parameters": {"qname": "a.", "remote": 7}}', b"\xff\xfe\x00",
                          b"[" * 50_000):
            status, body = _post(port, "/dns/lookup", malformed)
            assert status == 400, (malformed[:40], status, body)
        # Resetting the latency window: never a GET, and a POST only with the agent's token.
        assert get_json(f"{agent.url}/stats")["lookups"] >= 1
        assert "POST /stats/reset" in get_json(f"{agent.url}/stats?reset=1")["error"]
        assert get_json(f"{agent.url}/stats")["lookups"] >= 1
        assert _post(port, "/stats/reset", b"")[0] == 401
        assert _post(port, "/stats/reset", b"", {"Authorization": f"Bearer {pop_token}"})[0] == 401
        assert _post(port, "/stats/reset", b"", {"Authorization": f"Bearer {token}"})[0] == 200
        assert get_json(f"{agent.url}/stats")["lookups"] == 0
        assert get_json(f"{agent.url}/healthz")["control_plane"]["connected"] is True
    finally:
        web.forget_agent()


# --- (d) no Django on a DNS host ----------------------------------------------------------------------

def test_the_agent_imports_no_django_and_no_database_or_redis_client():
    code = ("import sys; import steering.agents.gslb, steering.agents.cli; "
            "bad = sorted({m.split('.')[0] for m in sys.modules} & {'django', 'redis', 'psycopg', 'psycopg2', 'celery'}); "
            "assert not bad, bad")
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# --- the agent's parts, without processes -----------------------------------------------------------

def spec(*, healthy: bool = True, policy: str = "weighted") -> dict[str, Any]:
    return {"services": [{"id": 1, "fqdn": "api.example.net", "policy": policy, "ttl": 20,
                          "vips": [{"id": 1, "region_id": 1, "address": EU, "weight": 100, "priority": 1,
                                    "enabled": True}],
                          "healthy_regions": [1] if healthy else []}],
            "networks": [], "nameservers": [], "hostmaster": "", "zone_ttl": 300}


class FakeControlPlane:
    """Answers the Follower's calls from a script and records what the agent said."""

    def __init__(self, answers: list[Desired | int | ControlPlaneError]) -> None:
        self.answers = answers
        self.said: list[tuple[str, int, str]] = []
        self.reports: list[list[list[int]]] = []
        self.report_failures = 0

    def fetch(self, **_: Any) -> Desired | int:
        answer = self.answers.pop(0)
        if isinstance(answer, ControlPlaneError):
            raise answer
        return answer

    def ack(self, version: int, etag: str) -> None:
        self.said.append(("ack", version, etag))

    def nack(self, version: int, error: str) -> None:
        self.said.append(("nack", version, error))

    def report(self, *, answers: list[list[int]]) -> None:
        if self.report_failures:
            self.report_failures -= 1
            raise ControlPlaneError("connection refused")
        self.reports.append(answers)


def desired(version: int, body: dict[str, Any], etag: str) -> Desired:
    return Desired("dns", None, version, etag, body)


def agent_for(plane: FakeControlPlane, state: Path) -> tuple[GslbAgent, SnapshotHolder, AnswerCounter]:
    holder, counter = SnapshotHolder(), AnswerCounter()
    agent = GslbAgent(plane, plane, StateFile(state), holder, counter)  # type: ignore[arg-type]
    return agent, holder, counter


def test_a_spec_that_does_not_build_is_refused_and_the_last_snapshot_keeps_answering(tmp_path):
    plane = FakeControlPlane([desired(1, spec(), '"a"'), desired(2, {"services": [{"fqdn": "x"}]}, '"b"'),
                              2, desired(3, spec(policy="nonsense"), '"c"'), desired(4, spec(healthy=False), '"d"')])
    agent, holder, _ = agent_for(plane, tmp_path / "dns.json")
    agent.follower.step()
    first = holder.current
    assert first is not None and first.version == 1 and plane.said == [("ack", 1, '"a"')]
    agent.follower.step()
    assert holder.current is first
    assert plane.said[-1][:2] == ("nack", 2) and "does not build" in plane.said[-1][2]
    # The long-poll after the refusal times out: 304 with version 2. Version 2 is NOT acknowledged
    # (the spec it names was refused; we still run version 1's).
    agent.follower.step()
    assert [s[:2] for s in plane.said] == [("ack", 1), ("nack", 2)]
    agent.follower.step()
    assert holder.current is first and plane.said[-1][:2] == ("nack", 3) and "policy" in plane.said[-1][2]
    agent.follower.step()
    assert holder.current is not None and holder.current.version == 4 and plane.said[-1] == ("ack", 4, '"d"')
    assert json.loads((tmp_path / "dns.json").read_text())["version"] == 4
    assert stat.S_IMODE((tmp_path / "dns.json").stat().st_mode) == 0o600


def test_build_snapshot_refuses_what_the_policy_cannot_answer_from():
    for bad in ({"services": "x"}, {"services": [{"id": 1}]}, {"networks": [["not a network", 1]]},
                {"services": [{**spec()["services"][0], "vips": [{"id": 1, "region_id": 1, "address": "nowhere"}]}]}):
        with pytest.raises(Exception) as refused:
            build_snapshot(desired(9, bad, '"x"'))
        assert type(refused.value).__name__ == "ApplyError"


def test_restore_answers_from_the_kept_state_before_the_control_plane_is_asked(tmp_path):
    StateFile(tmp_path / "dns.json").save(desired(7, spec(), '"kept"'))
    agent, holder, _ = agent_for(FakeControlPlane([]), tmp_path / "dns.json")
    kept = agent.restore()
    assert kept is not None and kept.version == 7 and holder.current is not None and holder.current.version == 7
    (tmp_path / "bad.json").write_text(json.dumps(desired(8, {"services": 3}, '"bad"').as_dict()))
    agent, holder, _ = agent_for(FakeControlPlane([]), tmp_path / "bad.json")
    assert agent.restore() is None and holder.current is None


def test_answer_counts_that_fail_to_send_are_sent_with_the_next_report(tmp_path):
    plane = FakeControlPlane([])
    plane.report_failures = 1
    agent, _, counter = agent_for(plane, tmp_path / "dns.json")
    counter.add(1, (1, 2))
    assert agent.report_once() == 0 and plane.reports == []
    counter.add(1, (1,))
    assert agent.report_once() == 3
    assert sorted(map(tuple, plane.reports[0])) == [(1, 1, 2), (1, 2, 1)]
    assert agent.report_once() == 0 and plane.reports[-1] == []  # nothing new: still a heartbeat


def test_the_cli_dispatches_by_subcommand_and_says_when_an_agent_is_not_in_this_build(monkeypatch, capsys):
    assert cli.main([]) == 2 and "gslb" in capsys.readouterr().err
    assert cli.main(["--help"]) == 0 and "exabgp" in capsys.readouterr().out
    assert cli.main(["nonsense"]) == 2 and "unknown agent" in capsys.readouterr().err
    monkeypatch.setitem(cli.SUBCOMMANDS, "future", ("steering.agents.not_written_yet", "later"))
    assert cli.main(["future", "--x"]) == 2 and "not in this build" in capsys.readouterr().err
    called: list[list[str]] = []
    monkeypatch.setattr("steering.agents.gslb.main", lambda argv: called.append(argv) or 0)
    assert cli.main(["gslb", "--listen", "127.0.0.1:1"]) == 0 and called == [["--listen", "127.0.0.1:1"]]
    from steering.agents.gslb import parser

    with pytest.raises(SystemExit) as usage:  # --api, --token-file, --listen and --state-dir are required
        parser().parse_args(["--listen", "127.0.0.1:1"])
    assert usage.value.code == 2


# --- the demo launcher (manage.py gslb_server) --------------------------------------------------------

@pytest.mark.integration
@live
def test_the_demo_launcher_keeps_one_dns_token_and_execs_the_agent(web, tmp_path):
    from steering.management.commands.gslb_server import DEMO_TOKEN_NAME, ensure_dns_agent_token

    User.objects.create_superuser("admin", password="admin-pass-123")
    path = tmp_path / "var" / "gslb" / "agent.token"
    ensure_dns_agent_token(path)
    first = path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = ApiToken.objects.get(name=DEMO_TOKEN_NAME, revoked_at__isnull=True)
    assert token.role == "agent" and token.pop is None and token.user.username == "admin"
    ensure_dns_agent_token(path)
    assert path.read_text() == first  # live: reused
    do_revoke_token(token, actor=Actor.system("test"))
    ensure_dns_agent_token(path)
    assert path.read_text() != first and ApiToken.objects.filter(name=DEMO_TOKEN_NAME, revoked_at__isnull=True).count() == 1

    weighted_fleet({"eu": 1})
    version = web.publish()
    port = free_port()
    env = subprocess_env(STEERING_VAR_DIR=str(tmp_path / "var"))
    log = (tmp_path / "launcher.log").open("wb")
    proc = subprocess.Popen([sys.executable, "manage.py", "gslb_server", "--listen", f"127.0.0.1:{port}",
                             "--api", web.web.url, "--instance", "demo-launcher"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        health = wait_for(lambda: (get_json(f"http://127.0.0.1:{port}/healthz") or {}).get("snapshot_version") == version,
                          "the launched agent to serve", 60)
        assert health
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[1:4] == [b"-m", b"steering.agents", b"gslb"]  # exec'd: no Django left in the process
        assert cmdline[cmdline.index(b"--token-file") + 1] == str(path).encode()
    finally:
        stop_process_group(proc, timeout=5)
        log.close()
