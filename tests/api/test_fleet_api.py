"""Fleet as code through the API: export, schema, plan, apply (guarded, audited, If-Match), drift."""

from __future__ import annotations

import copy
import io
from typing import Any

import pytest
import yaml
from django.core.management import call_command
from rest_framework.test import APIClient

from steering.choices import OperationKind
from steering.fleetfile.normalise import field_names, schema
from steering.models import (
    VIP,
    Backend,
    Change,
    ClientNetwork,
    Monitor,
    Operation,
    Pool,
    PoP,
    Region,
    SafetyRule,
    Service,
)
from steering.services.fleet import MODELS
from tests import factories as f
from tests.conftest import make_user, token_client

pytestmark = pytest.mark.django_db

URL = "/api/v1/fleet"


def every_object_type() -> None:
    """One of everything, with values off the defaults, references of every kind (pools backing each other)."""
    eu = f.region(slug="eu-west", name="Europe", latitude=50.5, longitude=4.5)
    us = f.region(slug="us-east", name="US East", latitude=39.5, longitude=-76.0)
    fra = f.pop(eu, slug="fra1", name="Frankfurt 1", city="Frankfurt", latitude=50.1109, longitude=8.6821,
                capacity_rps=9000)
    iad = f.pop(us, slug="iad1", name="Ashburn 1", city="Ashburn", latitude=39.0438, longitude=-77.4874)
    prefix = f.prefix(prefix="198.51.100.0/24", description="api anycast")
    api = f.service(slug="api", fqdn="api.example.net", dns_policy="failover", ttl=60, anycast_prefix=prefix)
    web = f.service(slug="web", fqdn="web.example.net", protocol="tcp", port=8443)
    f.vip(api, eu, address="192.0.2.30", weight=80, priority=2)
    f.vip(api, us, address="2001:db8::40", enabled=False)
    f.vip(web, us, address="192.0.2.41")
    f.client_network(eu, cidr="198.18.2.0/24", description="resolvers in Europe")
    mon = f.monitor(slug="http-health", kind="https", path="/healthz?full=1", host_header="api.example.net",
                    expected_status="200", interval_seconds=5.0, timeout_seconds=2.5, rise=3, fall=4)
    main = f.pool(fra, api, slug="api-web", monitor=mon, expected_rps=1200, algorithm="leastconn",
                  match_host="api.example.net", retry_on="conn-failure 503", outlier_max_ejected_percent=20)
    pci = f.pool(fra, api, slug="api-pci", match_path_prefix="/payments", rule_priority=10, backup_pool=main)
    Pool.objects.filter(pk=main.pk).update(backup_pool=pci)
    l4 = f.pool(iad, web, slug="web-l4", mode="l4", observe="off", retries=0)
    f.backend(main, name="api-1", address="127.1.1.11", port=8443, capacity_rps=800, slow_start_seconds=30,
              version="1.4.1")
    f.backend(main, name="api-2", address="127.1.1.12", port=8443, capacity_rps=800, weight=50)
    f.backend(pci, name="pci-1", address="127.1.1.21", port=8443, backup=True)
    f.backend(l4, name="web-1", address="127.1.2.11", port=9000)
    SafetyRule.objects.create(slug="api-two-regions", kind="min_dns_regions", service=api, threshold=2,
                              description="never fewer than two regions answer for api")
    SafetyRule.objects.create(slug="anycast-two-pops", kind="min_announcing_pops", prefix=prefix, threshold=2,
                              enabled=False)
    SafetyRule.objects.create(slug="api-web-half", kind="max_pool_out_percent", pool=main, threshold=50)
    SafetyRule.objects.create(slug="any-pool-80", kind="max_pool_out_percent", threshold=80)


def export(api: APIClient) -> dict[str, Any]:
    response = api.get(f"{URL}/export/")
    assert response.status_code == 200, response.content
    return dict(response.json())


def plan(api: APIClient, document: Any) -> Any:
    return api.post(f"{URL}/plan/", {"fleet": document}, format="json")


