"""The DNS answer policy (steering.gslb.policy): pure, so tested without a DB or a DNS server."""

from __future__ import annotations

import ipaddress
import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from steering.gslb.policy import (
    FAILOVER,
    GEO,
    POLICIES,
    WEIGHTED,
    GeoTable,
    Service,
    Vip,
    build_snapshot,
    lookup,
    zone_of,
)

EU, US, AP = 1, 2, 3


def svc(policy: str = WEIGHTED, vips: tuple[Vip, ...] = (), healthy: set[int] | None = None, **kw) -> Service:
    regions = {v.region_id for v in vips}
    return Service(id=kw.pop("id", 7), fqdn=kw.pop("fqdn", "api.example.net"), policy=policy, ttl=kw.pop("ttl", 30),
                   vips=vips, healthy_regions=frozenset(regions if healthy is None else healthy))


def addresses(answer, qtype: str = "A") -> list[str]:
    return [r.content for r in answer.records if r.qtype == qtype]


def draw(snapshot, n: int, qname: str = "api.example.net.", seed: int = 1, **kw) -> Counter:
    rng = random.Random(seed)
    return Counter(a for _ in range(n) for a in addresses(lookup(snapshot, qname, "ANY", rng=rng, **kw)))


# --- weighted ---------------------------------------------------------------------------------

def test_weighted_split_follows_the_weights():
    snap = build_snapshot([svc(vips=(Vip(1, EU, "192.0.2.1", weight=1), Vip(2, US, "192.0.2.2", weight=3)))])
    counts = draw(snap, 20_000)
    share = counts["192.0.2.2"] / sum(counts.values())
    assert abs(share - 0.75) < 0.02, counts  # binomial sd ~0.003: 0.02 is > 6 sd


def test_weighted_answers_only_regions_with_healthy_capacity():
    snap = build_snapshot([svc(vips=(Vip(1, EU, "192.0.2.1"), Vip(2, US, "192.0.2.2")), healthy={US})])
    assert set(draw(snap, 500)) == {"192.0.2.2"}


def test_disabled_and_zero_weight_vips_never_answer_while_others_can():
    vips = (Vip(1, EU, "192.0.2.1", enabled=False), Vip(2, US, "192.0.2.2", weight=0), Vip(3, AP, "192.0.2.3"))
    snap = build_snapshot([svc(vips=vips)])
    assert set(draw(snap, 500)) == {"192.0.2.3"}


def test_nothing_healthy_fails_open_with_every_enabled_vip():
    vips = (Vip(1, EU, "192.0.2.1"), Vip(2, US, "192.0.2.2"), Vip(3, AP, "192.0.2.3", enabled=False))
    answer = lookup(build_snapshot([svc(vips=vips, healthy=set())]), "api.example.net.", "A")
    assert sorted(addresses(answer)) == ["192.0.2.1", "192.0.2.2"]
    assert answer.fail_open and sorted(answer.regions) == [EU, US]


def test_answer_carries_the_service_ttl_and_counts_its_region():
    snap = build_snapshot([svc(vips=(Vip(1, EU, "192.0.2.1"),), ttl=45, id=9)])
    answer = lookup(snap, "API.Example.NET", "A")
    assert [(r.qtype, r.qname, r.content, r.ttl) for r in answer.records] == [("A", "api.example.net.", "192.0.2.1", 45)]
    assert answer.service_id == 9 and answer.regions == (EU,) and not answer.fail_open


def test_families_a_gets_ipv4_and_aaaa_gets_ipv6():
    snap = build_snapshot([svc(vips=(Vip(1, EU, "192.0.2.1"), Vip(2, EU, "2001:db8::1")))])
    assert addresses(lookup(snap, "api.example.net.", "A")) == ["192.0.2.1"]
    assert addresses(lookup(snap, "api.example.net.", "AAAA"), "AAAA") == ["2001:db8::1"]
    assert addresses(lookup(snap, "api.example.net.", "A"), "AAAA") == []
    both = lookup(snap, "api.example.net.", "ANY")
    assert {r.qtype for r in both.records} == {"A", "AAAA"}
    assert both.regions == (EU,)  # one lookup counts once


