"""Safety rules: the guard holds every action to them, the what-if lists the rules an action would
break, and a breaking action is refused with 409 `safety_rule` naming the rule (unless forced with
its own reason). Rules are admin-made, validated per kind, and audited."""

from __future__ import annotations

from typing import Any

from rest_framework.test import APIClient

from steering.models import Backend, Change, Operation, Pool, SafetyRule
from tests import factories as f
from tests.services.sites import layered, site_fleet

API = "/api/v1"
REASON = {"HTTP_X_CHANGE_REASON": "agreed in the change review"}


def add_rule(api: APIClient, **data: Any) -> Any:
    return api.post(f"{API}/safety-rules/", {"enabled": True, **data}, format="json", **REASON)


def drain(api: APIClient, kind: str, obj: Any, **body: Any) -> Any:
    return api.post(f"{API}/{kind}/{obj.pk}/drain/", {"reason": "maintenance window", "grace_seconds": 5, **body},
                    format="json")


def test_a_region_drain_that_leaves_too_few_regions_in_dns_is_refused_and_names_the_rule(admin_api: APIClient,
                                                                                        operator_api: APIClient) -> None:
    west, east, fra, lhr, iad = site_fleet()
    api_service = Pool.objects.filter(pop=fra).order_by("pk").first().service  # the DNS service
    assert add_rule(admin_api, slug="api-two-regions", kind="min_dns_regions", service=api_service.pk,
                    threshold=2).status_code == 201

    refused = drain(operator_api, "regions", west)
    assert refused.status_code == 409, refused.content
    body = refused.json()
    assert body["code"] == "safety_rule" and body["rules"] == ["api-two-regions"]
    assert "api-two-regions" in body["detail"] and "leaves 1" in body["detail"]
    breach = body["impact"]["safety_rules"][0]
    assert (breach["rule"], breach["before"], breach["after"], breach["threshold"]) == ("api-two-regions", 2, 1, 2)
    assert body["impact"]["safe"] is False
    west.refresh_from_db()
    assert west.admin_state == "ready" and not Operation.objects.exists()

    # One PoP of west leaving keeps west in DNS (lhr still serves it): no rule broken.
    assert operator_api.get(f"{API}/pops/{fra.pk}/impact/?action=drain").json()["safety_rules"] == []


def test_the_what_if_and_a_dry_run_list_the_rules_an_action_would_break(admin_api: APIClient,
                                                                       operator_api: APIClient) -> None:
    west, *_ = site_fleet()
    static = Pool.objects.filter(service__anycast_prefix__isnull=False).first().service
    add_rule(admin_api, slug="static-three-pops", kind="min_announcing_pops", prefix=static.anycast_prefix_id,
             threshold=3)
    preview = operator_api.get(f"{API}/regions/{west.pk}/impact/?action=drain")
    assert preview.status_code == 200
    rules = preview.json()["safety_rules"]
    assert [r["rule"] for r in rules] == ["static-three-pops"] and (rules[0]["before"], rules[0]["after"]) == (3, 1)
    dry = drain(operator_api, "regions", west, dry_run=True)
    assert dry.status_code == 200 and dry.json()["safety_rules"][0]["rule"] == "static-three-pops"
    assert not Operation.objects.exists()