def apply(api: APIClient, document: Any, *, fingerprint: str | None = None, **body: Any) -> Any:
    headers = {"HTTP_IF_MATCH": f'"{fingerprint}"'} if fingerprint else {}
    return api.post(f"{URL}/apply/", {"fleet": document, "reason": "fleet as code", **body}, format="json", **headers)


def topology_rows() -> dict[str, list[tuple[int, int]]]:
    return {kind: sorted(model._default_manager.values_list("pk", "revision")) for kind, model in MODELS.items()}


def last_change_id() -> int:
    return Change.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def find(document: dict[str, Any], section: str, **match: Any) -> dict[str, Any]:
    return next(o for o in document[section] if all(o.get(k) == v for k, v in match.items()))


# --- export and schema ------------------------------------------------------------------------


def test_export_is_desired_config_named_by_slug_in_yaml_too(admin_api: APIClient, viewer_api: APIClient) -> None:
    every_object_type()
    Backend.objects.filter(name="api-1").update(health="down", admin_state="drained")
    document = export(viewer_api)
    assert list(document) == ["version", "regions", "pops", "prefixes", "services", "vips", "client_networks",
                              "monitors", "pools", "safety_rules"]
    keys = {k for section in document.values() if isinstance(section, list) for o in section for k in o}
    keys |= {k for p in document["pools"] for b in p["backends"] for k in b}
    assert not keys & {"id", "health", "admin_state", "revision", "created_at", "updated_at", "in_panic", "announce",
                       "drain_deadline", "ready_since", "ejection_count", "operation", "outlier_panic"}
    pool = find(document, "pools", slug="api-web")
    assert (pool["pop"], pool["service"], pool["monitor"], pool["backup_pool"]) == ("fra1", "api", "http-health", "api-pci")
    assert [b["name"] for b in pool["backends"]] == ["api-1", "api-2"]
    assert find(document, "services", slug="api")["anycast_prefix"] == "198.51.100.0/24"
    assert find(document, "vips", address="2001:db8::40")["enabled"] is False
    assert find(document, "safety_rules", slug="api-web-half") == {
        "slug": "api-web-half", "kind": "max_pool_out_percent", "service": None, "prefix": None, "pop": "fra1",
        "pool": "api-web", "threshold": 50, "enabled": True, "description": ""}
    assert find(document, "safety_rules", slug="anycast-two-pops")["prefix"] == "198.51.100.0/24"
    assert (find(document, "safety_rules", slug="any-pool-80")["pop"], find(document, "safety_rules", slug="any-pool-80")["pool"]) == (None, None)
    response = viewer_api.get(f"{URL}/export/", HTTP_ACCEPT="application/yaml")
    assert response.status_code == 200 and response["Content-Type"].startswith("application/yaml")
    assert response.content.decode().startswith("# Steering fleet file")
    assert yaml.safe_load(response.content) == document
    assert response["ETag"] == f'"{plan(viewer_api, document).json()["fingerprint"]}"'


def test_export_errors_are_json_even_when_yaml_was_asked_for(anon_api: APIClient) -> None:
    response = anon_api.get(f"{URL}/export/", HTTP_ACCEPT="application/yaml")
    assert response.status_code in (401, 403)
    assert response["Content-Type"].startswith("application/json") and "code" in response.json()


def test_schema_is_served_and_matches_the_models(viewer_api: APIClient) -> None:
    response = viewer_api.get(f"{URL}/schema/")
    assert response.status_code == 200 and response.json() == schema()
    # Every editable field of each model is in the file with the model's default, and nothing else is.
    from steering.api import serializers as s

    serializers = {"region": s.RegionSerializer, "prefix": s.AnycastPrefixSerializer, "monitor": s.MonitorSerializer,
                   "service": s.ServiceSerializer, "pop": s.PoPSerializer, "pool": s.PoolSerializer,
                   "vip": s.VIPSerializer, "client_network": s.ClientNetworkSerializer, "backend": s.BackendSerializer,
                   "safety_rule": s.SafetyRuleSerializer}
    for kind, serializer in serializers.items():
        writable = {n for n, fld in serializer().fields.items() if not fld.read_only} - ({"pool"} if kind == "backend" else set())
        writable |= {"pop"} if kind == "safety_rule" else set()  # a rule's pool is named by its PoP and slug
        assert set(field_names(kind)) == writable, kind
        props = schema()["$defs"][kind]["properties"]
        for name in field_names(kind):
            if (kind, name) == ("safety_rule", "pop"):
                continue
            model_field = MODELS[kind]._meta.get_field(name)
            if "default" in props[name] and not model_field.is_relation:
                assert props[name]["default"] == model_field.get_default(), (kind, name)
            elif not model_field.is_relation:
                assert not model_field.has_default(), (kind, name)


