"""The impact: a typed value only the guard builds, whose JSON keeps its keys, types and values on
a fixed fleet wherever it is shown (…/impact/, a dry run, a 202's `impact`, an operation's stored
impact, a 409 capacity_guard), and which the OpenAPI schema generated from it describes exactly."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from drf_spectacular.generators import SchemaGenerator

import steering
from steering.api.action_serializers import ImpactSerializer
from steering.services.errors import CapacityGuardRefused
from steering.services.impact import (
    Grace,
    Impact,
    ImpactReceiver,
    ImpactTarget,
    LayeredPlan,
    SuggestedGrace,
    WeightPlan,
)
from tests import factories as f
from tests.services.sites import site_fleet

BASE = {"action", "target", "basis", "verdict", "safe", "backends_affected", "moved_rps", "unplaced_rps",
        "receivers", "notes", "explain", "safety_rules"}
TARGET = {"type": "str", "id": "int", "name": "str"}
RECEIVER_KEYS = {"type", "id", "name", "load_before_rps", "load_after_rps", "capacity_rps",
                 "headroom_after_percent", "overloaded"}
GRACE = {"seconds": "int", "basis": "str", "derivation": "str"}
WEIGHT_PLAN = {"steps": ["int"], "step_seconds": "int"}
LAYERED_PLAN = {"wait_seconds": "int", "ttl_seconds": "int", "ttl_factor": "float"}  # + dns, withdraw: lists of str


def shape(value: Any) -> Any:
    """Keys and value types, recursively (lists by their items' shapes, deduplicated)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        shapes: list[Any] = []
        for item in value:
            s = shape(item)
            if s not in shapes:
                shapes.append(s)
        return shapes
    return type(value).__name__


def check_impact(impact: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    """`impact` has exactly the base keys (plus `extra`'s), each of its type."""
    extra = extra or {}
    assert set(impact) == BASE | set(extra), sorted(set(impact) ^ (BASE | set(extra)))
    assert shape(impact["target"]) == TARGET
    assert impact["verdict"] in ("safe", "overload", "outage")
    assert impact["safe"] is (impact["verdict"] == "safe" and not impact["safety_rules"])
    assert impact["basis"] in ("measured", "configured", "mixed")
    assert type(impact["backends_affected"]) is int
    assert type(impact["moved_rps"]) is float and type(impact["unplaced_rps"]) is float
    assert all(type(n) is str for n in impact["notes"]) and type(impact["explain"]) is str
    for row in impact["receivers"]:
        assert set(row) == RECEIVER_KEYS
        assert row["type"] in ("backend", "pool", "pop") and type(row["id"]) is int and type(row["name"]) is str
        assert type(row["load_before_rps"]) is float and type(row["load_after_rps"]) is float
        assert row["capacity_rps"] is None or type(row["capacity_rps"]) is float
        assert row["headroom_after_percent"] is None or type(row["headroom_after_percent"]) is float
        assert type(row["overloaded"]) is bool
    for key, want in extra.items():
        assert shape(impact[key]) == want, (key, shape(impact[key]))


def post(api: Any, path: str, **body: Any) -> Any:
    return api.post(f"/api/v1/{path}", {"reason": "impact shape", **body}, format="json")


def collect(api: Any) -> dict[str, tuple[int, Any]]:
    """Every place an impact is shown, on a fixed fleet: name -> (status, body)."""
    west, east, fra, lhr, iad = site_fleet()
    tight = f.fleet(4, capacity_rps=1000, expected_rps=3600)  # losing one backend overloads the rest
    b_fra = fra.pools.first().backends.first()
    pool_fra = fra.pools.first()
    b_tight = tight.backends.first()
    b_lhr = lhr.pools.first().backends.first()
    b_iad = iad.pools.first().backends.first()
    out: dict[str, tuple[int, Any]] = {}

    def keep(name: str, r: Any) -> None:
        out[name] = (r.status_code, r.json())

    keep("get backend drain", api.get(f"/api/v1/backends/{b_fra.pk}/impact/?action=drain"))
    keep("get pool drain", api.get(f"/api/v1/pools/{pool_fra.pk}/impact/?action=drain"))
    keep("get pop drain", api.get(f"/api/v1/pops/{fra.pk}/impact/?action=drain"))
    keep("get region drain", api.get(f"/api/v1/regions/{west.pk}/impact/?action=drain"))
    keep("get pool maintenance", api.get(f"/api/v1/pools/{pool_fra.pk}/impact/?action=maintenance"))
    keep("get region undrain", api.get(f"/api/v1/regions/{west.pk}/impact/?action=undrain"))
    keep("get pop withdraw", api.get(f"/api/v1/pops/{fra.pk}/impact/?action=withdraw"))
    keep("get tight drain", api.get(f"/api/v1/backends/{b_tight.pk}/impact/?action=drain"))
    keep("dry drain backend", post(api, f"backends/{b_fra.pk}/drain/", dry_run=True))
    keep("dry drain pool grace", post(api, f"pools/{pool_fra.pk}/drain/", dry_run=True, grace_seconds=5))
    keep("dry maintenance pop", post(api, f"pops/{fra.pk}/maintenance/", dry_run=True))
    keep("dry withdraw pop", post(api, f"pops/{fra.pk}/withdraw/", dry_run=True))
    keep("dry weight", post(api, f"backends/{b_fra.pk}/weight/", dry_run=True, weight=10))
    keep("dry weight ramp", post(api, f"backends/{b_fra.pk}/weight/", dry_run=True, weight=10, steps=[5],
                                 step_seconds=60))
    keep("dry layered region", post(api, f"regions/{west.pk}/drain/", dry_run=True, layered=True))
    keep("dry layered pop", post(api, f"pops/{fra.pk}/drain/", dry_run=True, layered=True, ttl_factor=3))
    keep("409 drain", post(api, f"backends/{b_tight.pk}/drain/"))
    keep("409 maintenance", post(api, f"backends/{b_tight.pk}/maintenance/"))
    keep("409 weight", post(api, f"backends/{b_tight.pk}/weight/", weight=0))
    keep("202 drain", post(api, f"backends/{b_lhr.pk}/drain/", grace_seconds=30))
    keep("operation of the drain", api.get(f"/api/v1/operations/{out['202 drain'][1]['operation']['id']}/"))
    keep("202 undrain", post(api, f"backends/{b_lhr.pk}/undrain/"))
    keep("202 weight", post(api, f"backends/{b_iad.pk}/weight/", weight=50))
    keep("202 withdraw", post(api, f"pops/{fra.pk}/withdraw/"))
    keep("202 announce", post(api, f"pops/{fra.pk}/announce/"))
    keep("202 layered", post(api, f"pops/{fra.pk}/drain/", layered=True, grace_seconds=20))
    return out


def test_an_impact_has_the_same_keys_types_and_values_wherever_it_is_shown(operator_api: Any) -> None:
    got = collect(operator_api)
    status = {name: s for name, (s, _body) in got.items()}
    assert status == {
        **{name: 200 for name in got if name.startswith(("get ", "dry ", "operation "))},
        **{name: 409 for name in got if name.startswith("409 ")},
        **{name: 202 for name in got if name.startswith("202 ")},
    }
    body = {name: b for name, (_s, b) in got.items()}
    for name in ("get backend drain", "get pool drain", "get pop drain", "get region drain", "get pool maintenance",
                 "get region undrain", "get pop withdraw", "get tight drain", "dry maintenance pop", "dry withdraw pop"):
        check_impact(body[name])
    check_impact(body["dry drain backend"], {"grace": GRACE})
    check_impact(body["dry drain pool grace"], {"grace": {**GRACE, "suggested": GRACE}})
    check_impact(body["dry weight"], {"plan": WEIGHT_PLAN})
    check_impact(body["dry weight ramp"], {"plan": WEIGHT_PLAN})
    check_impact(body["dry layered region"], {"plan": {**LAYERED_PLAN, "dns": ["str"], "withdraw": ["str"]}})
    check_impact(body["dry layered pop"], {"plan": {**LAYERED_PLAN, "dns": [], "withdraw": ["str"]}})
    for name in ("409 drain", "409 maintenance", "409 weight"):
        assert set(body[name]) == {"code", "detail", "impact"}
        assert body[name]["code"] == "capacity_guard" and body[name]["detail"] == body[name]["impact"]["explain"]
    check_impact(body["409 drain"]["impact"])  # refused before the grace is worked out
    check_impact(body["409 maintenance"]["impact"])
    check_impact(body["409 weight"]["impact"], {"plan": WEIGHT_PLAN})
    for name in ("202 drain", "202 undrain", "202 weight", "202 withdraw", "202 announce", "202 layered"):
        assert set(body[name]) == {"operation", "impact"}
    check_impact(body["202 drain"]["impact"], {"grace": {**GRACE, "suggested": GRACE}})
    assert body["operation of the drain"]["impact"] == body["202 drain"]["impact"]  # stored as shown
    check_impact(body["202 undrain"]["impact"])
    check_impact(body["202 weight"]["impact"], {"plan": WEIGHT_PLAN})
    check_impact(body["202 withdraw"]["impact"])
    check_impact(body["202 announce"]["impact"])
    check_impact(body["202 layered"]["impact"], {"plan": {**LAYERED_PLAN, "dns": [], "withdraw": ["str"]}})

    # Values on this fleet (every pool 500 req/s configured, two backends of 2000 req/s each).
    one = body["dry drain backend"]
    assert (one["action"], one["verdict"], one["basis"], one["backends_affected"]) == ("drain", "safe", "configured", 1)
    assert (one["moved_rps"], one["unplaced_rps"]) == (250.0, 0.0)
    assert [(r["type"], r["load_before_rps"], r["load_after_rps"], r["capacity_rps"], r["headroom_after_percent"],
             r["overloaded"]) for r in one["receivers"]] == [("backend", 250.0, 500.0, 2000.0, 75.0, False)]
    assert one["explain"] == "The receivers can absorb the moved traffic."
    assert one["grace"]["basis"] == "default"
    grace = body["dry drain pool grace"]["grace"]
    assert (grace["seconds"], grace["basis"], grace["derivation"]) == (5, "given", "given: 5 s")
    tight = body["409 drain"]["impact"]
    assert (tight["verdict"], tight["safe"], tight["moved_rps"]) == ("overload", False, 900.0)
    assert [r["load_after_rps"] for r in tight["receivers"]] == [1200.0] * 3
    assert tight["explain"].startswith("3 receiver(s) would pass capacity, worst ")
    undrain = body["get region undrain"]
    assert (undrain["action"], undrain["verdict"], undrain["backends_affected"], undrain["receivers"]) == (
        "undrain", "safe", 0, [])
    assert undrain["notes"] == ["returning capacity never overloads anyone; slow start ramps each backend in"]
    announce = body["202 announce"]["impact"]
    assert announce["action"] == "announce" and announce["target"]["type"] == "pop"
    assert announce["notes"] == ["announcing returns capacity; nothing is overloaded by it"]
    assert body["dry weight ramp"]["plan"] == {"steps": [5, 10], "step_seconds": 60}
    assert body["dry weight"]["plan"] == {"steps": [10], "step_seconds": 0}
    layered_pop = body["dry layered pop"]
    assert layered_pop["action"] == "layered_drain" and layered_pop["plan"]["ttl_factor"] == 3.0
    assert layered_pop["plan"]["dns"] == []  # lhr still serves the region
    assert layered_pop["plan"]["wait_seconds"] == 0 and layered_pop["plan"]["ttl_seconds"] == 0


# --- the generated schema describes exactly what is sent -------------------------------------------


def strict(node: Any) -> Any:
    """An OpenAPI 3.0 schema as JSON Schema, closed: `nullable` as a null alternative, and no
    property an object does not declare."""
    if isinstance(node, list):
        return [strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict(v) for k, v in node.items() if k != "nullable"}
    if out.get("type") == "object" and "properties" in out:
        out["additionalProperties"] = False
    if node.get("nullable"):
        out = {"anyOf": [out, {"type": "null"}]}
    return out


@pytest.fixture(scope="module")
def components() -> dict[str, Any]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return strict(schema["components"])


def validate(body: Any, component: str, components: dict[str, Any]) -> None:
    jsonschema.validate(body, {"$ref": f"#/components/schemas/{component}", "components": components})


def test_the_schema_describes_every_impact_shown_and_nothing_more(operator_api: Any, components: Any) -> None:
    got = collect(operator_api)
    for name, (_status, body) in got.items():
        if name.startswith("409 "):
            validate(body, "ActionConflict", components)
        elif name.startswith("202 "):
            validate(body["impact"], "Impact", components)
        elif not name.startswith("operation "):
            validate(body, "Impact", components)
    with pytest.raises(jsonschema.ValidationError):
        validate({**got["dry drain backend"][1], "surprise": 1}, "Impact", components)
    with pytest.raises(jsonschema.ValidationError):
        validate({**got["dry drain backend"][1], "grace": None}, "Impact", components)  # absent, never null


def test_the_closed_sets_are_enums_in_the_schema(components: Any) -> None:
    schemas = components["schemas"]

    def enum(component: str, prop: str) -> list[str]:
        ref = schemas[component]["properties"][prop]["$ref"].rsplit("/", 1)[1]
        return schemas[ref]["enum"]

    assert enum("Impact", "verdict") == ["safe", "overload", "outage"]
    assert enum("Impact", "basis") == ["measured", "configured", "mixed"]
    assert set(enum("Impact", "action")) == {"drain", "maintenance", "undrain", "weight", "withdraw", "announce",
                                             "layered_drain"}
    assert enum("ImpactTarget", "type") == ["backend", "pool", "pop", "region"]
    assert enum("ImpactReceiver", "type") == ["backend", "pool", "pop"]
    assert enum("Grace", "basis") == ["measured", "default", "given"]
    assert set(schemas["Impact"]["required"]) == BASE  # grace and plan: only some actions have them
    assert [s["$ref"].rsplit("/", 1)[1] for s in schemas["ImpactPlan"]["oneOf"]] == ["WeightPlan", "LayeredPlan"]


# --- the value --------------------------------------------------------------------------------------


def an_impact(**extra: Any) -> Impact:
    return Impact(
        action="drain", target=ImpactTarget("backend", 7, "fra/api/b1"), basis="configured", verdict="overload",
        safe=False, backends_affected=1, moved_rps=900.0, unplaced_rps=0.0,
        receivers=[ImpactReceiver("backend", 8, "fra/api/b2", 900.0, 1200.0, 1000.0, -20.0, True),
                   ImpactReceiver("backend", 9, "fra/api/b3", 0.0, 10.0, None, None, False)],
        notes=["a note"], explain="too much", **extra)


def test_its_json_leaves_out_the_extras_it_does_not_have_and_keeps_real_nulls() -> None:
    plain = an_impact().as_json()
    assert set(plain) == BASE
    assert plain["receivers"][1]["capacity_rps"] is None and plain["receivers"][1]["headroom_after_percent"] is None
    drain = an_impact(grace=Grace.of({"seconds": 45, "basis": "measured", "derivation": "d"})).as_json()
    assert drain["grace"] == {"seconds": 45, "basis": "measured", "derivation": "d"}
    given = an_impact(grace=Grace.of({"seconds": 45, "basis": "measured", "derivation": "d"}, given_seconds=5))
    assert given.grace == Grace(5, "given", "given: 5 s", SuggestedGrace(45, "measured", "d"))
    assert given.as_json()["grace"]["suggested"] == {"seconds": 45, "basis": "measured", "derivation": "d"}
    weight = an_impact(plan=WeightPlan([5, 10], 60)).as_json()
    assert weight["plan"] == {"steps": [5, 10], "step_seconds": 60}
    layered = an_impact(plan=LayeredPlan(["api 192.0.2.1 (eu)"], 60, 30, 2.0, ["fra"])).as_json()
    assert layered["plan"] == {"dns": ["api 192.0.2.1 (eu)"], "wait_seconds": 60, "ttl_seconds": 30,
                               "ttl_factor": 2.0, "withdraw": ["fra"]}


def test_it_is_frozen_and_the_serializer_and_the_refusal_show_its_json() -> None:
    impact = an_impact(plan=WeightPlan([0], 0))
    with pytest.raises(dataclasses.FrozenInstanceError):
        impact.verdict = "safe"  # type: ignore[misc]
    assert ImpactSerializer(impact).data == impact.as_json()
    refused = CapacityGuardRefused(impact)
    assert refused.impact is impact
    assert refused.as_dict() == {"code": "capacity_guard", "detail": "too much", "impact": impact.as_json()}


def test_only_the_guard_builds_an_impact() -> None:
    root = Path(steering.__file__).parent
    builders = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute)):
                name = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
                if name == "Impact":
                    builders.add(path.relative_to(root).as_posix())
    assert builders == {"services/guard.py"}