def test_a_withdraw_is_held_to_the_announcing_rule_and_an_announce_never_is(admin_api: APIClient,
                                                                           operator_api: APIClient) -> None:
    _west, _east, fra, _lhr, _iad = site_fleet()
    static = Pool.objects.filter(service__anycast_prefix__isnull=False).first().service
    add_rule(admin_api, slug="static-three-pops", kind="min_announcing_pops", prefix=static.anycast_prefix_id,
             threshold=3)
    body = {"reason": "router maintenance"}
    refused = operator_api.post(f"{API}/pops/{fra.pk}/withdraw/", body, format="json")
    assert refused.status_code == 409 and refused.json()["code"] == "safety_rule"
    fra.refresh_from_db()
    assert fra.announce == "announce"

    without_reason = operator_api.post(f"{API}/pops/{fra.pk}/withdraw/", {**body, "force": True}, format="json")
    assert without_reason.status_code == 400 and "force_reason" in without_reason.json()["errors"]
    forced = operator_api.post(f"{API}/pops/{fra.pk}/withdraw/",
                               {**body, "force": True, "force_reason": "the router is on fire"}, format="json")
    assert forced.status_code in (200, 202), forced.content
    fra.refresh_from_db()
    assert fra.announce == "withdraw"
    # Bringing it back is never refused, broken rule or not.
    assert operator_api.post(f"{API}/pops/{fra.pk}/announce/", body, format="json").status_code in (200, 202)


def test_never_more_than_a_share_of_a_pool_out_counting_drains_and_weight_zero(admin_api: APIClient,
                                                                             operator_api: APIClient) -> None:
    pool = f.fleet(4, capacity_rps=1000, expected_rps=100)
    assert add_rule(admin_api, slug="half-a-pool", kind="max_pool_out_percent", pool=pool.pk,
                    threshold=50).status_code == 201
    first, second, third, fourth = Backend.objects.filter(pool=pool).order_by("pk")
    assert drain(operator_api, "backends", first).status_code == 202
    weight_zero = operator_api.post(f"{API}/backends/{second.pk}/weight/", {"weight": 0, "reason": "canary off"},
                                    format="json")
    assert weight_zero.status_code in (200, 202), weight_zero.content  # 2 of 4 out: 50%, allowed
    refused = drain(operator_api, "backends", third)
    assert refused.status_code == 409 and refused.json()["rules"] == ["half-a-pool"]
    assert "3 of 4 out (75%)" in refused.json()["detail"]
    third.refresh_from_db()
    assert third.admin_state == "ready"
    # A pool drain takes every backend out at once: refused too.
    assert drain(operator_api, "pools", pool).json()["code"] == "safety_rule"


def test_a_rule_over_every_pool_judges_only_the_pools_an_action_touches(admin_api: APIClient,
                                                                       operator_api: APIClient) -> None:
    small, big = f.fleet(2, capacity_rps=1000, expected_rps=10), f.fleet(10, capacity_rps=1000, expected_rps=10)
    add_rule(admin_api, slug="a-third", kind="max_pool_out_percent", threshold=33)
    refused = drain(operator_api, "backends", small.backends.first())
    assert refused.status_code == 409 and refused.json()["rules"] == ["a-third"]
    assert drain(operator_api, "backends", big.backends.first()).status_code == 202


def test_an_already_broken_rule_refuses_only_what_makes_it_worse(admin_api: APIClient,
                                                                operator_api: APIClient) -> None:
    west, _east, fra, _lhr, _iad = site_fleet()
    api_service = Pool.objects.filter(pop=fra).order_by("pk").first().service
    add_rule(admin_api, slug="api-three-regions", kind="min_dns_regions", service=api_service.pk, threshold=3)
    # Only two regions exist: broken already. Draining fra keeps both; draining west loses one.
    assert operator_api.get(f"{API}/pops/{fra.pk}/impact/?action=drain").json()["safety_rules"] == []
    assert drain(operator_api, "regions", west).json()["code"] == "safety_rule"


def test_a_layered_drain_is_held_to_the_rules_too(admin_api: APIClient, operator_api: APIClient) -> None:
    west, *_ = site_fleet()
    api_service = Pool.objects.filter(pop__region=west).order_by("pk").first().service
    add_rule(admin_api, slug="api-two-regions", kind="min_dns_regions", service=api_service.pk, threshold=2)
    refused = layered(operator_api, "regions", west)
    assert refused.status_code == 409 and refused.json()["rules"] == ["api-two-regions"]
    assert not Operation.objects.exists()
    forced = layered(operator_api, "regions", west, force=True, force_reason="region evacuation drill")
    assert forced.status_code == 202, forced.content
    assert Operation.objects.get().forced is True