# --- roles ----------------------------------------------------------------------------------


def test_viewers_export_plan_and_see_drift_only_admins_apply(viewer_api: APIClient, operator_api: APIClient,
                                                             admin_api: APIClient, anon_api: APIClient) -> None:
    f.region(slug="eu-west")
    document = export(viewer_api)
    for api in (viewer_api, operator_api):
        assert plan(api, document).status_code == 200
        assert api.get(f"{URL}/drift/").status_code == 200
        assert apply(api, document).status_code == 403
    assert apply(admin_api, document).status_code == 200
    for path in ("export", "schema", "drift"):
        assert anon_api.get(f"{URL}/{path}/").status_code in (401, 403)
    assert plan(anon_api, document).status_code in (401, 403)
    agent = token_client(make_user("agent-owner", "admin"), role="agent")
    assert agent.get(f"{URL}/export/").status_code == 403


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("fleet", ["demo", "every_object_type"])
def test_export_then_apply_is_a_no_op(fleet: str, admin_api: APIClient) -> None:
    if fleet == "demo":
        call_command("seed_demo", stdout=io.StringIO())
    else:
        every_object_type()
    document = export(admin_api)
    text = admin_api.get(f"{URL}/export/", HTTP_ACCEPT="application/yaml").content.decode()
    before, changes_before = topology_rows(), last_change_id()
    for sent in (document, text):
        answer = plan(admin_api, sent).json()
        assert answer["changes"] == [] and answer["safe"] is True
        assert answer["fingerprint"] == answer["file_fingerprint"]
    response = apply(admin_api, text, fingerprint=answer["fingerprint"])
    assert response.status_code == 200, response.content
    op = Operation.objects.get(kind=OperationKind.FLEET_APPLY)
    assert op.status == "succeeded" and op.result["changes"] == 0
    assert topology_rows() == before
    # Only the apply itself is audited: no topology object changed.
    assert list(Change.objects.filter(pk__gt=changes_before).values_list("action", flat=True)) == ["fleet.apply"]
    assert export(admin_api) == document
    assert admin_api.get(f"{URL}/drift/").json()["state"] == "in_sync"


def test_a_fleet_built_from_nothing_by_one_apply(admin_api: APIClient) -> None:
    every_object_type()
    document = export(admin_api)
    # Empty the database of topology, then build it all back from the file.
    empty = {k: ([] if isinstance(v, list) else v) for k, v in document.items()}
    response = apply(admin_api, empty, force=True, force_reason="rebuilding the lab")
    assert response.status_code == 200, response.content
    assert all(not model._default_manager.exists() for model in MODELS.values())
    response = apply(admin_api, document)
    assert response.status_code == 200, response.content
    assert export(admin_api) == document
    main, pci = Pool.objects.get(slug="api-web"), Pool.objects.get(slug="api-pci")
    assert (main.backup_pool_id, pci.backup_pool_id) == (pci.pk, main.pk)  # created, then linked


# --- plan and apply ---------------------------------------------------------------------------


