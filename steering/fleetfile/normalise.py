"""A fleet document checked against the schema and turned into objects by kind and key.

`load` is for documents from outside (a file someone wrote): the JSON Schema first, then what a
schema cannot say (duplicate identities, references to objects the file does not have, the rules
between fields). Every error is keyed by the JSON Pointer (RFC 6901) of what is wrong in the
document, e.g. `/pools/2/backends/0/port`; `/` is the document itself. `build` is for documents
the control plane wrote itself (the live fleet): defaults and types only, no judgement.

Both give the canonical form: every field present (defaults filled in), integers as int, numbers
as float, IPv6 VIP addresses compressed, so two fleets that mean the same compare equal and have
the same fingerprint.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

FORMAT_VERSION = 1
MAX_ERRORS = 200


@dataclass(frozen=True)
class Kind:
    """One object type of the file: its section, the fields that name it, and what it refers to."""

    name: str
    section: str
    identity: tuple[str, ...]
    refs: Mapping[str, str] = field(default_factory=dict)  # field -> the kind it names


# In dependency order: an object only refers to kinds before it (a pool's backup_pool to another pool).
KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("region", "regions", ("slug",)),
    Kind("prefix", "prefixes", ("prefix",)),
    Kind("monitor", "monitors", ("slug",)),
    Kind("service", "services", ("slug",), {"anycast_prefix": "prefix"}),
    Kind("pop", "pops", ("slug",), {"region": "region"}),
    Kind("pool", "pools", ("pop", "slug"), {"pop": "pop", "service": "service", "monitor": "monitor",
                                            "backup_pool": "pool"}),
    Kind("vip", "vips", ("service", "region", "address"), {"service": "service", "region": "region"}),
    Kind("client_network", "client_networks", ("cidr",), {"region": "region"}),
    # Backends live inside their pool in the file (`pools[].backends[]`); named pop/pool/name.
    Kind("backend", "backends", ("pop", "pool", "name"), {"pool": "pool"}),
    # Last: a rule guards a service, prefix or pool, so it goes before them when both are deleted.
    Kind("safety_rule", "safety_rules", ("slug",), {"service": "service", "prefix": "prefix", "pop": "pop",
                                                    "pool": "pool"}),
)}
# The document's sections in the order export writes them.
SECTIONS = ("regions", "pops", "prefixes", "services", "vips", "client_networks", "monitors", "pools", "safety_rules")
# Sections a file may leave out, leaving those objects as they are (a fleet without the kind):
# a file written before safety rules existed must not delete every rule when applied.
OPTIONAL_SECTIONS = ("safety_rules",)
# The scope each safety rule kind names (steering.models.safety.SCOPE_FIELD, in the file's words).
RULE_SCOPE = {"min_dns_regions": ("service",), "min_announcing_pops": ("prefix",),
              "max_pool_out_percent": ("pop", "pool")}


@dataclass(frozen=True)
class FleetObject:
    kind: str
    key: str
    fields: dict[str, Any]   # every field of the file's object (a pool's without its backends)
    path: str = ""           # where it is in the document (JSON Pointer)

    @property
    def identity(self) -> tuple[Any, ...]:
        return tuple(self.fields.get(name) for name in KINDS[self.kind].identity)


Fleet = dict[str, dict[str, FleetObject]]  # kind -> key -> object


class InvalidFleet(Exception):
    """The document is not a fleet file; `errors` maps JSON Pointers to what is wrong there."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__(f"{sum(len(v) for v in errors.values())} error(s) in the fleet file")
        self.errors = errors


@cache
def schema() -> dict[str, Any]:
    """The JSON Schema of the format (steering/fleetfile/schema.json, served at /api/v1/fleet/schema/)."""
    text = resources.files("steering.fleetfile").joinpath("schema.json").read_text(encoding="utf-8")
    return dict(json.loads(text))


def _properties(kind: str) -> dict[str, Any]:
    return dict(schema()["$defs"][kind]["properties"])


def field_names(kind: str) -> tuple[str, ...]:
    """The fields of a kind in the file, in the schema's order (a pool's `backends` left out)."""
    return tuple(name for name in _properties(kind) if name != "backends")


def object_key(kind: str, fields: Mapping[str, Any]) -> str:
    """How people name the object: `bom1/api-web/api-3`, `api@eu-west/192.0.2.30`, `bom1`."""
    if kind == "vip":
        return f"{fields['service']}@{fields['region']}/{fields['address']}"
    return "/".join(str(fields[name]) for name in KINDS[kind].identity)


def pointer(*parts: Any) -> str:
    return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in parts) if parts else "/"


# --- the schema ------------------------------------------------------------------------------


