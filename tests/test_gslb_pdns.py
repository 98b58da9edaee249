"""DNS answers through a real PowerDNS (remote backend) and our GSLB server, all on loopback.

The control plane is the real ASGI app (`uvicorn config.asgi:application`) in its own process
against the test DB and Redis. The GSLB server is the agent, `python -m steering.agents gslb`,
started with a DNS agent token and an environment holding neither a database URL nor a Redis URL:
it follows the DNS layer's desired state through the agent contract. PowerDNS runs in the
foreground with deploy/pdns/pdns.conf rendered into a temp dir; queries go to 127.0.0.1 with
dnspython. No timed asserts: "eventually" is a poll with a generous deadline, and the
commit-to-answer time is printed (bench/README.md keeps the figure).

Other modules reuse the fixtures (`gslb`, `stack`) and the process helpers (ControlPlane, GslbAgent).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from django.contrib.auth.models import User
from django.db import transaction

from steering.gslb.pdnsconf import pdns_command, pdns_server_binary, write_config
from steering.models import VIP, Backend, PoP, Region, StateVersion
from steering.readmodels.version import current_version
from steering.redis_keys import GSLB_ANSWERS_PREFIX, GSLB_HEARTBEAT, STATE_VERSION
from steering.redisconn import sync_client
from steering.services.actions import do_drain
from steering.services.audit import bump_version
from steering.services.context import Actor
from steering.services.effects import publish_after_commit
from steering.services.health import do_record_health
from steering.services.tokens import do_create_token
from steering.services.topology import do_update
from tests import factories as f
from tests.conftest import make_user
from tests.processes import ROOT, stop_process_group, subprocess_env
from tests.support import free_port, missing, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

START_SECONDS = 90.0


def pdns_binary() -> str:
    found = pdns_server_binary()
    if found is None:
        message = "pdns_server is not installed: apt-get install pdns-server pdns-backend-remote"
        missing(message)
    return found


def get_json(url: str, token: str | None = None) -> Any:
    """The JSON body of a GET (also of an error status); None when nothing answers."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310  (loopback, our own servers)
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            return json.loads(exc.read())
        except ValueError:
            return None
    except (OSError, ValueError):
        return None


def dns_agent_token(path: Path, *, pop: PoP | None = None) -> str:
    """An agent token (the DNS layer's, or a PoP's) owned by an admin, written 0600 to `path`."""
    owner = User.objects.filter(username="gslb-token-owner").first() or make_user("gslb-token-owner", "admin")
    _token, raw = do_create_token(owner, name=f"agent-{pop.slug if pop else 'dns'}-{time.monotonic_ns()}",
                                  role="agent", pop=pop, actor=Actor.system("test"))
    path.touch(mode=0o600)
    path.write_text(raw + "\n")
    return raw


class ControlPlane:
    """`uvicorn config.asgi:application` in its own process group on a loopback port (kept across
    restarts), against the test database and Redis; drains complete in the model alone."""

    def __init__(self, var_dir: Path) -> None:
        self.var_dir = var_dir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = var_dir / "web.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = subprocess_env(STEERING_VAR_DIR=str(self.var_dir), LOG_LEVEL="WARNING", STEERING_DATAPLANE_CONFIRM="0")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1",
                 "--port", str(self.port), "--lifespan", "off", "--no-access-log"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        proc = self.proc
        wait_for(lambda: proc.poll() is not None or get_json(f"{self.url}/healthz") is not None,
                 "the control plane's web process", START_SECONDS, interval=0.1)
        assert proc.poll() is None, self.log_tail()

    def stop(self) -> None:
        if self.proc is not None:
            # A long-poll in flight holds uvicorn's graceful shutdown for up to its wait (the
            # long-poll does not watch for the client going away): do not wait for it here.
            stop_process_group(self.proc, timeout=3)
            self.proc = None

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""


class GslbAgent:
    """`python -m steering.agents gslb` with only an API URL, a token file and a state dir: its
    environment carries no database URL, no Redis URL and no Django settings."""

    def __init__(self, api: str, token_file: Path, state_dir: Path, port: int, log_path: Path,
                 instance: str = "test-dns") -> None:
        self.api, self.token_file, self.state_dir, self.port = api, token_file, state_dir, port
        self.log_path, self.instance = log_path, instance
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GslbAgent:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
        env["PYTHONUNBUFFERED"] = "1"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "steering.agents", "gslb", "--api", self.api, "--token-file", str(self.token_file),
                 "--listen", f"127.0.0.1:{self.port}", "--state-dir", str(self.state_dir), "--instance", self.instance,
                 "--log-level", "INFO"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        proc = self.proc
        wait_for(lambda: proc.poll() is not None or get_json(f"{self.url}/healthz") is not None,
                 "the GSLB agent to listen", START_SECONDS, interval=0.05)
        assert proc.poll() is None, self.log_tail()
        return self

    def health(self) -> dict[str, Any]:
        return get_json(f"{self.url}/healthz") or {}

    def serves(self, version: int) -> bool:
        return self.health().get("snapshot_version") == version

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc)
            self.proc = None

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""


