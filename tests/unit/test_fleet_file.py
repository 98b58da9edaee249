"""The fleet file's pure side (steering.fleetfile): schema, normalising, text, diff. No database."""

from __future__ import annotations

import ast
import copy
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from steering.fleetfile import InvalidFleet, build, fingerprint, load, to_document
from steering.fleetfile import text as fleet_text
from steering.fleetfile.diff import diff, summary
from steering.fleetfile.normalise import schema
from tests.support import ROOT


def minimal() -> dict[str, Any]:
    return {
        "version": 1,
        "regions": [{"slug": "eu-west", "name": "Europe", "latitude": 50, "longitude": 4.5}],
        "pops": [{"slug": "fra1", "region": "eu-west", "name": "Frankfurt 1", "city": "Frankfurt",
                  "latitude": 50.1, "longitude": 8.7}],
        "prefixes": [],
        "services": [{"slug": "api", "fqdn": "api.example.net"}],
        "vips": [{"service": "api", "region": "eu-west", "address": "2001:DB8:0::30"}],
        "client_networks": [],
        "monitors": [],
        "pools": [{"pop": "fra1", "slug": "api-web", "service": "api",
                   "backends": [{"name": "api-1", "address": "127.1.1.1", "port": 8443},
                                {"name": "api-2", "address": "127.1.1.2", "port": 8443, "capacity_rps": 500}]}],
    }


def errors_of(document: Any) -> dict[str, list[str]]:
    with pytest.raises(InvalidFleet) as caught:
        load(document)
    return caught.value.errors


def test_the_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(schema())


def test_defaults_are_filled_in_and_types_made_canonical() -> None:
    fleet = load(minimal())
    region = fleet["region"]["eu-west"].fields
    assert region["latitude"] == 50.0 and isinstance(region["latitude"], float)
    backend = fleet["backend"]["fra1/api-web/api-1"].fields
    assert (backend["weight"], backend["backup"], backend["capacity_rps"], backend["version"]) == (100, False, 0, "")
    pool = fleet["pool"]["fra1/api-web"].fields
    assert (pool["mode"], pool["monitor"], pool["retry_on"]) == ("l7", None, "conn-failure empty-response response-timeout")
    # IPv6 the way the database keeps it, so the same VIP is not "replaced" on every plan.
    assert list(fleet["vip"]) == ["api@eu-west/2001:db8::30"]
    explicit = to_document(fleet)
    assert fingerprint(load(explicit)) == fingerprint(fleet) and to_document(load(explicit)) == explicit


def test_schema_errors_are_keyed_by_json_pointer() -> None:
    doc = minimal()
    doc["pools"][0]["backends"][1]["port"] = 0
    doc["pools"][0]["backends"][0]["colour"] = "blue"
    doc["regions"][0].pop("name")
    doc["services"][0]["protocol"] = "udp"
    del doc["monitors"]
    errors = errors_of(doc)
    assert set(errors) == {"/pools/0/backends/1/port", "/pools/0/backends/0/colour", "/regions/0/name",
                           "/services/0/protocol", "/monitors"}
    assert errors["/monitors"] == ["This field is required."]
    assert errors_of([1, 2]) == {"/": ["[1, 2] is not of type 'object'"]}
    assert "/version" in errors_of({**minimal(), "version": 2})


def test_references_duplicates_and_rules_between_fields() -> None:
    doc = minimal()
    doc["pops"][0]["region"] = "nowhere"
    doc["pools"][0]["monitor"] = "missing"
    doc["pools"][0]["backup_pool"] = "api-web"
    doc["pools"][0]["backends"][1]["address"] = "127.1.1.1"
    doc["pools"][0]["backends"][1]["port"] = 8443
    doc["services"].append({"slug": "api", "fqdn": "other.example.net"})
    doc["monitors"] = [{"slug": "m", "interval_seconds": 2, "timeout_seconds": 3}]
    doc["pools"].append({"pop": "fra1", "slug": "l4", "service": "api", "mode": "l4", "match_host": "x.example.net",
                         "outlier_ejection_seconds": 60, "outlier_max_ejection_seconds": 30})
    errors = errors_of(doc)
    assert errors["/pops/0/region"] == ["No region 'nowhere' in this file (regions)."]
    assert errors["/pools/0/monitor"] == ["No monitor 'missing' in this file (monitors)."]
    assert errors["/pools/0/backup_pool"] == ["A pool cannot be its own backup."]
    assert "/pools/0/backends/1/port" in errors
    assert errors["/services/1"][0].startswith("Duplicate service api")
    assert errors["/monitors/0/timeout_seconds"] == ["The timeout cannot exceed the interval."]
    assert {"/pools/1/mode", "/pools/1/outlier_max_ejection_seconds"} <= set(errors)


def test_a_backup_pool_is_in_the_same_pop_and_serves_the_same_service() -> None:
    doc = minimal()
    doc["services"].append({"slug": "web", "fqdn": "web.example.net"})
    doc["pools"].append({"pop": "fra1", "slug": "web", "service": "web"})
    doc["pools"][0]["backup_pool"] = "web"
    assert errors_of(doc) == {"/pools/0/backup_pool": [
        "The backup pool must serve the same service (api, not web)."]}


