"""`manage.py seed_demo`: a believable fleet, on loopback, audited as system:demo, loaded once."""

from __future__ import annotations

import io
import ipaddress

import pytest
from django.core.management import call_command
from django.db import models

from steering.models import VIP, AnycastPrefix, Backend, Change, ClientNetwork, Monitor, Pool, PoP, Region, Service

pytestmark = pytest.mark.django_db

DOC_RANGES = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
SEEDED_MODELS: list[type[models.Model]] = [Region, PoP, AnycastPrefix, Service, VIP, ClientNetwork, Monitor, Pool, Backend]


@pytest.fixture
def demo() -> None:
    call_command("seed_demo", stdout=io.StringIO())


def in_doc_range(text: str) -> bool:
    net = ipaddress.ip_network(text, strict=True)
    return any(net.version == r.version and net.subnet_of(r) for r in DOC_RANGES)


def test_it_creates_regions_and_pops_at_real_places(demo):
    regions = list(Region.objects.all())
    pops = list(PoP.objects.select_related("region"))
    assert len(regions) >= 3
    assert len(pops) >= 6
    for place in [*regions, *pops]:
        assert -90 <= place.latitude <= 90 and -180 <= place.longitude <= 180
        assert (place.latitude, place.longitude) != (0.0, 0.0)
    assert len({(p.latitude, p.longitude) for p in pops}) == len(pops)
    assert len({(r.latitude, r.longitude) for r in regions}) == len(regions)
    assert all(p.city for p in pops)
    # Every region has somewhere to serve from.
    assert {p.region_id for p in pops} == {r.pk for r in regions}
    # Mumbai really is in Mumbai (a smoke check that coordinates are not invented).
    bom = next(p for p in pops if p.city == "Mumbai")
    assert abs(bom.latitude - 19.08) < 0.5 and abs(bom.longitude - 72.88) < 0.5


def test_it_creates_exactly_two_services(demo):
    assert Service.objects.count() == 2
    assert Service.objects.filter(slug="api").exists()


def test_it_routes_payments_to_its_own_pool_in_every_pop(demo):
    api = Service.objects.get(slug="api")
    for pop in PoP.objects.all():
        payments = Pool.objects.filter(pop=pop, service=api, match_path_prefix="/payments")
        assert payments.count() == 1, pop.slug
        pci = payments.get()
        assert pci.mode == "l7"
        # It must win over the catch-all pool of the same service: lower priority matches first.
        others = Pool.objects.filter(pop=pop, service=api).exclude(pk=pci.pk)
        assert all(pci.rule_priority < o.rule_priority for o in others)


def test_it_keeps_anycast_prefixes_and_vips_in_documentation_ranges(demo):
    prefixes = list(AnycastPrefix.objects.values_list("prefix", flat=True))
    assert prefixes
    assert all(in_doc_range(p) for p in prefixes), prefixes
    assert Service.objects.filter(anycast_prefix__isnull=False).count() == 2
    vips = list(VIP.objects.values_list("address", flat=True))
    assert vips
    assert all(in_doc_range(f"{a}/32") for a in vips), vips


def test_it_puts_every_backend_on_loopback_with_capacity(demo):
    backends = list(Backend.objects.all())
    assert len(backends) >= 40
    for b in backends:
        assert b.capacity_rps > 0, b.path
        assert ipaddress.ip_address(b.address) in LOOPBACK, b.address
    assert len({(b.address, b.port) for b in backends}) == len(backends)


def test_it_seeds_pools_that_carry_less_than_their_capacity(demo):
    """The demo starts healthy: every pool's expected load fits in its backends' capacity."""
    for pool in Pool.objects.prefetch_related("backends"):
        capacity = sum(b.capacity_rps for b in pool.backends.all())
        assert 0 < pool.expected_rps < capacity, str(pool)


def test_it_audits_every_object_it_creates_as_system_demo(demo):
    for model in SEEDED_MODELS:
        kind = model._meta.model_name
        created = set(model.objects.values_list("pk", flat=True))
        assert created, kind
        audited = set(Change.objects.filter(object_type=kind, action=f"{kind}.create", actor_name="system:demo",
                                             source="system", actor__isnull=True).values_list("object_id", flat=True))
        assert audited == created, kind
    assert not Change.objects.filter(actor_name="system:demo").exclude(action__endswith=".create").exists()


def test_it_does_not_duplicate_when_run_twice(demo):
    counts = {m: m.objects.count() for m in SEEDED_MODELS}
    changes = Change.objects.count()
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    assert {m: m.objects.count() for m in SEEDED_MODELS} == counts
    assert Change.objects.count() == changes
    assert "exists" in out.getvalue()