class Stack:
    def __init__(self, web: ControlPlane, log_dir: Path) -> None:
        self.web = web
        self.log_dir = log_dir
        self.agent: GslbAgent | None = None
        self.dns_port = 0
        # The highest version this module's web process may have seen. Each test's database starts
        # over at version 0, but the web process's version watcher only moves up: publish() starts
        # each test past it, or the long-poll would not wake for the test's changes.
        self.high_water = 0

    @property
    def gslb_port(self) -> int:
        assert self.agent is not None
        return self.agent.port

    @property
    def health_url(self) -> str:
        return f"{self.agent.url if self.agent else ''}/healthz"

    def publish(self) -> int:
        """Announce the test's data as a new state version, as every service action does."""
        seen = int(sync_client().get(STATE_VERSION) or 0)
        if self.agent is not None:
            seen = max(seen, int(self.agent.health().get("snapshot_version") or 0))
        with transaction.atomic():
            StateVersion.objects.update_or_create(pk=1, defaults={"value": max(current_version(), seen, self.high_water)})
            version = bump_version()
        publish_after_commit(version, [])
        self.high_water = max(self.high_water, version)
        for key in sync_client().scan_iter(match=f"{GSLB_ANSWERS_PREFIX}*"):  # earlier tests' answer counts
            sync_client().delete(key)
        return version

    def start_agent(self, tmp_path: Path, *, token_file: Path, port: int | None = None) -> GslbAgent:
        self.agent = GslbAgent(self.web.url, token_file, tmp_path / "gslb-state", port or free_port(),
                               tmp_path / "gslb.log").start()
        return self.agent

    def forget_agent(self) -> None:
        if self.agent is not None:
            health = self.agent.health()
            self.high_water = max(self.high_water, int(health.get("snapshot_version") or 0),
                                  int((health.get("control_plane") or {}).get("seen_version") or 0))
            self.agent.stop()
            self.agent = None
        # Later tests must not see a GSLB server that has gone (its heartbeat stays fresh 5 s).
        sync_client().delete(GSLB_HEARTBEAT, *sync_client().scan_iter(match=f"{GSLB_ANSWERS_PREFIX}*"))

    def ask(self, name: str, rdtype: str = "A", ecs: tuple[str, int] | None = None) -> dns.message.Message:
        options = [dns.edns.ECSOption(*ecs)] if ecs else None
        query = dns.message.make_query(name, rdtype, use_edns=0 if ecs else None, options=options)
        return dns.query.udp(query, "127.0.0.1", port=self.dns_port, timeout=3)

    def addresses(self, name: str, **kw: Any) -> list[str]:
        return [rr.address for rrset in self.ask(name, **kw).answer if rrset.rdtype == dns.rdatatype.A for rr in rrset]


@contextmanager
def control_plane_stack(django_db_blocker: Any, log_dir: Path) -> Iterator[Stack]:
    """The control plane's web process, for a module (each test starts its own GSLB agent)."""
    pdns_binary()
    with django_db_blocker.unblock():
        web = ControlPlane(log_dir)
        web.start()
    stack = Stack(web, log_dir)
    try:
        yield stack
    finally:
        stack.forget_agent()
        web.stop()


