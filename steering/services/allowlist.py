"""Backends may only live in networks the prober is allowed to reach (DESIGN §6)."""

from __future__ import annotations

import ipaddress
import socket

from django.conf import settings


def _allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(n, strict=False) for n in settings.STEERING_PROBE_ALLOWLIST]


def _resolve(host: str) -> list[str]:
    try:
        return [ipaddress.ip_address(host).compressed]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return []
    return sorted({str(info[4][0]) for info in infos})


def allowlist_error(host: str) -> str | None:
    """None when every address `host` stands for is in the allowlist, else why not."""
    addresses = _resolve(host)
    if not addresses:
        return f"{host!r} does not resolve to an address."
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
