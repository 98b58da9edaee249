"""Backends may only live in networks the prober is allowed to reach (DESIGN §6).

Hostnames are resolved through the hosts file only: checking an address must never send a DNS
query anywhere (the loopback-only rule), so a name the hosts file does not know is refused with
a clear error instead of being looked up.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings

from steering import hosts
from steering.hosts import hosts_file_addresses


def _allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(n, strict=False) for n in settings.STEERING_PROBE_ALLOWLIST]


def _resolve(host: str) -> list[str]:
    try:
        return [ipaddress.ip_address(host).compressed]
    except ValueError:
        return hosts_file_addresses(host)


def allowlist_error(host: str) -> str | None:
    """None when every address `host` stands for is in the allowlist, else why not."""
    addresses = _resolve(host)
    if not addresses:
        return (f"{host!r} is not in {hosts.HOSTS_FILE}; names are checked against the probe allowlist without DNS, "
                "so give an address (or add the name to the hosts file).")
    networks = _allowed_networks()
    for addr in addresses:
        ip = ipaddress.ip_address(addr)
        if not any(ip.version == net.version and ip in net for net in networks):
            allowed = ", ".join(settings.STEERING_PROBE_ALLOWLIST)
            return (
                f"{addr} is outside the probe allowlist ({allowed}); health checks go nowhere else. "
                "Ask an admin to extend STEERING_PROBE_ALLOWLIST if this network is yours."
            )
    return None
