"""What one PoP's HAProxy should do, as plain data: render, runtime and apply need no Django."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

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

    @property
    def proxy(self) -> str:
        return pool_proxy_name(self.id, self.slug)

    @property
    def has_rule(self) -> bool:
        return bool(self.match_host or self.match_path_prefix)


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
