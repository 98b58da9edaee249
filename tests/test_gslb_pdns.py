"""DNS answers through a real PowerDNS (remote backend) and our GSLB server, both on loopback.

The GSLB server is `manage.py gslb_server` in its own process against the test DB and Redis;
PowerDNS runs in the foreground with deploy/pdns/pdns.conf rendered into a temp dir; queries go
to 127.0.0.1 with dnspython. No timed asserts: "eventually" is a poll with a generous deadline,
and the commit-to-answer time is printed (bench/README.md keeps the figure).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
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
from django.db import transaction

from steering.gslb.counters import HEARTBEAT_KEY, KEY_PREFIX
from steering.gslb.pdnsconf import pdns_command, pdns_server_binary, write_config
from steering.models import VIP, Backend, Region, StateVersion
from steering.services.actions import do_drain
from steering.services.audit import bump_version, current_version
from steering.services.context import Actor
from steering.services.effects import VERSION_KEY, _redis, publish_after_commit
from steering.services.health import do_record_health
from steering.services.topology import do_update
from tests import factories as f
from tests.conftest import IN_CI
from tests.processes import ROOT, stop_process_group, subprocess_env
from tests.support import free_port, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def pdns_binary() -> str:
    found = pdns_server_binary()
    if found is None:
        message = "pdns_server is not installed: apt-get install pdns-server pdns-backend-remote"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def _get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.loads(response.read())
    except OSError:
        return None


class Stack:
    def __init__(self, gslb_port: int, log_dir: Path) -> None:
        self.gslb_port = gslb_port
        self.log_dir = log_dir
        self.dns_port = 0

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.gslb_port}/healthz"

    def publish(self) -> int:
        """Announce the test's data as a new state version, as every service action does."""
        # Versions restart with each test's fresh DB, and Redis only moves up: start it over, past
        # whatever the server already serves (an earlier test may have left the same number, and
        # the server rebuilds only when the version moves).
        served = int((_get_json(self.health_url) or {}).get("snapshot_version") or 0)
        _redis().delete(VERSION_KEY)
        with transaction.atomic():
            StateVersion.objects.update_or_create(pk=1, defaults={"value": max(current_version(), served)})
            version = bump_version()
        publish_after_commit(version, [])
        wait_for(lambda: (_get_json(self.health_url) or {}).get("snapshot_version") == version,
                 f"the GSLB snapshot of version {version}", timeout=30)
        for key in _redis().scan_iter(match=f"{KEY_PREFIX}*"):  # earlier tests' answer counts
            _redis().delete(key)
        return version

    def ask(self, name: str, rdtype: str = "A", ecs: tuple[str, int] | None = None) -> dns.message.Message:
        options = [dns.edns.ECSOption(*ecs)] if ecs else None
        query = dns.message.make_query(name, rdtype, use_edns=0 if ecs else None, options=options)
        return dns.query.udp(query, "127.0.0.1", port=self.dns_port, timeout=3)

    def addresses(self, name: str, **kw: Any) -> list[str]:
        return [rr.address for rrset in self.ask(name, **kw).answer if rrset.rdtype == dns.rdatatype.A for rr in rrset]


@pytest.fixture(scope="module")
def gslb(django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    pdns_binary()
    log_dir = tmp_path_factory.mktemp("gslb")
    port = free_port()
    with django_db_blocker.unblock():
        env = subprocess_env()
    log = open(log_dir / "gslb.log", "wb")  # noqa: SIM115  (closed in teardown)
    proc = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "gslb_server", "--listen", f"127.0.0.1:{port}"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    stack = Stack(port, log_dir)
    try:
        wait_for(lambda: proc.poll() is not None or _get_json(stack.health_url) is not None, "the GSLB server", 60)
        assert proc.poll() is None, (log_dir / "gslb.log").read_text()
        yield stack
    finally:
        stop_process_group(proc)
        log.close()
        # Later tests must not see a GSLB server that has gone (its heartbeat stays fresh 5 s).
        _redis().delete(HEARTBEAT_KEY, *_redis().scan_iter(match=f"{KEY_PREFIX}*"))


@pytest.fixture
def stack(gslb: Stack, tmp_path: Path) -> Iterator[Callable[[], Stack]]:
    """Call it after creating the test's data: publishes it, then starts PowerDNS (which reads
    the zone list from the backend when it starts)."""
    started: list[subprocess.Popen[bytes]] = []
    logs = []

    def start() -> Stack:
        version = gslb.publish()
        gslb.dns_port = free_port()
        config_dir = tmp_path / "pdns"
        write_config(config_dir, port=gslb.dns_port, backend_url=f"http://127.0.0.1:{gslb.gslb_port}/dns")
        log = open(tmp_path / "pdns.log", "wb")  # noqa: SIM115  (closed in teardown)
        logs.append(log)
        proc = subprocess.Popen(pdns_command(pdns_binary(), config_dir), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        started.append(proc)

        def soa_serial() -> int | None:
            assert proc.poll() is None, (tmp_path / "pdns.log").read_text()
            try:
                reply = gslb.ask("example.net.", "SOA")
            except (OSError, dns.exception.Timeout):
                return None
            return reply.answer[0][0].serial if reply.answer else None

        wait_for(lambda: soa_serial() == version, "PowerDNS answering for example.net", timeout=30)
        return gslb

    yield start
    for proc in started:
        stop_process_group(proc)
    for log in logs:
        log.close()


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
