"""The pure safety-rule judge: counts before and after a move, and only a move that makes a
broken rule worse is a breach."""

from __future__ import annotations

from steering import safety
from steering.safety import BackendFact, Facts, Move, PoolFact, PopFact, Rule

# Two regions (1: pops 10, 11; 2: pop 20); service 7 on prefix 70, service 8 on the same prefix at pop 10.
FACTS = Facts(
    backends=(BackendFact(1, 100, True), BackendFact(2, 100, True), BackendFact(3, 101, True),
              BackendFact(4, 102, True), BackendFact(5, 103, True), BackendFact(6, 103, False)),
    pools=(PoolFact(100, 10, 7, "p10/a"), PoolFact(101, 11, 7, "p11/a"), PoolFact(102, 20, 7, "p20/a"),
           PoolFact(103, 10, 8, "p10/b")),
    pops=(PopFact(10, 1, "p10", in_dns=True, may_announce=True), PopFact(11, 1, "p11", in_dns=True, may_announce=True),
          PopFact(20, 2, "p20", in_dns=True, may_announce=True)),
    region_names={1: "one", 2: "two"},
    vip_regions={7: frozenset({1, 2})},
    service_prefix={7: 70, 8: 70},
)
REGIONS = Rule(1, "two-regions", safety.MIN_DNS_REGIONS, 2, 7, "svc7")
POPS = Rule(2, "three-pops", safety.MIN_ANNOUNCING_POPS, 3, 70, "prefix70")


def test_a_region_stays_in_dns_while_one_of_its_pops_serves() -> None:
    assert safety.breaches([REGIONS], FACTS, Move(pops_leaving=frozenset({10}))) == []
    [breach] = safety.breaches([REGIONS], FACTS, Move(pops_leaving=frozenset({10, 11})))
    assert (breach.before, breach.after) == (2, 1) and "taking away one" in breach.detail


def test_a_region_leaves_dns_when_its_last_backends_stop_taking_traffic() -> None:
    [breach] = safety.breaches([REGIONS], FACTS, Move(backends=frozenset({4})))
    assert breach.after == 1 and "(one)" in breach.detail


def test_a_pop_announces_only_while_every_service_of_the_prefix_has_a_backend_there() -> None:
    # Backend 5 is the only serving one of service 8 at pop 10: without it pop 10 withdraws the prefix.
    [breach] = safety.breaches([POPS], FACTS, Move(backends=frozenset({5})))
    assert (breach.before, breach.after) == (3, 2) and "taking away p10" in breach.detail
    assert safety.breaches([POPS], FACTS, Move(backends=frozenset({1}))) == []
    assert safety.breaches([POPS], FACTS, Move(pops_withdrawn=frozenset({20})))[0].after == 2


def test_a_share_is_rounded_up_and_counts_backends_already_out() -> None:
    third = Rule(3, "a-third", safety.MAX_POOL_OUT_PERCENT, 33, None)
    # Pool 103 has backend 6 out already (1 of 2 = 50%): taking 5 makes it 100%.
    [breach] = safety.breaches([third], FACTS, Move(backends=frozenset({5})))
    assert (breach.before, breach.after) == (50, 100)
    half = Rule(4, "half", safety.MAX_POOL_OUT_PERCENT, 50, 100)
    assert safety.breaches([half], FACTS, Move(backends=frozenset({1}))) == []
    assert safety.breaches([half], FACTS, Move(backends=frozenset({1, 2})))[0].after == 100


def test_a_broken_rule_refuses_only_what_makes_it_worse() -> None:
    four = Rule(5, "four-pops", safety.MIN_ANNOUNCING_POPS, 4, 70)
    assert safety.breaches([four], FACTS, Move()) == []
    assert safety.breaches([four], FACTS, Move(backends=frozenset({1}))) == []
    assert safety.breaches([four], FACTS, Move(pops_leaving=frozenset({11})))[0].after == 2


def test_a_site_leaving_is_not_a_pools_share() -> None:
    none_out = Rule(6, "none-out", safety.MAX_POOL_OUT_PERCENT, 1, None)
    assert safety.breaches([none_out], FACTS, Move(pops_leaving=frozenset({10}))) == []


def test_steerctl_treats_a_safety_rule_like_the_guard_exit_3_and_says_which_rule() -> None:
    from steering.cli import EXIT_GUARD
    from steering.cli.client import GuardRefused, api_error
    from steering.cli.output import error_lines

    body = {"code": "safety_rule", "detail": "Breaks safety rule(s): two-regions: ...", "rules": ["two-regions"],
            "impact": {"verdict": "safe", "basis": "configured", "explain": "x", "moved_rps": 0,
                       "safety_rules": [{"rule": "two-regions", "detail": "two-regions: at least 2 region(s)"}]}}
    refused = api_error(409, body)
    assert isinstance(refused, GuardRefused) and refused.exit_code == EXIT_GUARD
    lines = error_lines(refused)
    assert lines[0].startswith("refused by a safety rule (safety_rule)")
    assert "breaks safety rule two-regions: two-regions: at least 2 region(s)" in lines