def start_pdns(stack: Stack, config_dir: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """PowerDNS on a fresh loopback port asking the stack's GSLB agent (a new port each time)."""
    stack.dns_port = free_port()
    write_config(config_dir, port=stack.dns_port, backend_url=f"http://127.0.0.1:{stack.gslb_port}/dns")
    with log_path.open("ab") as log:
        return subprocess.Popen(pdns_command(pdns_binary(), config_dir), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def soa_serial(stack: Stack, proc: subprocess.Popen[bytes], log_path: Path) -> int | None:
    assert proc.poll() is None, log_path.read_text(errors="replace")
    try:
        reply = stack.ask("example.net.", "SOA")
    except (OSError, dns.exception.Timeout):
        return None
    return reply.answer[0][0].serial if reply.answer else None


@contextmanager
def dns_starter(gslb: Stack, tmp_path: Path) -> Iterator[Callable[[], Stack]]:
    """A `start()` to call once the test's data exists: a fresh DNS agent token, the data published
    as a new version, a GSLB agent serving that version, then PowerDNS (which reads the zone list
    from the backend when it starts) answering with its SOA serial. Everything stops on exit."""
    started: list[subprocess.Popen[bytes]] = []

    def start() -> Stack:
        token_file = tmp_path / "gslb.token"
        dns_agent_token(token_file)  # first: issuing a token is an audited change, a version of its own
        version = gslb.publish()
        agent = gslb.start_agent(tmp_path, token_file=token_file)
        wait_for(lambda: agent.serves(version), f"the GSLB agent to serve version {version}", 30,
                 interval=0.05)
        log_path = tmp_path / "pdns.log"
        proc = start_pdns(gslb, tmp_path / "pdns", log_path)
        started.append(proc)
        wait_for(lambda: soa_serial(gslb, proc, log_path) == version, "PowerDNS answering for example.net",
                 timeout=30)
        return gslb

    try:
        yield start
    finally:
        for proc in started:
            stop_process_group(proc)
        gslb.forget_agent()


@pytest.fixture(scope="module")
def gslb(django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with control_plane_stack(django_db_blocker, tmp_path_factory.mktemp("gslb")) as stack:
        yield stack


@pytest.fixture
def stack(gslb: Stack, tmp_path: Path) -> Iterator[Callable[[], Stack]]:
    """Call it after creating the test's data (see dns_starter)."""
    with dns_starter(gslb, tmp_path) as start:
        yield start


def weighted_fleet(weights: dict[str, int], *, policy: str = "weighted", down: tuple[str, ...] = ()) -> dict[str, Any]:
    """One service in example.net with a region (PoP, pool, two backends, a VIP) per entry."""
    svc = f.service(fqdn="api.example.net", dns_policy=policy, ttl=20)
    fleet: dict[str, Any] = {"service": svc}
    for i, (slug, weight) in enumerate(weights.items(), start=1):
        region = f.region(slug=slug)
        # No panic threshold: a region whose backends all go down must drop out here.
        pool = f.pool(f.pop(region), svc, expected_rps=100, panic_threshold_percent=0)
        for _ in range(2):
            f.backend(pool, health="down" if slug in down else "up", capacity_rps=1000)
        f.vip(svc, region, address=f"192.0.2.{10 * i}", weight=weight)
        fleet[slug] = region
    return fleet


def test_only_healthy_regions_answer_and_weights_give_the_split(stack, viewer_api):
    fleet = weighted_fleet({"eu": 1, "us": 3, "ap": 3}, down=("ap",))
    dns_stack = stack()
    counts = Counter(a for _ in range(2000) for a in dns_stack.addresses("api.example.net."))
    assert set(counts) == {"192.0.2.10", "192.0.2.20"}, counts  # ap's backends are down: never answered
    share = counts["192.0.2.20"] / sum(counts.values())
    # 1:3 -> 0.75; binomial sd over 2,000 draws is ~0.01, so 0.05 is a 5-sd tolerance.
    assert abs(share - 0.75) < 0.05, counts
    # The server counted what it handed out, and the API reports it (flushed every second).
    def counted() -> dict[str, Any] | None:
        body = viewer_api.get("/api/v1/dns/answers/").json()
        return body if body["services"].get(str(fleet["service"].pk), {}).get("total", 0) >= 2000 else None

    body = wait_for(counted, "the answers in the API", timeout=15)
    assert body["connected"] is True
    regions = body["services"][str(fleet["service"].pk)]["regions"]
    assert set(regions) == {str(fleet["eu"].pk), str(fleet["us"].pk)}
    assert abs(regions[str(fleet["us"].pk)]["share"] - 0.75) < 0.05


def test_geo_answers_the_region_of_the_client_subnet_with_its_scope(stack):
    fleet = weighted_fleet({"eu": 1, "us": 1}, policy="geo")
    f.client_network(fleet["eu"], cidr="198.51.100.0/24")
    f.client_network(fleet["us"], cidr="203.0.113.0/24")
    dns_stack = stack()
    for subnet, expected in (("198.51.100.0", "192.0.2.10"), ("203.0.113.0", "192.0.2.20")):
        reply = dns_stack.ask("api.example.net.", ecs=(subnet, 24))
        assert [rr.address for rrset in reply.answer for rr in rrset] == [expected]
        (ecs,) = [o for o in reply.options if isinstance(o, dns.edns.ECSOption)]
        assert (ecs.address, ecs.srclen, ecs.scopelen) == (subnet, 24, 24)
    # No network matches: weighted among the healthy regions.
    seen = {a for _ in range(60) for a in dns_stack.addresses("api.example.net.", ecs=("192.0.2.0", 24))}
    assert seen == {"192.0.2.10", "192.0.2.20"}


def test_a_drain_reaches_the_answers(stack):
    fleet = weighted_fleet({"eu": 1, "us": 1})
    dns_stack = stack()
    before = {a for _ in range(60) for a in dns_stack.addresses("api.example.net.")}
    assert before == {"192.0.2.10", "192.0.2.20"}
    region = Region.objects.get(pk=fleet["eu"].pk)
    # From the call: the commit (and the version's move in Redis) happens inside it, before it returns.
    committed = time.monotonic()
    do_drain(region, actor=Actor.system("test"), reason="dns test: drain eu",
             grace_seconds=60, force=True, force_reason="test: the whole region goes")
    returned = time.monotonic()
    # Gone means 30 answers in a row without eu's VIP (each would show it with p = 1/2 otherwise).
    # The switch happened between the last answer that still named eu and the first of that run.
    last_seen, clean_since, streak, deadline = None, 0.0, 0, committed + 30
    while streak < 30:
        assert time.monotonic() < deadline, "the drained region never left the answers"
        asked = time.monotonic()
        if "192.0.2.10" in dns_stack.addresses("api.example.net."):
            last_seen, streak = asked, 0
        else:
            clean_since, streak = (asked if streak == 0 else clean_since), streak + 1
    still = "never" if last_seen is None else f"{1000 * (last_seen - committed):.0f} ms"
    print(f"\ncommit-to-answer: do_drain ran {1000 * (returned - committed):.0f} ms (commit, then publish); the "
          f"drained region last answered at {still}, gone from {1000 * (clean_since - committed):.0f} ms after the call")
    assert {a for _ in range(30) for a in dns_stack.addresses("api.example.net.")} == {"192.0.2.20"}


def _until_only(dns_stack: Stack, expected: set[str], what: str) -> None:
    """Poll until 30 answers in a row come only from `expected` (each other VIP has p >= 1/3)."""
    def settled() -> bool:
        return all(set(dns_stack.addresses("api.example.net.")) <= expected for _ in range(30))

    wait_for(settled, what, timeout=30)


def test_a_vip_disable_and_a_health_down_reach_the_answers(stack):
    fleet = weighted_fleet({"eu": 1, "us": 1, "ap": 1})
    dns_stack = stack()
    assert {a for _ in range(90) for a in dns_stack.addresses("api.example.net.")} == {
        "192.0.2.10", "192.0.2.20", "192.0.2.30"}
    vip = VIP.objects.get(region=fleet["eu"])
    do_update(vip, {"enabled": False}, actor=Actor.system("test"), reason="dns test: disable eu's VIP")
    _until_only(dns_stack, {"192.0.2.20", "192.0.2.30"}, "the disabled VIP to leave the answers")
    for backend in Backend.objects.filter(pool__pop__region=fleet["us"]):
        do_record_health(backend.pk, new_health="down", evidence={"why": "dns test"})
    _until_only(dns_stack, {"192.0.2.30"}, "the region whose backends are down to leave the answers")
    assert {a for _ in range(30) for a in dns_stack.addresses("api.example.net.")} == {"192.0.2.30"}


def test_soa_and_ns_for_the_zone(stack):
    weighted_fleet({"eu": 1})
    dns_stack = stack()
    soa = dns_stack.ask("example.net.", "SOA")
    assert soa.rcode() == dns.rcode.NOERROR and soa.flags & dns.flags.AA
    (record,) = soa.answer[0]
    assert str(record.mname) == "ns1.example.net." and str(record.rname) == "hostmaster.example.net."
    ns = dns_stack.ask("example.net.", "NS")
    assert sorted(str(rr.target) for rr in ns.answer[0]) == ["ns1.example.net.", "ns2.example.net."]
    missing = dns_stack.ask("nothing.example.net.", "A")
    assert missing.rcode() == dns.rcode.NXDOMAIN and missing.authority[0].rdtype == dns.rdatatype.SOA
