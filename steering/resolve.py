"""How backend names become addresses: one place, used when a backend is written (the allowlist
check) and each time it is probed (and the probe connects to the address that was checked, so a
name cannot be re-pointed between the check and the connection: no DNS rebinding).

STEERING_RESOLVER picks the source:
- `system` (the default): the system resolver (getaddrinfo: the hosts file, then DNS as the host
  is configured), as a fleet needs;
- `hosts`: the hosts file only, never a DNS query (a lab or test bench that must not ask anyone).
Standard library only: the prober's hot path and agents may import it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket

from steering.hosts import hosts_file_addresses

MODES = ("system", "hosts")
MODE = os.environ.get("STEERING_RESOLVER", "system").strip().lower() or "system"


class Unresolvable(Exception):
    """The name gives no address; the message says why in words."""


def literal(host: str) -> str | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).compressed
    except ValueError:
        return None


def _from_addrinfo(infos: list[tuple[object, ...]]) -> list[str]:
    found = {ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]).compressed for info in infos}  # type: ignore[index]
    return sorted(found, key=lambda a: (ipaddress.ip_address(a).version, ipaddress.ip_address(a)))


def _hosts_only(host: str) -> list[str]:
    found = hosts_file_addresses(host)
    if not found:
        raise Unresolvable(f"{host!r} is not in the hosts file (STEERING_RESOLVER=hosts: names are never asked of DNS)")
    return found


def resolve_host(host: str, mode: str | None = None) -> list[str]:
    """Every address `host` stands for (an address stands for itself). Raises Unresolvable."""
    if (ip := literal(host)) is not None:
        return [ip]
    if (mode or MODE) == "hosts":
        return _hosts_only(host)
    try:
        found = _from_addrinfo(socket.getaddrinfo(host, None, type=socket.SOCK_STREAM))  # type: ignore[arg-type]
    except (socket.gaierror, UnicodeError) as exc:
        raise Unresolvable(f"{host!r} does not resolve: {exc}") from exc
    if not found:
        raise Unresolvable(f"{host!r} resolves to no address")
    return found


async def resolve_host_async(host: str, mode: str | None = None) -> list[str]:
    """resolve_host without blocking the event loop (the system resolver runs in a thread)."""
    if (ip := literal(host)) is not None:
        return [ip]
    if (mode or MODE) == "hosts":
        return _hosts_only(host)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Unresolvable(f"{host!r} does not resolve: {exc}") from exc
    found = _from_addrinfo(infos)  # type: ignore[arg-type]
    if not found:
        raise Unresolvable(f"{host!r} resolves to no address")
    return found
