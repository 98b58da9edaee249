"""Which PoPs' local/anycast desired state a change can move: waiting agents of the others are
told "nothing for you" without a rebuild (a DNS-only change moves none; None means possibly all)."""

from __future__ import annotations

from typing import Any

import pytest

from steering.models import VIP, Monitor, Region, Service
from steering.services import topology
from steering.services.audit import ChangeSet
from steering.services.context import Actor
from steering.services.effects import affected_pops
from tests import factories as f

pytestmark = pytest.mark.django_db
ME = Actor.system("test")


def pops_moved_by(capture: Any, edit: Any) -> list[int] | None:
    """The affected PoPs of the change `edit` makes (its ChangeSet's deltas, as publishing sees them)."""
    with capture(execute=False) as callbacks:
        edit()
    [change_set] = [c.__self__ for c in callbacks if isinstance(getattr(c, "__self__", None), ChangeSet)]
    return affected_pops(change_set.deltas)


@pytest.fixture
def world() -> dict[str, Any]:
    west, east = f.region(), f.region()
    fra, lhr, iad = f.pop(west), f.pop(west), f.pop(east)
    service = f.service()
    for pop in (fra, lhr, iad):
        f.fleet(1, pop=pop, service=service)
    return {"west": west, "fra": fra, "lhr": lhr, "iad": iad, "service": service,
            "vip": f.vip(service, west, address="192.0.2.10")}


def test_a_dns_only_field_of_a_service_moves_no_pop_and_its_protocol_moves_all(world: dict[str, Any], django_capture_on_commit_callbacks: Any) -> None:
    capture = django_capture_on_commit_callbacks
    service = Service.objects.get(pk=world["service"].pk)
    assert pops_moved_by(capture, lambda: topology.do_update(service, {"ttl": 120}, actor=ME)) == []
    service = Service.objects.get(pk=service.pk)
    assert pops_moved_by(capture, lambda: topology.do_update(service, {"protocol": "tcp"}, actor=ME)) is None


def test_a_vip_moves_the_pops_of_its_region_unless_it_changes_region(world: dict[str, Any], django_capture_on_commit_callbacks: Any) -> None:
    capture = django_capture_on_commit_callbacks
    west_pops = sorted([world["fra"].pk, world["lhr"].pk])
    vip = VIP.objects.get(pk=world["vip"].pk)
    assert pops_moved_by(capture, lambda: topology.do_update(vip, {"weight": 50}, actor=ME)) == west_pops
    vip = VIP.objects.get(pk=vip.pk)
    east = Region.objects.exclude(pk=world["west"].pk).first()
    assert pops_moved_by(capture, lambda: topology.do_update(vip, {"region": east}, actor=ME)) is None


def test_client_networks_monitors_and_rules_move_no_pop_and_a_backend_moves_its_own(world: dict[str, Any], django_capture_on_commit_callbacks: Any) -> None:
    capture = django_capture_on_commit_callbacks
    assert pops_moved_by(capture, lambda: topology.do_create(
        type(f.client_network(world["west"])), {"cidr": "198.18.9.0/24", "region": world["west"]}, actor=ME)) == []
    monitor = Monitor.objects.create(slug="m", kind="tcp")
    assert pops_moved_by(capture, lambda: topology.do_update(monitor, {"rise": 3}, actor=ME)) == []
    backend = world["fra"].pools.first().backends.first()
    assert pops_moved_by(capture, lambda: topology.do_update(backend, {"port": 8081}, actor=ME)) == [world["fra"].pk]
    region = Region.objects.get(pk=world["west"].pk)
    assert pops_moved_by(capture, lambda: topology.do_update(region, {"name": "West"}, actor=ME)) == sorted(
        [world["fra"].pk, world["lhr"].pk])