def test_plan_then_apply_creates_updates_deletes_in_one_audited_operation(admin_api: APIClient) -> None:
    every_object_type()
    document = export(admin_api)
    wanted = copy.deepcopy(document)
    main = find(wanted, "pools", slug="api-web")
    main["backends"][1]["weight"] = 80                     # api-2: 50 -> 80
    main["backends"].append({"name": "api-3", "address": "127.1.1.13", "port": 8443})
    wanted["monitors"][0]["rise"] = 5
    wanted["client_networks"] = []
    wanted["regions"].append({"slug": "ap-south", "name": "Asia Pacific (South)", "latitude": 17.0, "longitude": 77.0})
    answer = plan(admin_api, wanted).json()
    assert answer["summary"] == {"create": 2, "update": 2, "delete": 1}
    by_key = {(c["kind"], c["key"]): c for c in answer["changes"]}
    assert by_key["backend", "fra1/api-web/api-2"]["fields"] == {"weight": {"from": 50, "to": 80}}
    assert by_key["monitor", "http-health"]["fields"] == {"rise": {"from": 3, "to": 5}}
    assert by_key["client_network", "198.18.2.0/24"]["op"] == "delete"
    assert by_key["backend", "fra1/api-web/api-3"]["fields"]["port"] == {"from": None, "to": 8443}
    assert not any(c["reduces_capacity"] for c in answer["changes"])
    changes_before = last_change_id()
    response = apply(admin_api, wanted, fingerprint=answer["fingerprint"])
    assert response.status_code == 200, response.content
    op_json = response.json()["operation"]
    op = Operation.objects.get(pk=op_json["id"])
    assert (op.kind, op.status, op.reason) == ("fleet_apply", "succeeded", "fleet as code")
    assert op.result["fingerprint_after"] == answer["file_fingerprint"]
    rows = Change.objects.filter(pk__gt=changes_before).order_by("pk")
    assert [r.action for r in rows] == ["clientnetwork.delete", "region.create", "monitor.update",
                                        "backend.update", "backend.create", "fleet.apply"]
    # One request: one transaction, one request id, one reason; every row names the operation (the
    # audit of an object shows which apply wrote it), and the apply's own row is the operation's.
    assert {r.request_id for r in rows} == {op.request_id} and {r.reason for r in rows} == {"fleet as code"}
    assert {r.operation_id for r in rows} == {op.pk} and rows.last().object_id == op.pk
    assert Backend.objects.get(name="api-2").weight == 80 and Backend.objects.filter(name="api-3").exists()
    assert not ClientNetwork.objects.exists()
    assert plan(admin_api, wanted).json()["changes"] == []


def test_a_change_that_fails_half_way_changes_nothing(admin_api: APIClient) -> None:
    every_object_type()
    document = export(admin_api)
    wanted = copy.deepcopy(document)
    wanted["monitors"][0]["rise"] = 7
    find(wanted, "pools", slug="web-l4")["backends"] = []   # web-1 is draining: not deleted under its drain
    Backend.objects.filter(name="web-1").update(admin_state="draining", drain_deadline="2099-01-01T00:00:00Z")
    before, changes = topology_rows(), Change.objects.count()
    response = apply(admin_api, wanted, force=True, force_reason="test")
    assert response.status_code == 409 and response.json()["code"] == "operation_running"
    assert topology_rows() == before and Change.objects.count() == changes
    assert not Operation.objects.filter(kind="fleet_apply").exists()


def test_the_guard_refuses_what_takes_capacity_away_unless_forced(admin_api: APIClient) -> None:
    region = f.region(slug="ap-south")
    pop = f.pop(region, slug="bom1")
    pool = f.pool(pop, slug="api-web", expected_rps=1800)
    for i in (1, 2, 3):
        f.backend(pool, name=f"api-{i}", capacity_rps=1000)
    document = export(admin_api)
    wanted = copy.deepcopy(document)
    wanted["pools"][0]["backends"] = wanted["pools"][0]["backends"][:1]  # 1800 req/s onto one of 1000
    answer = plan(admin_api, wanted).json()
    assert answer["safe"] is False and answer["impact"]["verdict"] == "overload"
    assert [c["reduces_capacity"] for c in answer["changes"]] == [True, True]
    part = answer["impact"]["parts"][0]
    assert part["subject"].startswith("pool bom1/api-web") and part["receivers"][0]["overloaded"]
    before = topology_rows()
    refused = apply(admin_api, wanted)
    assert refused.status_code == 409 and refused.json()["code"] == "capacity_guard"
    assert refused.json()["impact"]["verdict"] == "overload"
    assert topology_rows() == before and not Operation.objects.exists()
    no_reason = apply(admin_api, wanted, force=True)
    assert no_reason.status_code == 400 and "force_reason" in no_reason.json()["errors"]
    forced = apply(admin_api, wanted, force=True, force_reason="decommissioning, load moves next week")
    assert forced.status_code == 200, forced.content
    op = Operation.objects.get(kind="fleet_apply")
    assert op.forced and op.params["force_reason"].startswith("decommissioning")
    assert Change.objects.get(action="fleet.apply").forced
    assert Backend.objects.count() == 1