def _schema_errors(document: Any) -> dict[str, list[str]]:
    validator = jsonschema.Draft202012Validator(schema())
    errors: dict[str, list[str]] = {}
    for error in validator.iter_errors(document):
        path = list(error.absolute_path)
        instance = error.instance
        # Name the field itself, in the API's words, rather than the object around it.
        if error.validator == "required" and isinstance(instance, dict):
            for name in error.validator_value:
                if name not in instance:
                    errors.setdefault(pointer(*path, name), []).append("This field is required.")
        elif error.validator == "additionalProperties" and isinstance(instance, dict):
            known = error.schema.get("properties", {})
            for name in instance:
                if name not in known:
                    errors.setdefault(pointer(*path, name), []).append("Unknown field.")
        else:
            errors.setdefault(pointer(*path), []).append(error.message)
        if len(errors) >= MAX_ERRORS:
            break
    return errors


# --- building objects ------------------------------------------------------------------------


def _canonical_address(value: Any) -> Any:
    """IPv6 written the way the database keeps it (lower case, compressed), so a file that spells
    it otherwise does not look like a different VIP on every plan."""
    try:
        addr = ipaddress.ip_address(str(value))
    except ValueError:
        return value
    if isinstance(addr, ipaddress.IPv6Address):
        return f"::ffff:{addr.ipv4_mapped}" if addr.ipv4_mapped else addr.compressed
    return value


def _fields(kind: str, raw: Mapping[str, Any], errors: dict[str, list[str]] | None, path: str) -> dict[str, Any]:
    """Every field of the kind: the document's value or the default, in canonical types."""
    out: dict[str, Any] = {}
    for name, spec in _properties(kind).items():
        if name == "backends":
            continue
        value = raw.get(name, spec.get("default"))
        kind_of = spec.get("type")
        if kind_of == "integer" and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = int(value)
        elif kind_of == "number" and isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value) and errors is not None:
                errors.setdefault(f"{path}/{name}", []).append("Not a finite number.")
            value = float(value)
        out[name] = value
    if kind == "vip":
        out["address"] = _canonical_address(out["address"])
    return out