# --- failover ---------------------------------------------------------------------------------

def test_failover_answers_the_lowest_priority_region_that_can_serve():
    vips = (Vip(1, EU, "192.0.2.1", priority=1), Vip(2, US, "192.0.2.2", priority=2), Vip(3, AP, "192.0.2.3", priority=3))
    assert set(draw(build_snapshot([svc(FAILOVER, vips)]), 50)) == {"192.0.2.1"}
    assert set(draw(build_snapshot([svc(FAILOVER, vips, healthy={US, AP})]), 50)) == {"192.0.2.2"}
    disabled = (Vip(1, EU, "192.0.2.1", priority=1, enabled=False), *vips[1:])
    assert set(draw(build_snapshot([svc(FAILOVER, disabled)]), 50)) == {"192.0.2.2"}


# --- geo --------------------------------------------------------------------------------------

GEO_VIPS = (Vip(1, EU, "192.0.2.1"), Vip(2, US, "192.0.2.2"), Vip(3, AP, "192.0.2.3"))
NETWORKS = [("198.51.100.0/24", EU), ("203.0.113.0/24", US), ("203.0.113.128/25", AP), ("2001:db8:100::/48", EU)]


def test_geo_picks_the_region_of_the_client_subnet_with_its_scope():
    snap = build_snapshot([svc(GEO, GEO_VIPS)], NETWORKS)
    answer = lookup(snap, "api.example.net.", "A", remote="127.0.0.1", real_remote="198.51.100.0/24")
    assert addresses(answer) == ["192.0.2.1"] and answer.records[0].scope_mask == 24
    # Longest prefix wins: the /25 inside US's /24 is AP's.
    answer = lookup(snap, "api.example.net.", "A", remote="127.0.0.1", real_remote="203.0.113.200/32")
    assert addresses(answer) == ["192.0.2.3"] and answer.records[0].scope_mask == 25
    # The /24 has a more specific network inside: its answer holds only for the /25 we looked at.
    answer = lookup(snap, "api.example.net.", "A", remote="127.0.0.1", real_remote="203.0.113.7/32")
    assert addresses(answer) == ["192.0.2.2"] and answer.records[0].scope_mask == 25


def test_geo_uses_the_resolver_address_without_ecs_and_ipv6_networks_too():
    snap = build_snapshot([svc(GEO, GEO_VIPS)], NETWORKS)
    assert addresses(lookup(snap, "api.example.net.", "A", remote="203.0.113.9")) == ["192.0.2.2"]
    assert addresses(lookup(snap, "api.example.net.", "A", remote="127.0.0.1", real_remote="2001:db8:100:5::/56")) == ["192.0.2.1"]


def test_geo_falls_back_to_weighted_among_healthy_regions():
    drained_eu = build_snapshot([svc(GEO, GEO_VIPS, healthy={US, AP})], NETWORKS)
    seen = draw(drained_eu, 400, remote="127.0.0.1", real_remote="198.51.100.0/24")
    assert set(seen) == {"192.0.2.2", "192.0.2.3"}
    unmatched = draw(build_snapshot([svc(GEO, GEO_VIPS)], NETWORKS), 600, remote="192.0.2.99")
    assert set(unmatched) == {"192.0.2.1", "192.0.2.2", "192.0.2.3"}
    answer = lookup(build_snapshot([svc(GEO, GEO_VIPS)], NETWORKS), "api.example.net.", "A",
                    remote="127.0.0.1", real_remote="192.0.2.0/24")
    assert answer.records[0].scope_mask == 24  # "no network matched" holds for the bits given


@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32), st.integers(1, 5)), max_size=12),
       st.integers(0, 2**32 - 1))
