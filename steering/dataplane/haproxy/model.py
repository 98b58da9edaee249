"""What one PoP's HAProxy should do, as plain data: render, runtime and apply need no Django."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any

# Runtime states we drive. "drained" and "maint" are both `maint` in HAProxy: nothing new, nothing
# persistent; "draining" is `drain`: no new sessions, the open ones finish.
READY, DRAIN, MAINT = "ready", "drain", "maint"
ADMIN_TO_RUNTIME = {"ready": READY, "draining": DRAIN, "drained": MAINT, "maint": MAINT}

# Ours -> HAProxy's `balance`. All are dynamic (HAProxy 2.6 adds servers at runtime only to a
# backend with a dynamic algorithm): `source` needs `hash-type consistent` for that.
ALGORITHMS = {"roundrobin": "roundrobin", "leastconn": "leastconn", "source": "source", "first": "first",
              "random": "random"}

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_name(text: str) -> str:
    """HAProxy proxy/server names allow letters, digits, '-', '_', '.' (and ':')."""
    return _UNSAFE.sub("-", text).strip("-") or "x"


def pool_proxy_name(pool_id: int, slug: str) -> str:
    """Stable across renames of anything but the pool slug: the id makes it unique in the PoP."""
    return f"pool-{pool_id}-{safe_name(slug)}"


def service_frontend_name(slug: str) -> str:
    return f"svc-{safe_name(slug)}"


@dataclass(frozen=True)
class ServerSpec:
    name: str            # HAProxy server name (the backend's slug name, unique in its pool)
    address: str
    port: int
    weight: int          # effective weight (capacity.explain_effective_weight), 0..256
    state: str           # READY | DRAIN | MAINT
    backup: bool = False
    backend_id: int | None = None
    weight_reason: str = ""
    # For the agent's bound on HAProxy's own observe (bound.py, as outlier ejection counts them):
    capacity: float = 0.0   # requests/s it can carry (Backend.capacity_rps; 0: not declared)
    ejected: bool = False   # outlier ejection has it out now (its weight is 0 for that)


@dataclass(frozen=True)
class PoolSpec:
    id: int
    slug: str
    service: str         # service slug
    mode: str            # "http" | "tcp" as configured on the pool (l7 | l4)
    algorithm: str
    match_host: str = ""
    match_path_prefix: str = ""
    rule_priority: int = 100
    backup_pool_id: int | None = None
    servers: tuple[ServerSpec, ...] = ()
    # Passive health in the data plane (steering.models.Pool; rendered by render.py): a failed
    # attempt is retried `retries` times, each on another server (`redispatch`), for the `retry_on`
    # events (HTTP only; past a refused connection only for idempotent methods); `observe` layer4
    # takes a server out after `error_limit` failed connections in a row.
    retries: int = 3
    redispatch: bool = True
    retry_on: str = "conn-failure empty-response response-timeout"
    observe: str = "layer4"
    error_limit: int = 5
    # Not rendered: the bound the agent holds HAProxy's observe to (bound.py; Pool.outlier_max_ejected_percent
    # and min_healthy_percent), the same one outlier ejection obeys.
    max_ejected_percent: int = 10
    min_healthy_percent: int = 50

    @property
    def proxy(self) -> str:
        return pool_proxy_name(self.id, self.slug)

    @property
    def primaries(self) -> tuple[ServerSpec, ...]:
        return tuple(s for s in self.servers if not s.backup)

    @property
    def has_rule(self) -> bool:
        return bool(self.match_host or self.match_path_prefix)


# PoolSpec fields no config line depends on: changing them needs no reload.
NOT_RENDERED = frozenset({"servers", "max_ejected_percent", "min_healthy_percent"})


@dataclass(frozen=True)
class ServiceSpec:
    slug: str
    protocol: str        # "http" | "tcp"

    @property
    def frontend(self) -> str:
        return service_frontend_name(self.slug)


@dataclass(frozen=True)
class PopSpec:
    slug: str
    services: tuple[ServiceSpec, ...]
    pools: tuple[PoolSpec, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)

    def pool(self, pool_id: int) -> PoolSpec | None:
        return next((p for p in self.pools if p.id == pool_id), None)

    def by_proxy(self) -> dict[str, PoolSpec]:
        return {p.proxy: p for p in self.pools}


# --- the wire form: how the desired state travels to the agent (JSON) and back -----------------

def _build(cls: type, data: dict[str, Any]) -> Any:
    """A dataclass from a dict, ignoring keys it does not know (a newer control plane may send
    more than an older agent understands) and taking defaults for keys it does not get."""
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in known})


def pop_spec_to_dict(spec: PopSpec) -> dict[str, Any]:
    # By hand rather than dataclasses.asdict, which deep-copies every value: a fleet-wide change
    # serialises 20,000 servers, and asdict was most of that time. The specs are flat dataclasses.
    return {
        "slug": spec.slug,
        "services": [dict(vars(s)) for s in spec.services],
        "pools": [{**vars(p), "servers": [dict(vars(s)) for s in p.servers]} for p in spec.pools],
        "notes": list(spec.notes),
    }


def pop_spec_from_dict(data: dict[str, Any]) -> PopSpec:
    pools = tuple(
        _build(PoolSpec, {**p, "servers": tuple(_build(ServerSpec, s) for s in p.get("servers", ()))})
        for p in data.get("pools", ())
    )
    return PopSpec(
        slug=str(data["slug"]),
        services=tuple(_build(ServiceSpec, s) for s in data.get("services", ())),
        pools=pools,
        notes=tuple(data.get("notes", ())),
    )
