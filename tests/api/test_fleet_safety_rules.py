"""Safety rules in the fleet file: exported, planned, applied (then enforced by the guard), checked
with paths into the file, and left alone by a file without the section."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from rest_framework.test import APIClient

from steering.models import Backend, Change, Pool, SafetyRule
from tests import factories as f
from tests.api.test_fleet_api import URL, apply, export, find, plan

pytestmark = pytest.mark.django_db


def rules_fleet() -> Pool:
    """Two PoPs with a pool of four backends each, one service; one rule of each kind."""
    pool = f.fleet(4, capacity_rps=1000, expected_rps=100)
    other_pop = f.pop(pool.pop.region, slug="lhr1")
    other = f.pool(other_pop, pool.service, slug=pool.slug)
    for i in range(4):
        f.backend(other, name=f"lhr-{i}", capacity_rps=1000)
    prefix = f.prefix()
    SafetyRule.objects.create(slug="one-region", kind="min_dns_regions", service=pool.service, threshold=1)
    SafetyRule.objects.create(slug="two-pops", kind="min_announcing_pops", prefix=prefix, threshold=2)
    SafetyRule.objects.create(slug="half-a-pool", kind="max_pool_out_percent", pool=pool, threshold=50)
    return pool


def rules_of(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["slug"]: r for r in document["safety_rules"]}


def test_a_file_without_the_section_leaves_the_rules_as_they_are(admin_api: APIClient) -> None:
    rules_fleet()
    document = export(admin_api)
    without = {k: v for k, v in document.items() if k != "safety_rules"}
    answer = plan(admin_api, without).json()
    assert answer["changes"] == []
    before = sorted(SafetyRule.objects.values_list("pk", "revision"))
    assert apply(admin_api, without, fingerprint=answer["fingerprint"]).status_code == 200
    assert sorted(SafetyRule.objects.values_list("pk", "revision")) == before
    # ... whereas an empty section says "no rules".
    emptied = plan(admin_api, {**without, "safety_rules": []}).json()
    assert sorted((c["op"], c["key"]) for c in emptied["changes"]) == [
        ("delete", "half-a-pool"), ("delete", "one-region"), ("delete", "two-pops")]


def test_rules_are_created_changed_and_deleted_by_the_file_and_the_guard_holds_to_them(
        admin_api: APIClient, operator_api: APIClient) -> None:
    pool = rules_fleet()
    document = export(admin_api)
    wanted = copy.deepcopy(document)
    rules = rules_of(wanted)
    rules["half-a-pool"].update(pop="lhr1", threshold=25)                # the other PoP's pool, a tighter share
    del rules["two-pops"]
    rules["every-pool-75"] = {"slug": "every-pool-75", "kind": "max_pool_out_percent", "threshold": 75}
    wanted["safety_rules"] = list(rules.values())
    answer = plan(admin_api, wanted).json()
    ops = {(c["op"], c["key"]): c for c in answer["changes"]}
    assert set(ops) == {("update", "half-a-pool"), ("delete", "two-pops"), ("create", "every-pool-75")}
    assert ops["update", "half-a-pool"]["fields"]["pop"] == {"from": pool.pop.slug, "to": "lhr1"}
    response = apply(admin_api, wanted, fingerprint=answer["fingerprint"])
    assert response.status_code == 200, response.content
    moved = SafetyRule.objects.get(slug="half-a-pool")
    lhr_pool = Pool.objects.get(pop__slug="lhr1")
    assert (moved.pool_id, moved.threshold) == (lhr_pool.pk, 25)
    assert not SafetyRule.objects.filter(slug="two-pops").exists()
    assert SafetyRule.objects.get(slug="every-pool-75").pool_id is None
    assert rules_of(export(admin_api)) == {r["slug"]: {"service": None, "prefix": None, "pop": None, "pool": None,
                                                       "enabled": True, "description": "", **r}
                                           for r in wanted["safety_rules"]}
    # Each rule change is in the audit, under the apply's operation.
    op_id = response.json()["operation"]["id"]
    assert set(Change.objects.filter(object_type="safetyrule", operation_id=op_id).values_list("action", flat=True)) \
        == {"safetyrule.create", "safetyrule.update", "safetyrule.delete"}
    # The guard holds actions to the rules the file made: 2 of lhr1's 4 out is more than 25%.
    first, second = Backend.objects.filter(pool=lhr_pool).order_by("pk")[:2]
    assert operator_api.post(f"/api/v1/backends/{first.pk}/drain/", {"reason": "patch", "grace_seconds": 5},
                             format="json").status_code == 202
    refused = operator_api.post(f"/api/v1/backends/{second.pk}/drain/", {"reason": "patch", "grace_seconds": 5},
                                format="json")
    assert refused.status_code == 409 and refused.json()["rules"] == ["half-a-pool"]


def test_a_pool_and_the_rule_guarding_it_go_together(admin_api: APIClient) -> None:
    pool = rules_fleet()
    wanted = export(admin_api)
    wanted["pools"] = [p for p in wanted["pools"] if not (p["pop"] == pool.pop.slug and p["slug"] == pool.slug)]
    wanted["safety_rules"] = [r for r in wanted["safety_rules"] if r["slug"] != "half-a-pool"]
    response = apply(admin_api, wanted, force=True, force_reason="retiring the pool")
    assert response.status_code == 200, response.content
    assert not Pool.objects.filter(pk=pool.pk).exists() and not SafetyRule.objects.filter(slug="half-a-pool").exists()


BAD_RULES = [
    ({"slug": "r", "kind": "min_dns_regions", "threshold": 2}, {"/safety_rules/0/service"}),
    ({"slug": "r", "kind": "min_dns_regions", "threshold": 2, "service": "nope"}, {"/safety_rules/0/service"}),
    ({"slug": "r", "kind": "min_announcing_pops", "threshold": 2, "service": "SERVICE", "prefix": "PREFIX"},
     {"/safety_rules/0/service"}),
    ({"slug": "r", "kind": "max_pool_out_percent", "threshold": 50, "pop": "POP"}, {"/safety_rules/0/pool"}),
    ({"slug": "r", "kind": "max_pool_out_percent", "threshold": 150}, {"/safety_rules/0/threshold"}),
    ({"slug": "r", "kind": "max_pool_out_percent", "threshold": 50, "pop": "POP", "pool": "nope"},
     {"/safety_rules/0/pool"}),
    ({"slug": "r", "kind": "most_regions", "threshold": 2}, {"/safety_rules/0/kind"}),
    ({"slug": "r", "kind": "min_dns_regions", "threshold": 0, "service": "SERVICE"}, {"/safety_rules/0/threshold"}),
]


@pytest.mark.parametrize(("rule", "paths"), BAD_RULES)
def test_a_bad_rule_is_a_400_at_its_path_and_changes_nothing(rule: dict[str, Any], paths: set[str],
                                                              admin_api: APIClient) -> None:
    pool = rules_fleet()
    document = export(admin_api)
    names = {"SERVICE": pool.service.slug, "PREFIX": document["prefixes"][0]["prefix"], "POP": pool.pop.slug}
    rule = {k: names.get(v, v) if isinstance(v, str) else v for k, v in rule.items()}
    before = sorted(SafetyRule.objects.values_list("pk", "revision"))
    for call in (plan, apply):
        response = call(admin_api, {**document, "safety_rules": [rule]})
        assert response.status_code == 400, response.content
        assert set(response.json()["errors"]) == paths, response.json()
    assert sorted(SafetyRule.objects.values_list("pk", "revision")) == before


def test_drift_names_a_rule_changed_by_hand(admin_api: APIClient) -> None:
    rules_fleet()
    document = export(admin_api)
    assert apply(admin_api, document).status_code == 200
    rule = SafetyRule.objects.get(slug="one-region")
    response = admin_api.patch(f"/api/v1/safety-rules/{rule.pk}/", {"threshold": 2}, format="json",
                               HTTP_X_CHANGE_REASON="stricter after the incident")
    assert response.status_code == 200, response.content
    drift = admin_api.get(f"{URL}/drift/").json()
    row = find(drift, "differences", kind="safety_rule", key="one-region")
    assert row["fields"] == {"threshold": {"file": 1, "live": 2}}
    assert row["changed_by"][0]["reason"] == "stricter after the incident"
