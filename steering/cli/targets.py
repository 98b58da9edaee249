"""Names as people say them (`bom1/api-web/api-3`, `bom1`, `region:ap-south`) resolved to API objects.

Resolution uses only the public list filters, so the CLI needs no endpoint of its own; a name
that matches nothing says which part was missing (the PoP, the pool in it, or the backend).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from steering.cli.client import Client, NotFound

KINDS = ("backend", "pool", "pop", "region")
_PLURAL = {"backend": "backends", "pool": "pools", "pop": "pops", "region": "regions"}
_ALIASES = {"backends": "backend", "pools": "pool", "pops": "pop", "regions": "region"}

TARGET_HELP = (
    "pop/pool/backend (a backend, e.g. bom1/api-web/api-3), pop/pool (a pool), pop (a PoP, e.g. bom1), "
    "region:SLUG (a region); by id: backend:ID, pool:ID, pop:ID, region:ID; pop:SLUG works too"
)


@dataclass(frozen=True)
class Target:
    """A resolved object: its kind, id, the name people use, and the API's representation of it."""

    kind: str
    id: int
    label: str
    obj: dict[str, Any]

    @property
    def api_path(self) -> str:
        return f"/api/v1/{_PLURAL[self.kind]}/{self.id}/"

    def describe(self) -> str:
        return self.label if self.kind in ("backend", "pool") else f"{self.kind} {self.label}"


class UnknownTarget(NotFound):
    """A name that matches nothing; the message names the missing part."""

    def __init__(self, message: str) -> None:
        super().__init__(404, {"code": "not_found", "detail": message})


def _one(client: Client, kind: str, params: dict[str, Any], missing: str) -> dict[str, Any]:
    rows = client.first_page(f"/api/v1/{_PLURAL[kind]}/", params, size=2)
    if not rows:
        raise UnknownTarget(missing)
    return rows[0]


def _by_id(client: Client, kind: str, ident: str) -> dict[str, Any]:
    try:
        obj = client.get(f"/api/v1/{_PLURAL[kind]}/{int(ident)}/")
    except NotFound:
        raise UnknownTarget(f"no {kind} with id {ident}") from None
    return obj if isinstance(obj, dict) else {}


def _label(kind: str, obj: dict[str, Any]) -> str:
    if kind == "backend":
        return str(obj.get("path") or obj.get("name"))
    if kind == "pool":
        return f"{obj.get('pop_slug')}/{obj.get('slug')}"
    return str(obj.get("slug"))


def _pool(client: Client, pop_slug: str, pool_slug: str) -> dict[str, Any]:
    rows = client.first_page("/api/v1/pools/", {"pop_slug": pop_slug, "slug": pool_slug}, size=2)
    if rows:
        return rows[0]
    _one(client, "pop", {"slug": pop_slug}, f"no PoP named {pop_slug!r}")
    raise UnknownTarget(f"no pool {pool_slug!r} in PoP {pop_slug}")


def _by_name(client: Client, kind: str, name: str) -> dict[str, Any]:
    parts = name.split("/")
    if kind in ("pop", "region"):
        obj = client.first_page(f"/api/v1/{_PLURAL[kind]}/", {"slug": name}, size=2)
        if obj:
            return obj[0]
        if name.isdigit():  # pop:12 / region:3 name ids when no slug is all digits
            return _by_id(client, kind, name)
        raise UnknownTarget(f"no {'PoP' if kind == 'pop' else 'region'} named {name!r}")
    if kind == "pool" and len(parts) == 2:
        return _pool(client, *parts)
    if kind == "backend" and len(parts) == 3:
        pool = _pool(client, parts[0], parts[1])
        return _one(client, "backend", {"pool": pool["id"], "name": parts[2]},
                    f"no backend {parts[2]!r} in pool {parts[0]}/{parts[1]}")
    shape = "pop/pool/backend" if kind == "backend" else "pop/pool"
    raise UnknownTarget(f"{kind} {name!r}: give an id ({kind}:ID) or a name like {shape}")


def parse(spec: str) -> tuple[str, str]:
    """(kind, name-or-id) from what was typed, before any request: `bom1/api-web` -> ("pool", "bom1/api-web")."""
    spec = spec.strip().strip("/")
    head, sep, rest = spec.partition(":")
    if sep and _ALIASES.get(head, head) in KINDS:
        if not rest:
            raise UnknownTarget(f"{spec!r}: nothing after {head}:")
        return _ALIASES.get(head, head), rest
    if not spec:
        raise UnknownTarget("an empty target; " + TARGET_HELP)
    depth = spec.count("/")
    if depth > 2:
        raise UnknownTarget(f"{spec!r} has too many parts; " + TARGET_HELP)
    return ("pop", "pool", "backend")[depth], spec


def resolve(client: Client, spec: str) -> Target:
    """The object `spec` names, fetched through the API's list filters; UnknownTarget when nothing matches."""
    kind, name = parse(spec)
    if kind in ("backend", "pool") and name.isdigit():
        obj = _by_id(client, kind, name)
    else:
        obj = _by_name(client, kind, name)
    return Target(kind=kind, id=int(obj["id"]), label=_label(kind, obj), obj=obj)


def site_summary(client: Client, target: Target) -> dict[str, Any]:
    """A pool, PoP or region's backends counted by admin state and health, its out-of-service
    backends and running operations: list filters and counts, so a few small requests at any size."""
    flt = {target.kind: target.id}
    path = "/api/v1/backends/"
    out_of_service = client.first_page(path, {**flt, "admin_state": ["draining", "drained", "maint"]}, size=20)
    op_ids = {b["operation"] for b in out_of_service if b.get("operation")}
    ops = client.first_page("/api/v1/operations/", {"target_type": target.kind, "target_id": target.id,
                                                    "status": "running"}, size=10)
    ops += [op for op in (client.get(f"/api/v1/operations/{i}/") for i in sorted(op_ids)[:5])
            if op.get("status") in ("running", "paused") and op["id"] not in {o["id"] for o in ops}]
    return {
        "type": target.kind,
        "object": target.obj,
        "backends": {
            "total": client.count(path, flt),
            "admin_state": {s: client.count(path, {**flt, "admin_state": s}) for s in ("ready", "draining", "drained", "maint")},
            "health": {h: client.count(path, {**flt, "health": h}) for h in ("up", "down", "unknown", "stale")},
        },
        "out_of_service": out_of_service,
        "running_operations": ops,
    }
