"""The GSLB snapshot from the DB (healthy capacity per service and region) and the remote-backend app."""

from __future__ import annotations

import json
import random

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from steering.gslb.app import RemoteBackendApp, SnapshotHolder
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
    assert json.loads(app.handle(b"not json")) == {"result": False}
    assert json.loads(app.handle(b"[1, 2]")) == {"result": False}


def test_no_snapshot_yet_answers_false_rather_than_nothing():
    app = RemoteBackendApp(SnapshotHolder(), AnswerCounter())
    assert _call(app, "lookup", qname="api.example.net.", qtype="A") is False


@pytest.fixture
def version_key():
    from steering.services.effects import VERSION_KEY, _redis

    saved = _redis().get(VERSION_KEY)
    yield VERSION_KEY
    if saved is None:
        _redis().delete(VERSION_KEY)
    else:
        _redis().set(VERSION_KEY, saved)


def test_the_refresher_rebuilds_when_the_version_moves_and_beats_every_tick_it_is_asked(monkeypatch, version_key):
    from steering.gslb import server
    from steering.gslb.counters import HEARTBEAT_KEY, KEY_PREFIX, read_answers
    from steering.services.effects import _redis

    # The test's DB transaction must stay open: the server closes stale connections, not ours.
    monkeypatch.setattr(server, "close_old_connections", lambda: None)
    client = _redis()
    client.set(version_key, 41)
    svc, eu, us, _ = two_regions()
    holder, counter = SnapshotHolder(), AnswerCounter()
    refresher = server.Refresher(holder, counter)
    refresher.tick(client, beat=False)
    first = holder.current
    assert first is not None and first.version == 41 and "api.example.net." in first.services
    refresher.tick(client, beat=False)
    assert holder.current is first  # same version: no rebuild, no DB work
    client.set(version_key, 42)
    refresher.tick(client, beat=False)
    assert holder.current is not first and holder.current.version == 42
    client.delete(HEARTBEAT_KEY)
    counter.add(svc.pk, (eu.pk,))
    refresher.tick(client, beat=True)
    assert client.get(HEARTBEAT_KEY) is not None
    body = read_answers(client)
    client.delete(HEARTBEAT_KEY, *client.scan_iter(match=f"{KEY_PREFIX}*"))  # later tests see no GSLB server
    assert body["connected"] is True and body["services"][str(svc.pk)]["regions"][str(eu.pk)]["answers"] >= 1
