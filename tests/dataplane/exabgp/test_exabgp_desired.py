"""Which prefixes a PoP should announce: the pure decision, then its database wrapper."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from steering.dataplane.exabgp.desired import PopFacts, ServiceFacts, decide, normalise_prefix, sort_prefixes
from steering.models import Pool, PoP
from steering.readmodels.announcements import desired_for, managed_prefixes
from tests import factories as f

API = ServiceFacts("api", "198.51.100.0/24", usable_backends=3, backends=4)
STATIC = ServiceFacts("static", "203.0.113.0/24", usable_backends=2, backends=2)


def pop(**kw: object) -> PopFacts:
    return PopFacts(**{"slug": "bom1", "region": "ap-south", "services": (API, STATIC), **kw})  # type: ignore[arg-type]


# --- pure --------------------------------------------------------------------------------------

def test_a_healthy_pop_announces_every_prefix_it_serves() -> None:
    d = decide(pop())
    assert d.desired == ("198.51.100.0/24", "203.0.113.0/24")
    assert d.reason == "announcing: healthy backends for api; healthy backends for static"
    assert [p.announce for p in d.prefixes] == [True, True]
    assert d.withdrawn == ()


@pytest.mark.parametrize(("facts", "reason"), [
    ({"announce": "withdraw"}, "operator withdrew"),
    ({"admin_state": "maint"}, "PoP in maintenance"),
    ({"admin_state": "drained"}, "PoP drained"),
    ({"region_admin_state": "maint"}, "region ap-south in maintenance"),
    ({"region_admin_state": "drained", "region": ""}, "region drained"),
])
def test_a_site_out_of_service_withdraws_everything_and_says_why(facts: dict[str, str], reason: str) -> None:
    d = decide(pop(**facts))
    assert d.desired == ()
    assert d.reason == reason
    assert {p.reason for p in d.prefixes} == {reason}
    assert d.withdrawn == ("198.51.100.0/24", "203.0.113.0/24")


@pytest.mark.parametrize("facts", [{"admin_state": "draining"}, {"region_admin_state": "draining"}])
def test_a_draining_site_keeps_announcing_while_its_backends_serve(facts: dict[str, str]) -> None:
    # A layered drain withdraws anycast as its own step, after DNS: "draining" alone must not.
    d = decide(pop(**facts))
    assert d.desired == ("198.51.100.0/24", "203.0.113.0/24")


def test_a_draining_site_withdraws_once_its_backends_stop_taking_traffic() -> None:
    gone = (ServiceFacts("api", "198.51.100.0/24", usable_backends=0, backends=4),
            ServiceFacts("static", "203.0.113.0/24", usable_backends=0, backends=2))
    assert decide(pop(admin_state="draining", services=gone)).desired == ()


def test_the_operators_withdrawal_wins_over_other_reasons() -> None:
    assert decide(pop(announce="withdraw", admin_state="maint")).reason == "operator withdrew"


def test_a_service_without_healthy_backends_withdraws_only_its_prefix() -> None:
    d = decide(pop(services=(ServiceFacts("api", "198.51.100.0/24", usable_backends=0, backends=4), STATIC)))
    assert d.desired == ("203.0.113.0/24",)
    assert d.reason == "no healthy backends for api (198.51.100.0/24); still announcing 203.0.113.0/24"
    assert d.prefixes[0].reason == "no healthy backends for api"


def test_the_only_service_without_backends_gives_the_plain_reason() -> None:
    d = decide(pop(services=(ServiceFacts("api", "198.51.100.0/24", usable_backends=0),)))
    assert d.desired == () and d.reason == "no healthy backends for api"


def test_a_shared_prefix_needs_every_service_on_it_healthy() -> None:
    # Packets land wherever the prefix is announced, whatever service they are for.
    web = ServiceFacts("web", "198.51.100.0/24", usable_backends=2)
    broken = ServiceFacts("api", "198.51.100.0/24", usable_backends=0)
    d = decide(pop(services=(web, broken)))
    assert d.desired == ()
    assert d.prefixes[0].services == ("api", "web")
    assert d.reason == "no healthy backends for api"
    assert decide(pop(services=(web, ServiceFacts("api", "198.51.100.0/24", 1)))).desired == ("198.51.100.0/24",)


def test_a_pop_without_anycast_services_announces_nothing() -> None:
    d = decide(pop(services=()))
    assert d == decide(pop(services=(), announce="withdraw"))
    assert d.desired == () and d.reason == "no anycast service has pools here"


def test_prefixes_are_canonical_and_sorted() -> None:
    assert normalise_prefix(" 198.51.100.7/24 ") == "198.51.100.0/24"
    with pytest.raises(ValueError):
        normalise_prefix("not-a-prefix")
    assert sort_prefixes(["203.0.113.0/24", "2001:db8::/32", "198.51.100.0/24", "198.51.100.0/24"]) == (
        "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
    d = decide(pop(services=(ServiceFacts("a", "203.0.113.9/24", 1), ServiceFacts("b", "198.51.100.0/24", 1))))
    assert d.desired == ("198.51.100.0/24", "203.0.113.0/24")


# --- from the database ---------------------------------------------------------------------------

def anycast_pop(**pop_kw: object) -> tuple[PoP, Pool]:
    svc = f.service(slug="api", anycast_prefix=f.prefix(prefix="198.51.100.0/24"))
    p = f.pop(**pop_kw)
    pool = f.pool(p, svc)
    for _ in range(2):
        f.backend(pool, health="up")
    return p, pool


def test_it_reads_healthy_capacity_through_the_effective_weight(db: object) -> None:
    p, pool = anycast_pop()
    f.pool(p, f.service())   # a service without a prefix does not count
    _, decision = desired_for([p])[p.pk]
    assert decision.desired == ("198.51.100.0/24",)

    pool.backends.update(admin_state="maint")
    assert desired_for([p])[p.pk][1].reason == "no healthy backends for api"

    pool.backends.update(admin_state="ready", health="down")
    assert desired_for([p])[p.pk][1].desired == ()
    Pool.objects.filter(pk=pool.pk).update(in_panic=True)   # most of it looks down: kept in service
    assert desired_for([p])[p.pk][1].desired == ("198.51.100.0/24",)


def test_a_backend_in_slow_start_counts_as_capacity(db: object) -> None:
    p, pool = anycast_pop()
    pool.backends.update(slow_start_seconds=300, ready_since=timezone.now() - datetime.timedelta(seconds=1))
    assert desired_for([p])[p.pk][1].desired == ("198.51.100.0/24",)


def test_it_sums_the_pools_of_one_service(db: object) -> None:
    p, pool = anycast_pop()
    pool.backends.update(admin_state="maint")
    second = f.pool(p, pool.service)
    f.backend(second)
    assert desired_for([p])[p.pk][1].desired == ("198.51.100.0/24",)


def test_it_reads_the_pop_and_region_states(db: object) -> None:
    p, _ = anycast_pop()
    PoP.objects.filter(pk=p.pk).update(announce="withdraw")
    assert desired_for()[p.pk][1].reason == "operator withdrew"
    PoP.objects.filter(pk=p.pk).update(announce="announce")
    p.region.admin_state = "maint"
    p.region.save()
    assert desired_for()[p.pk][1].reason == f"region {p.region.slug} in maintenance"


def test_the_managed_prefixes_are_every_known_prefix(db: object) -> None:
    f.prefix(prefix="203.0.113.0/24")
    f.prefix(prefix="198.51.100.0/24")
    assert managed_prefixes() == ["198.51.100.0/24", "203.0.113.0/24"]