def test_a_disabled_rule_is_not_checked(admin_api: APIClient, operator_api: APIClient) -> None:
    pool = f.fleet(2, capacity_rps=1000, expected_rps=10)
    add_rule(admin_api, slug="none-out", kind="max_pool_out_percent", pool=pool.pk, threshold=1, enabled=False)
    assert drain(operator_api, "backends", pool.backends.first()).status_code == 202


def test_rules_are_validated_per_kind_and_bad_ones_change_nothing(admin_api: APIClient) -> None:
    pool = f.fleet(2)
    service, prefix = f.service(), f.prefix()
    cases = [
        ({"kind": "min_dns_regions", "threshold": 2}, "service"),
        ({"kind": "min_dns_regions", "threshold": 2, "service": service.pk, "pool": pool.pk}, "pool"),
        ({"kind": "min_announcing_pops", "threshold": 2, "service": service.pk}, "prefix"),
        ({"kind": "max_pool_out_percent", "threshold": 101}, "threshold"),
        ({"kind": "max_pool_out_percent", "threshold": 0}, "threshold"),
        ({"kind": "most_regions", "threshold": 2}, "kind"),
        ({"kind": "min_announcing_pops", "threshold": 2, "prefix": 99999}, "prefix"),
        ({"kind": "min_announcing_pops", "threshold": "two", "prefix": prefix.pk}, "threshold"),
    ]
    for data, field in cases:
        answer = add_rule(admin_api, slug="bad", **data)
        assert answer.status_code == 400, (data, answer.content)
        errors = answer.json().get("errors") or answer.json()
        assert field in errors, (data, errors)
    assert not SafetyRule.objects.exists() and not Change.objects.filter(action__startswith="safetyrule").exists()


def test_only_an_admin_changes_rules_everyone_reads_them_and_each_change_is_audited(
        admin_api: APIClient, operator_api: APIClient, viewer_api: APIClient) -> None:
    pool = f.fleet(2)
    data = {"slug": "half", "kind": "max_pool_out_percent", "pool": pool.pk, "threshold": 50}
    assert add_rule(operator_api, **data).status_code == 403
    created = add_rule(admin_api, **data)
    assert created.status_code == 201
    rule_id = created.json()["id"]
    assert viewer_api.get(f"{API}/safety-rules/").json()["results"][0]["slug"] == "half"
    patched = admin_api.patch(f"{API}/safety-rules/{rule_id}/", {"threshold": 25}, format="json", **REASON)
    assert patched.status_code == 200 and patched.json()["threshold"] == 25
    assert admin_api.delete(f"{API}/safety-rules/{rule_id}/", **REASON).status_code == 204
    actions = list(Change.objects.filter(object_type="safetyrule").order_by("pk").values_list("action", flat=True))
    assert actions == ["safetyrule.create", "safetyrule.update", "safetyrule.delete"]


def test_what_a_rule_guards_cannot_be_deleted_from_under_it(admin_api: APIClient) -> None:
    pool = f.fleet(2)
    add_rule(admin_api, slug="half", kind="max_pool_out_percent", pool=pool.pk, threshold=50)
    for backend in Backend.objects.filter(pool=pool):
        backend.delete()
    answer = admin_api.delete(f"{API}/pools/{pool.pk}/", **REASON)
    assert answer.status_code == 409 and answer.json()["code"] == "in_use"
    assert "half" in answer.json()["detail"]
    assert Pool.objects.filter(pk=pool.pk).exists()


def test_with_no_rules_the_impact_lists_none(operator_api: APIClient) -> None:
    west, *_ = site_fleet()
    assert operator_api.get(f"{API}/regions/{west.pk}/impact/?action=drain").json()["safety_rules"] == []