def test_deleting_a_pop_whose_traffic_has_nowhere_to_go_is_an_outage(admin_api: APIClient) -> None:
    region = f.region(slug="ap-south")
    f.vip(f.service(slug="api"), region, address="192.0.2.10")
    pool = f.pool(f.pop(region, slug="bom1"), Service.objects.get(slug="api"), slug="api-web", expected_rps=500)
    f.backend(pool, capacity_rps=1000)
    wanted = export(admin_api)
    wanted["pops"], wanted["pools"] = [], []
    answer = plan(admin_api, wanted).json()
    assert [p["subject"] for p in answer["impact"]["parts"]] == ["PoP bom1 deleted"]
    assert answer["impact"]["verdict"] == "outage" and answer["impact"]["unplaced_rps"] == 500
    refused = apply(admin_api, wanted)
    assert refused.status_code == 409 and refused.json()["impact"]["verdict"] == "outage"
    assert PoP.objects.filter(slug="bom1").exists()


def test_replacing_backends_counts_the_new_ones(admin_api: APIClient) -> None:
    pool = f.pool(f.pop(f.region(), slug="bom1"), slug="api-web", expected_rps=1800)
    for i in (1, 2, 3):
        f.backend(pool, name=f"api-{i}", capacity_rps=1000, address=f"127.1.1.{i}")
    wanted = export(admin_api)
    wanted["pools"][0]["backends"] = [{"name": f"api-new-{i}", "address": f"127.1.1.{i}", "port": 8080,
                                       "capacity_rps": 1000} for i in (1, 2, 3)]
    answer = plan(admin_api, wanted).json()
    assert answer["safe"] is True, answer["impact"]
    assert apply(admin_api, wanted, fingerprint=answer["fingerprint"]).status_code == 200
    assert sorted(Backend.objects.values_list("name", flat=True)) == ["api-new-1", "api-new-2", "api-new-3"]


def test_disabling_a_vip_asks_where_dns_sends_that_region(admin_api: APIClient) -> None:
    eu, us = f.region(slug="eu-west", latitude=50.0, longitude=5.0), f.region(slug="us-east", latitude=39.0, longitude=-77.0)
    svc = f.service(slug="api")
    f.vip(svc, eu, address="192.0.2.30")
    f.vip(svc, us, address="192.0.2.40")
    for region, slug, load in ((eu, "fra1", 900), (us, "iad1", 900)):
        pool = f.pool(f.pop(region, slug=slug), svc, slug="api-web", expected_rps=load)
        f.backend(pool, capacity_rps=1000)
    wanted = export(admin_api)
    find(wanted, "vips", address="192.0.2.30")["enabled"] = False
    answer = plan(admin_api, wanted).json()
    part = answer["impact"]["parts"][0]
    assert part["subject"] == "DNS: api no longer answers with region eu-west"
    assert part["verdict"] == "overload" and answer["safe"] is False
    assert apply(admin_api, wanted).json()["code"] == "capacity_guard"
    assert VIP.objects.get(address="192.0.2.30").enabled


def test_stale_plans_are_refused_with_412(admin_api: APIClient) -> None:
    every_object_type()
    document = export(admin_api)
    fingerprint = plan(admin_api, document).json()["fingerprint"]
    # Someone edits the topology by hand after the plan.
    pop = PoP.objects.get(slug="fra1")
    assert admin_api.patch(f"/api/v1/pops/{pop.pk}/", {"city": "Frankfurt am Main"}, format="json").status_code == 200
    before = topology_rows()
    response = apply(admin_api, document, fingerprint=fingerprint)
    assert response.status_code == 412 and response.json()["code"] == "stale"
    assert response.json()["current_fingerprint"] != fingerprint
    assert topology_rows() == before and not Operation.objects.exists()
    assert apply(admin_api, document, fingerprint=response.json()["current_fingerprint"]).status_code == 200
    assert PoP.objects.get(slug="fra1").city == "Frankfurt"