def test_geo_table_matches_the_longest_prefix_like_brute_force(nets, address):
    cidrs = {}
    for value, length, region in nets:
        net = ipaddress.ip_network((value, length), strict=False)
        cidrs[str(net)] = region
    table = GeoTable(cidrs.items())
    addr = ipaddress.IPv4Address(address)
    holding = [(ipaddress.ip_network(c), r) for c, r in cidrs.items() if addr in ipaddress.ip_network(c)]
    hit = table.match(addr)
    if not holding:
        assert hit is None
    else:
        best = max(holding, key=lambda item: item[0].prefixlen)
        assert hit is not None and hit[0] == best[1] and hit[1] >= best[0].prefixlen


# --- zone data ---------------------------------------------------------------------------------

def test_soa_and_ns_at_the_zone_apex_from_configured_nameservers():
    snap = build_snapshot([svc(vips=(Vip(1, EU, "192.0.2.1"),))], version=42,
                          nameservers=["ns-a.example.org", "ns-b.example.org."], hostmaster="dns.example.org")
    soa = lookup(snap, "example.net.", "SOA").records
    assert [r.qtype for r in soa] == ["SOA"]
    assert soa[0].content.split()[:3] == ["ns-a.example.org.", "dns.example.org.", "42"]
    ns = lookup(snap, "example.net.", "NS").records
    assert sorted(r.content for r in ns) == ["ns-a.example.org.", "ns-b.example.org."]
    assert {r.qtype for r in lookup(snap, "example.net.", "ANY").records} == {"SOA", "NS"}


def test_names_we_do_not_serve_get_nothing():
    snap = build_snapshot([svc(vips=(Vip(1, EU, "192.0.2.1"),))])
    assert lookup(snap, "other.example.net.", "A").records == ()
    assert lookup(snap, "api.example.org.", "A").records == ()
    assert lookup(snap, "api.example.net.", "MX").records == ()
    assert lookup(snap, "api.example.net.", "NS").records == ()  # PowerDNS's referral check: no delegation
    assert zone_of("api.eu.example.net") == "eu.example.net."


# --- properties over random fleets ---------------------------------------------------------------

vip_strategy = st.builds(
    Vip, id=st.integers(1, 10**6), region_id=st.integers(1, 5),
    address=st.integers(1, 254).map(lambda n: f"192.0.2.{n}"),
    weight=st.integers(0, 256), priority=st.integers(1, 4), enabled=st.booleans(),
)


@settings(max_examples=200)
@given(st.sampled_from(POLICIES), st.lists(vip_strategy, max_size=8), st.sets(st.integers(1, 5)),
       st.integers(0, 2**17 - 1), st.integers(0, 2**16))
def test_answers_come_from_enabled_vips_of_healthy_regions_unless_failing_open(policy, vips, healthy, client, seed):
    # Client addresses are only data here (nothing is sent): resolvers in the benchmarking range
    # 198.18.0.0/15, one half of it mapped to a region, the other to none.
    snap = build_snapshot([svc(policy, tuple(vips), healthy=healthy)], [("198.51.100.0/24", 1), ("198.18.0.0/16", 2)])
    remote = str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("198.18.0.0")) + client))
    answer = lookup(snap, "api.example.net.", "A", remote=remote, rng=random.Random(seed))
    got = addresses(answer)
    enabled = [v for v in vips if v.enabled]
    usable = [v for v in enabled if v.region_id in healthy and v.weight > 0]
    if usable:
        assert len(got) == 1 and not answer.fail_open
        assert got[0] in {v.address for v in usable}
        if policy == FAILOVER:
            best = min(v.priority for v in usable)
            assert got[0] in {v.address for v in usable if v.priority == best}
    else:
        assert sorted(got) == sorted(v.address for v in enabled)  # fail open: every enabled VIP
        assert answer.fail_open == bool(enabled)
    assert all(r.ttl == 30 for r in answer.records)


def test_the_policy_module_imports_nothing_of_django():
    import subprocess
    import sys

    code = ("import sys, steering.gslb.policy; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'rest_framework')); "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