@pytest.mark.parametrize(("text", "words"), [
    ("version: 1\nregions: [\n", "line 3"),
    ("a: &a [*a, *a]\n", "expands to more than"),
    ("a: !!python/object:os.system x\n", "Not valid YAML"),
    ("---\nversion: 1\n---\nversion: 1\n", "Not valid YAML"),
    ("[" * 5000, "Not valid YAML"),
])
def test_text_that_is_not_one_safe_document_is_refused(text: str, words: str) -> None:
    with pytest.raises(InvalidFleet) as caught:
        fleet_text.parse(text)
    assert list(caught.value.errors) == ["/"] and words in caught.value.errors["/"][0]


def test_aliases_expanding_beyond_the_budget_are_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]"
              for i in range(1, 9)]
    with pytest.raises(InvalidFleet):
        fleet_text.parse("\n".join(lines))


def test_anchors_for_repeated_settings_are_fine_and_numbers_must_be_finite() -> None:
    text = fleet_text.dump(to_document(load(minimal())))
    assert load(fleet_text.parse(text)) == load(minimal())
    doc = minimal()
    doc["regions"][0]["latitude"] = float("nan")
    assert "/regions/0/latitude" in errors_of(doc)


def test_yaml_out_and_back_keeps_every_value() -> None:
    doc = to_document(load(minimal()))
    doc["pools"][0]["backends"][0]["version"] = "1.0"
    doc["pools"][0]["match_host"] = ""
    doc["regions"][0]["name"] = "on"
    text = fleet_text.dump(doc)
    assert text.startswith("# Steering fleet file") and fleet_text.parse(text) == doc


def test_diff_per_object_and_field_in_apply_order() -> None:
    current = load(minimal())
    doc = minimal()
    doc["pools"][0]["backends"][0]["weight"] = 40                       # lowered: takes capacity away
    doc["pools"][0]["backends"][1]["capacity_rps"] = 800                # raised
    doc["pools"][0]["backends"].append({"name": "api-3", "address": "127.1.1.3", "port": 8443})
    doc["regions"].append({"slug": "us-east", "name": "US", "latitude": 1, "longitude": 2})
    doc["vips"][0]["enabled"] = False                                   # takes capacity away
    doc["pools"].append({"pop": "fra1", "slug": "api-pci", "service": "api", "backup_pool": "api-b"})
    doc["pools"].append({"pop": "fra1", "slug": "api-b", "service": "api"})
    changes = diff(current, load(doc))
    assert [(c.op, c.kind, c.key) for c in changes] == [
        ("create", "region", "us-east"),
        ("create", "pool", "fra1/api-b"),        # a backup pool before the pool that uses it
        ("create", "pool", "fra1/api-pci"),
        ("update", "vip", "api@eu-west/2001:db8::30"),
        ("update", "backend", "fra1/api-web/api-1"),
        ("update", "backend", "fra1/api-web/api-2"),
        ("create", "backend", "fra1/api-web/api-3"),
    ]
    by_key = {c.key: c for c in changes}
    assert by_key["fra1/api-web/api-1"].fields == {"weight": {"from": 100, "to": 40}}
    assert [c.key for c in changes if c.reduces_capacity] == ["api@eu-west/2001:db8::30", "fra1/api-web/api-1"]
    assert summary(changes) == {"create": 4, "update": 3, "delete": 0}
    back = diff(load(doc), current)
    assert [(c.op, c.kind) for c in back][:2] == [("delete", "backend"), ("update", "vip")]
    assert [(c.op, c.key) for c in back][-3:] == [("delete", "fra1/api-pci"), ("delete", "fra1/api-b"),
                                                  ("delete", "us-east")]
    assert all(c.reduces_capacity for c in back if c.op == "delete" and c.kind in ("backend", "pool", "region"))
    assert diff(current, build(to_document(current))) == []


def test_capacity_declared_for_the_first_time_is_a_limit() -> None:
    doc = minimal()
    doc["pools"][0]["backends"][0]["capacity_rps"] = 300  # 0 (not judged) -> 300
    doc["pools"][0]["backends"][1]["backup"] = True
    changes = diff(load(minimal()), load(doc))
    assert all(c.reduces_capacity for c in changes) and len(changes) == 2


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_fleet_file_modules_are_pure_and_steerctl_stays_stdlib() -> None:
    for path in (ROOT / "steering" / "fleetfile").glob("*.py"):
        for name in _imports(path):
            top = name.split(".")[0]
            assert top in sys.stdlib_module_names or top in ("yaml", "jsonschema") or name.startswith(
                "steering.fleetfile"), (path.name, name)
    for name in _imports(ROOT / "steering" / "cli" / "fleet.py"):
        assert name.split(".")[0] in sys.stdlib_module_names or name.startswith("steering.cli"), name


def test_a_document_is_not_changed_by_loading_it() -> None:
    doc = minimal()
    kept = copy.deepcopy(doc)
    load(doc)
    assert doc == kept


def test_the_guides_example_is_a_valid_fleet_file() -> None:
    import re

    guide = (ROOT / "docs" / "fleet-file.md").read_text()
    example = re.search(r"## An example\s+```yaml\n(.*?)```", guide, re.S)
    assert example is not None
    fleet = load(fleet_text.parse(example.group(1)))
    assert set(fleet["safety_rule"]) == {"api-stays-in-two-regions", "api-web-half-at-most"}
    assert fleet["safety_rule"]["api-web-half-at-most"].fields["pool"] == "api-web"
