"""Names resolved through the hosts file only: nothing here ever sends a DNS query.

Backends may be named, but checking a name against the probe allowlist (and probing it) must
not reach any resolver beyond this machine (the loopback-only rule).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

HOSTS_FILE = Path("/etc/hosts")


def hosts_file_addresses(name: str) -> list[str]:
    """Addresses the hosts file gives `name` (case-insensitive), without any DNS query."""
    wanted = name.rstrip(".").lower()
    found: list[str] = []
    try:
        lines = _hosts_path().read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and wanted in (f.lower() for f in fields[1:]):
            try:
                found.append(ipaddress.ip_address(fields[0].split("%", 1)[0]).compressed)
            except ValueError:
                continue
    return sorted(set(found))


def _hosts_path() -> Path:
    return HOSTS_FILE
