"""The GSLB snapshot from the DB (healthy capacity per service and region), its wire form as the
agent receives it, and the remote-backend app."""

from __future__ import annotations

import ipaddress
import json
import random

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from steering.gslb.app import BadRequest, RemoteBackendApp, SnapshotHolder
from steering.gslb.counters import AnswerCounter
from steering.gslb.snapshot import build_from_db, healthy_regions
from tests import factories as f

pytestmark = pytest.mark.django_db


def two_regions():
    svc = f.service(fqdn="api.example.net")
    eu, us = f.region(slug="eu"), f.region(slug="us")
    pools = {}
    for region in (eu, us):
        pools[region.slug] = f.pool(f.pop(region), svc)
        f.backend(pools[region.slug])
        f.vip(svc, region, address="192.0.2.10" if region is eu else "192.0.2.20")
    return svc, eu, us, pools


def test_a_region_with_a_backend_of_positive_effective_weight_is_healthy():
    svc, eu, us, _ = two_regions()
    assert healthy_regions()[svc.pk] == {eu.pk, us.pk}


@pytest.mark.parametrize("change", [
    {"admin_state": "draining", "drain_deadline": "2030-01-01T00:00:00Z"},
    {"admin_state": "maint"},
    {"health": "down"},
    {"weight": 0},
])
def test_a_region_whose_backends_take_nothing_new_drops_out(change):
    svc, eu, us, pools = two_regions()
    pools["eu"].backends.update(**change)
    assert healthy_regions().get(svc.pk) == {us.pk}


def test_down_backends_in_a_pool_in_panic_keep_their_region():
    svc, eu, us, pools = two_regions()
    pools["eu"].backends.update(health="down")
    type(pools["eu"]).objects.filter(pk=pools["eu"].pk).update(in_panic=True)
    assert healthy_regions()[svc.pk] == {eu.pk, us.pk}


@pytest.mark.parametrize("level", ["pop", "region"])
def test_admin_state_of_the_pop_or_region_takes_the_region_out(level):
    svc, eu, us, pools = two_regions()
    obj = pools["eu"].pop if level == "pop" else eu
    type(obj).objects.filter(pk=obj.pk).update(admin_state="maint")
    assert healthy_regions().get(svc.pk) == {us.pk}


def test_the_snapshot_answers_from_the_db_state():
    svc, eu, us, pools = two_regions()
    pools["us"].backends.update(health="down")
    f.client_network(eu, cidr="198.51.100.0/24")
    snap = build_from_db(12)
    assert snap.version == 12 and set(snap.zones) == {"example.net."}
    assert snap.zones["example.net."].serial == 12
    assert snap.services["api.example.net."].healthy_regions == {eu.pk}
    assert snap.geo.size == 1


def _call(app: RemoteBackendApp, method: str, **params) -> object:
    return json.loads(app.handle(json.dumps({"method": method, "parameters": params}).encode()))["result"]


def test_the_remote_backend_protocol_without_any_db_query_per_lookup():
    svc, eu, us, _ = two_regions()
    counter = AnswerCounter()
    app = RemoteBackendApp(SnapshotHolder(build_from_db(3)), counter, rng=random.Random(5))
    assert _call(app, "initialize", path="x") is True
    with CaptureQueriesContext(connection) as queries:
        records = _call(app, "lookup", qname="api.example.net.", qtype="ANY", remote="127.0.0.1",
                        **{"real-remote": "127.0.0.1/32", "zone-id": 1})
    assert len(queries) == 0
    assert len(records) == 1 and records[0]["qtype"] == "A" and records[0]["content"] in {"192.0.2.10", "192.0.2.20"}
    assert records[0]["qname"] == "api.example.net." and records[0]["ttl"] == svc.ttl and records[0]["auth"] == 1
    assert sum(counter.take().values()) == 1
    soa = _call(app, "lookup", qname="example.net.", qtype="SOA", **{"zone-id": -1})
    assert soa[0]["qtype"] == "SOA" and soa[0]["domain_id"] == 1
    assert _call(app, "lookup", qname="nothing.example.net.", qtype="ANY") == []
    assert _call(app, "getAllDomains", include_disabled=True)[0]["zone"] == "example.net."
    assert _call(app, "getDomainInfo", name="example.net.")["kind"] == "native"
    for unsupported in ("getAllDomainMetadata", "getDomainMetadata", "getDomainKeys", "list", "nonsense"):
        assert _call(app, unsupported, name="example.net.") is False
    for malformed in (b"not json", b"[1, 2]", b'{"parameters": {}}', b'{"method": "lookup", "parameters": [1]}',
                      b'{"method": "lookup", "parameters": {"qname": 7}}', b"\xff\xfe", b"[" * 100_000):
        with pytest.raises(BadRequest):
            app.handle(malformed)


def test_no_snapshot_yet_answers_false_rather_than_nothing():
    app = RemoteBackendApp(SnapshotHolder(), AnswerCounter())
    assert _call(app, "lookup", qname="api.example.net.", qtype="A") is False


def test_the_agent_builds_the_same_answers_from_the_wire_form_as_from_the_db():
    """What the control plane sends (GET /api/v1/agent/desired/?layer=dns) is all the agent needs."""
    from steering.agents.contract import Desired
    from steering.agents.gslb import GslbAgent
    from steering.dataplane.desired import desired_document

    svc, eu, us, pools = two_regions()
    pools["us"].backends.update(health="down")
    f.client_network(eu, cidr="198.51.100.0/24")
    document = json.loads(json.dumps(desired_document("dns", None)))  # through JSON, as on the wire
    holder = SnapshotHolder()
    agent = GslbAgent(None, None, None, holder, AnswerCounter())  # type: ignore[arg-type]  (apply needs none)
    agent.apply(Desired.from_dict(document))
    wire, db = holder.current, build_from_db(document["version"])
    assert wire is not None and wire.version == db.version == document["version"]
    assert wire.services == db.services and wire.zones == db.zones
    assert wire.geo.match(ipaddress.ip_address("198.51.100.7")) == (eu.pk, 24)