def test_idempotency_key_makes_a_retried_apply_answer_the_same(admin_api: APIClient) -> None:
    f.region(slug="eu-west")
    wanted = export(admin_api)
    wanted["regions"].append({"slug": "us-east", "name": "US East", "latitude": 39.5, "longitude": -76.0})
    first = admin_api.post(f"{URL}/apply/", {"fleet": wanted, "reason": "r"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    again = admin_api.post(f"{URL}/apply/", {"fleet": wanted, "reason": "r"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == again.status_code == 200 and again["Idempotent-Replayed"] == "true"
    assert first.json() == again.json() and Operation.objects.count() == 1


# --- bad input ------------------------------------------------------------------------------


BAD_FILES = [
    ("version: 1\nregions: [\n", {"/"}),
    ("- just\n- a list\n", {"/"}),
    ("{}", {"/version", "/regions", "/pops", "/prefixes", "/services", "/vips", "/client_networks", "/monitors",
            "/pools"}),
]


@pytest.mark.parametrize(("text", "paths"), BAD_FILES)
def test_a_file_that_is_not_a_fleet_file_is_a_400_with_paths(text: str, paths: set[str], admin_api: APIClient) -> None:
    for response in (plan(admin_api, text), apply(admin_api, text)):
        assert response.status_code == 400, response.content
        assert set(response.json()["errors"]) == paths


def test_schema_errors_name_the_path_of_each_and_change_nothing(admin_api: APIClient) -> None:
    every_object_type()
    document = export(admin_api)
    bad = copy.deepcopy(document)
    pool_index = next(i for i, p in enumerate(bad["pools"]) if p["slug"] == "api-web")
    bad["pools"][pool_index]["backends"][0]["port"] = 70000
    bad["pools"][pool_index]["backends"][1]["colour"] = "blue"
    del bad["regions"][0]["name"]
    bad["pops"][0]["capacity_rps"] = "lots"
    before = topology_rows()
    for response in (plan(admin_api, bad), apply(admin_api, bad)):
        assert response.status_code == 400
        errors = response.json()["errors"]
        assert set(errors) == {f"/pools/{pool_index}/backends/0/port", f"/pools/{pool_index}/backends/1/colour",
                               "/regions/0/name", "/pops/0/capacity_rps"}
        assert errors[f"/pools/{pool_index}/backends/1/colour"] == ["Unknown field."]
        assert errors["/regions/0/name"] == ["This field is required."]
    assert topology_rows() == before and not Operation.objects.exists()


def test_references_and_rules_between_objects_are_checked_with_paths(admin_api: APIClient) -> None:
    every_object_type()
    bad = export(admin_api)
    bad["pops"][0]["region"] = "mars"
    bad["vips"].append(dict(bad["vips"][0]))                      # the same VIP twice
    i = next(i for i, p in enumerate(bad["pools"]) if p["slug"] == "web-l4")
    bad["pools"][i]["match_path_prefix"] = "/x"                   # L4 cannot match on a path
    j = next(i for i, p in enumerate(bad["pools"]) if p["slug"] == "api-pci")
    bad["pools"][j]["backup_pool"] = "web-l4"                     # another PoP
    errors = plan(admin_api, bad).json()["errors"]
    assert errors["/pops/0/region"] == ["No region 'mars' in this file (regions)."]
    assert f"/vips/{len(bad['vips']) - 1}" in errors
    assert f"/pools/{i}/mode" in errors and f"/pools/{j}/backup_pool" in errors


def test_model_validation_errors_point_into_the_file(admin_api: APIClient) -> None:
    every_object_type()
    bad = export(admin_api)
    i = next(i for i, p in enumerate(bad["pools"]) if p["slug"] == "api-web")
    bad["pools"][i]["backends"][0]["address"] = "10.9.9.9"       # outside the probe allowlist
    bad["pools"][i]["retry_on"] = "conn-failure sometimes"
    bad["services"][0]["fqdn"] = "not a name"
    before = topology_rows()
    for response in (plan(admin_api, bad), apply(admin_api, bad)):
        assert response.status_code == 400, response.content
        errors = response.json()["errors"]
        assert {f"/pools/{i}/backends/0/address", f"/pools/{i}/retry_on", "/services/0/fqdn"} <= set(errors)
    assert topology_rows() == before


@pytest.mark.parametrize("body", [{}, {"fleet": 3}, {"fleet": ["a"]}, {"fleet": "version: 1", "extra": 1}])
def test_malformed_requests_are_400(body: dict[str, Any], admin_api: APIClient) -> None:
    response = admin_api.post(f"{URL}/plan/", body, format="json")
    assert response.status_code == 400 and response.json()["code"] == "invalid"
    response = admin_api.post(f"{URL}/apply/", {**body, "reason": "r"}, format="json")
    assert response.status_code == 400
    assert admin_api.post(f"{URL}/apply/", {"fleet": export(admin_api)}, format="json").json()["errors"] == {
        "reason": ["This field is required."]}


# --- drift ----------------------------------------------------------------------------------


def test_drift_names_what_changed_by_hand_and_who(admin_api: APIClient, operator_api: APIClient) -> None:
    assert admin_api.get(f"{URL}/drift/").json()["state"] == "never_applied"
    every_object_type()
    document = export(admin_api)
    op = apply(admin_api, document).json()["operation"]
    assert admin_api.get(f"{URL}/drift/").json()["state"] == "in_sync"
    # By hand: an operator re-weights api-2 (the weight action), an admin removes a VIP and adds a region.
    api2 = Backend.objects.get(name="api-2")
    assert operator_api.post(f"/api/v1/backends/{api2.pk}/weight/", {"reason": "canary", "weight": 60},
                             format="json").status_code == 202
    operator_api.post(f"/api/v1/backends/{api2.pk}/drain/", {"reason": "deploy"}, format="json")  # not config
    vip = VIP.objects.get(address="192.0.2.41")
    assert admin_api.delete(f"/api/v1/vips/{vip.pk}/", HTTP_X_CHANGE_REASON="retire").status_code == 204
    assert admin_api.post("/api/v1/regions/", {"slug": "ap-south", "name": "South", "latitude": 1, "longitude": 2},
                          format="json").status_code == 201
    drift = admin_api.get(f"{URL}/drift/").json()
    assert drift["state"] == "drifted" and drift["operation"]["id"] == op["id"]
    by_key = {(d["kind"], d["key"]): d for d in drift["differences"]}
    assert set(by_key) == {("backend", "fra1/api-web/api-2"), ("vip", "web@us-east/192.0.2.41"), ("region", "ap-south")}
    weight = by_key["backend", "fra1/api-web/api-2"]
    assert weight["difference"] == "changed" and weight["fields"] == {"weight": {"file": 50, "live": 60}}
    # Who: the weight change, not the drain (which is not configuration).
    assert [(c["actor"], c["action"], c["reason"]) for c in weight["changed_by"]] == [
        ("otto-operator", "backend.weight", "canary")]
    removed = by_key["vip", "web@us-east/192.0.2.41"]
    assert removed["difference"] == "removed"
    assert [(c["actor"], c["action"], c["reason"]) for c in removed["changed_by"]] == [
        ("ada-admin", "vip.delete", "retire")]
    added = by_key["region", "ap-south"]
    assert added["difference"] == "added" and added["changed_by"][0]["action"] == "region.create"
    # Applying the file again puts it back and the drift is gone.
    Backend.objects.filter(pk=api2.pk).update(admin_state="ready", drain_deadline=None, operation=None)
    assert apply(admin_api, document).status_code == 200
    assert admin_api.get(f"{URL}/drift/").json()["state"] == "in_sync"
    assert Region.objects.filter(slug="ap-south").count() == 0 and Service.objects.count() == 2
    assert Monitor.objects.count() == 1
