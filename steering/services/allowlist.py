"""Backends may only live in networks the prober is allowed to reach (the probe allowlist).

A name is resolved (steering.resolve: the system resolver, or the hosts file only when
STEERING_RESOLVER=hosts) and every address it gives must be inside the allowlist. The allowlist
setting is the only gate: nothing here refuses an address for what it is.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings

from steering.hosts import hosts_file_addresses  # noqa: F401  (re-exported for callers and tests)
from steering.resolve import Unresolvable, resolve_host


def _allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(n, strict=False) for n in settings.STEERING_PROBE_ALLOWLIST]


def allowlist_error(host: str) -> str | None:
    """None when every address `host` stands for is in the allowlist, else why not."""
    try:
        addresses = resolve_host(host)
    except Unresolvable as exc:
        return f"{exc}; give an address, or a name that resolves."
    networks = _allowed_networks()
    for addr in addresses:
        ip = ipaddress.ip_address(addr)
        if not any(ip.version == net.version and ip in net for net in networks):
            allowed = ", ".join(settings.STEERING_PROBE_ALLOWLIST)
            shown = addr if addr == host else f"{host} resolves to {addr}, which"
            return (
                f"{shown} is outside the probe allowlist ({allowed}); health checks go nowhere else. "
                "Ask an admin to extend STEERING_PROBE_ALLOWLIST if this network is yours."
            )
    return None