def canonical(kind: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """An object's fields in canonical form (defaults filled in, types and addresses normalised)."""
    return _fields(kind, raw, None, "")


def managed(kind: str, *fleets: Fleet) -> bool:
    """Do all these fleets say what the objects of `kind` are (not left out of a file)?"""
    return all(kind in fleet for fleet in fleets)


def _build(document: Mapping[str, Any], errors: dict[str, list[str]] | None) -> Fleet:
    fleet: Fleet = {kind.name: {} for kind in KINDS.values()
                    if kind.section not in OPTIONAL_SECTIONS or document.get(kind.section) is not None}
    seen: dict[tuple[str, str], str] = {}

    def add(kind: str, raw: Mapping[str, Any], path: str, extra: Mapping[str, Any] | None = None) -> FleetObject:
        values = {**(extra or {}), **_fields(kind, raw, errors, path)}
        key = object_key(kind, values)
        if errors is not None and (kind, key) in seen:
            errors.setdefault(path, []).append(f"Duplicate {kind.replace('_', ' ')} {key} (also at {seen[kind, key]}).")
        seen.setdefault((kind, key), path)
        obj = FleetObject(kind, key, values, path)
        fleet[kind][key] = obj
        return obj

    for kind in KINDS.values():
        if kind.name == "backend" or kind.name not in fleet:
            continue
        for index, raw in enumerate(document.get(kind.section) or []):
            obj = add(kind.name, raw, pointer(kind.section, index))
            if kind.name == "pool":
                for b_index, b_raw in enumerate(raw.get("backends") or []):
                    # Its pop and pool come from the pool it sits in: identity, not fields of its own.
                    add("backend", b_raw, pointer("pools", index, "backends", b_index),
                        {"pop": obj.fields["pop"], "pool": obj.fields["slug"]})
    return fleet


def backend_fields(obj: FleetObject) -> dict[str, Any]:
    """A backend's own fields, as the file writes them (without the pop and pool it sits in)."""
    return {name: obj.fields[name] for name in field_names("backend")}


# --- rules a schema cannot state ------------------------------------------------------------


def _check(fleet: Fleet, errors: dict[str, list[str]]) -> None:
    def missing(obj: FleetObject, name: str, kind: str, key: Any) -> None:
        section = KINDS[kind].section
        errors.setdefault(f"{obj.path}/{name}", []).append(f"No {kind.replace('_', ' ')} {key!r} in this file ({section}).")

    for kind in KINDS.values():
        for obj in fleet.get(kind.name, {}).values():
            for name, target in kind.refs.items():
                value = obj.fields.get(name)
                if value is None or kind.name == "backend" or name == "backup_pool":
                    continue
                key = f"{obj.fields['pop']}/{value}" if target == "pool" else value
                if key not in fleet[target]:
                    missing(obj, name, target, value)
    for pool in fleet["pool"].values():
        f = pool.fields
        if f["backup_pool"] is not None:
            backup = fleet["pool"].get(f"{f['pop']}/{f['backup_pool']}")
            if f["backup_pool"] == f["slug"]:
                errors.setdefault(f"{pool.path}/backup_pool", []).append("A pool cannot be its own backup.")
            elif backup is None:
                errors.setdefault(f"{pool.path}/backup_pool", []).append(
                    f"No pool {f['backup_pool']!r} in PoP {f['pop']} in this file (a backup pool is in the same PoP).")
            elif backup.fields["service"] != f["service"]:
                errors.setdefault(f"{pool.path}/backup_pool", []).append(
                    f"The backup pool must serve the same service ({f['service']}, not {backup.fields['service']}).")
        if f["mode"] == "l4" and (f["match_host"] or f["match_path_prefix"]):
            errors.setdefault(f"{pool.path}/mode", []).append("An L4 pool cannot match on Host or path; use L7.")
        if f["outlier_max_ejection_seconds"] < f["outlier_ejection_seconds"]:
            errors.setdefault(f"{pool.path}/outlier_max_ejection_seconds", []).append(
                "The longest ejection cannot be shorter than the first (outlier_ejection_seconds).")
    for monitor in fleet["monitor"].values():
        if monitor.fields["timeout_seconds"] > monitor.fields["interval_seconds"]:
            errors.setdefault(f"{monitor.path}/timeout_seconds", []).append("The timeout cannot exceed the interval.")
    for rule in fleet.get("safety_rule", {}).values():
        _check_rule(rule, errors)
    _unique(fleet["service"].values(), ("fqdn",), errors, "another service has this fqdn")
    endpoints: dict[tuple[Any, ...], str] = {}
    for b in fleet["backend"].values():
        endpoint = (b.fields["pop"], b.fields["pool"], b.fields["address"], b.fields["port"])
        if endpoint in endpoints:
            errors.setdefault(f"{b.path}/port", []).append(
                f"This pool already has a backend at that address and port ({endpoints[endpoint]}).")
        endpoints.setdefault(endpoint, b.path)


def _check_rule(rule: FleetObject, errors: dict[str, list[str]]) -> None:
    """A rule names the scope its kind needs, and no other (the model's own rule, said before an apply)."""
    f = rule.fields
    needed = RULE_SCOPE[f["kind"]]
    for name in ("service", "prefix", "pop", "pool"):
        if name in needed and f[name] is None and f["kind"] != "max_pool_out_percent":
            errors.setdefault(f"{rule.path}/{name}", []).append(f"A {f['kind']} rule names its {name}.")
        elif name not in needed and f[name] is not None:
            errors.setdefault(f"{rule.path}/{name}", []).append(
                f"A {f['kind']} rule has no {name}; it is scoped by {' and '.join(needed)}.")
    if f["kind"] == "max_pool_out_percent":
        if (f["pop"] is None) != (f["pool"] is None):
            missing = "pop" if f["pop"] is None else "pool"
            errors.setdefault(f"{rule.path}/{missing}", []).append(
                "A pool is named by its PoP and its slug: give both, or neither for every pool.")
        if f["threshold"] > 100:
            errors.setdefault(f"{rule.path}/threshold", []).append("A share of a pool is at most 100 (%).")


def _unique(objects: Any, names: tuple[str, ...], errors: dict[str, list[str]], why: str) -> None:
    seen: dict[tuple[Any, ...], str] = {}
    for obj in objects:
        value = tuple(obj.fields[n] for n in names)
        if value in seen:
            errors.setdefault(f"{obj.path}/{names[-1]}", []).append(f"Duplicate: {why} ({seen[value]}).")
        seen.setdefault(value, obj.path)


# --- entry points -----------------------------------------------------------------------------


def load(document: Any) -> Fleet:
    """A document from outside, checked: the Fleet, or InvalidFleet with every error by path."""
    errors = _schema_errors(document)
    if errors:
        raise InvalidFleet(errors)
    fleet = _build(document, errors)
    _check(fleet, errors)
    if errors:
        raise InvalidFleet(dict(sorted(errors.items())[:MAX_ERRORS]))
    return fleet


def build(document: Mapping[str, Any]) -> Fleet:
    """A document the control plane wrote (the live fleet): canonical form, nothing judged."""
    return _build(document, None)


def _sorted(objects: dict[str, FleetObject]) -> Iterator[FleetObject]:
    return (objects[key] for key in sorted(objects))


def to_document(fleet: Fleet) -> dict[str, Any]:
    """The file form: sections in a fixed order, objects sorted by name, every field written."""
    doc: dict[str, Any] = {"version": FORMAT_VERSION}
    by_pool: dict[str, list[FleetObject]] = {}
    for b in _sorted(fleet["backend"]):
        by_pool.setdefault(f"{b.fields['pop']}/{b.fields['pool']}", []).append(b)
    for section in SECTIONS:
        kind = next(k for k in KINDS.values() if k.section == section)
        if kind.name not in fleet:
            continue  # a section the file left out
        rows = []
        for obj in _sorted(fleet[kind.name]):
            row = {name: obj.fields[name] for name in field_names(kind.name)}
            if kind.name == "pool":
                row["backends"] = [backend_fields(b) for b in by_pool.get(obj.key, [])]
            rows.append(row)
        doc[section] = rows
    return doc


def fingerprint(fleet: Fleet) -> str:
    """What the fleet's desired configuration is, in one value: plans carry it, apply checks it (If-Match)."""
    canonical = json.dumps(to_document(fleet), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "fleet-" + hashlib.sha256(canonical.encode()).hexdigest()
