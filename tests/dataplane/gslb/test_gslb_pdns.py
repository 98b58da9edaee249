"""DNS answers through a real PowerDNS (remote backend) and our GSLB server, all on loopback.

The control plane is the real ASGI app (`uvicorn config.asgi:application`) in its own process
against the test DB and Redis. The GSLB server is the agent, `python -m steering.agents gslb`,
started with a DNS agent token and an environment holding neither a database URL nor a Redis URL:
it follows the DNS layer's desired state through the agent contract. PowerDNS runs in the
foreground with deploy/pdns/pdns.conf rendered into a temp dir; queries go to 127.0.0.1 with
dnspython. No timed asserts: "eventually" is a poll with a generous deadline, and the
commit-to-answer time is printed (bench/README.md keeps the figure).

The processes and the fixtures that start them (`gslb`, `stack`) are tests/dataplane/gslb/lab.py's
and tests/conftest.py's: tests/integration/test_layered_dataplanes.py uses them too.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import dns.edns
import dns.flags
import dns.rcode
import dns.rdatatype
import pytest

from steering.models import VIP, Backend, Region
from steering.services.actions import do_drain
from steering.services.context import Actor
from steering.services.health import do_record_health
from steering.services.topology import do_update
from tests import factories as f
from tests.dataplane.gslb.lab import Stack, weighted_fleet
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


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
