"""Which anycast prefixes a PoP should announce, and why (pure: no Django, ARCHITECTURE.md §2).

A PoP announces the prefix of each service it has pools for when the operator has not withdrawn
it, the PoP and its region are in service (ready, or draining: see IN_SERVICE), and every service on that prefix
has healthy capacity here (some backend with effective weight > 0). Packets for a prefix land
wherever it is announced whatever service they are for, so one service without capacity
withdraws a prefix it shares with others: better the next PoP than a blackhole.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

ADMIN_WORDS = {"maint": "in maintenance", "draining": "draining", "drained": "drained"}


@dataclass(frozen=True)
class ServiceFacts:
    """One anycast service the PoP has pools for."""

    slug: str
    prefix: str
    usable_backends: int          # backends here with effective weight > 0
    backends: int = 0             # all backends here (for the reason only)


@dataclass(frozen=True)
class PopFacts:
    slug: str
    announce: str = "announce"    # the operator's wish: announce | withdraw
    admin_state: str = "ready"
    region: str = ""
    region_admin_state: str = "ready"
    services: tuple[ServiceFacts, ...] = ()


@dataclass(frozen=True)
class PrefixDecision:
    prefix: str
    announce: bool
    reason: str
    services: tuple[str, ...]


@dataclass(frozen=True)
class PopDecision:
    desired: tuple[str, ...]                  # prefixes to announce, sorted
    reason: str                               # one line for the operator
    prefixes: tuple[PrefixDecision, ...]      # every anycast prefix the PoP serves, announced or not

    @property
    def withdrawn(self) -> tuple[str, ...]:
        return tuple(p.prefix for p in self.prefixes if not p.announce)


def normalise_prefix(prefix: str) -> str:
    """The canonical text of a prefix ("198.51.100.7/24" -> "198.51.100.0/24"); ValueError if not one."""
    return str(ipaddress.ip_network(prefix.strip(), strict=False))


def sort_prefixes(prefixes: Iterable[str]) -> tuple[str, ...]:
    nets = {ipaddress.ip_network(p, strict=False) for p in prefixes}
    return tuple(str(n) for n in sorted(nets, key=lambda n: (n.version, n.network_address, n.prefixlen)))


# A draining site still carries its open sessions, and a layered drain withdraws anycast as its
# own step, after DNS has emptied (services/layered.py): withdrawing as soon as the site turns
# "draining" would move packets before resolvers move, the very order a layered drain exists to
# keep. A plain drain withdraws anyway once its backends stop taking traffic (no usable backends).
IN_SERVICE = frozenset({"ready", "draining"})


def _site_blocker(pop: PopFacts) -> str | None:
    """Why the whole PoP withdraws, or None when the site itself may announce."""
    if pop.announce != "announce":
        return "operator withdrew"
    if pop.admin_state not in IN_SERVICE:
        return f"PoP {ADMIN_WORDS.get(pop.admin_state, pop.admin_state)}"
    if pop.region_admin_state not in IN_SERVICE:
        word = ADMIN_WORDS.get(pop.region_admin_state, pop.region_admin_state)
        return f"region {pop.region} {word}" if pop.region else f"region {word}"
    return None


def _names(slugs: Iterable[str]) -> str:
    return ", ".join(sorted(slugs))


def decide(pop: PopFacts) -> PopDecision:
    """The desired announcements of one PoP, each with its reason."""
    by_prefix: dict[str, list[ServiceFacts]] = {}
    for service in pop.services:
        by_prefix.setdefault(normalise_prefix(service.prefix), []).append(service)
    if not by_prefix:
        return PopDecision((), "no anycast service has pools here", ())
    blocker = _site_blocker(pop)
    decisions: list[PrefixDecision] = []
    for prefix in sort_prefixes(by_prefix):
        services = by_prefix[prefix]
        slugs = tuple(sorted({s.slug for s in services}))
        if blocker:
            decisions.append(PrefixDecision(prefix, False, blocker, slugs))
            continue
        empty = sorted({s.slug for s in services if s.usable_backends <= 0})
        if empty:
            decisions.append(PrefixDecision(prefix, False, f"no healthy backends for {_names(empty)}", slugs))
        else:
            decisions.append(PrefixDecision(prefix, True, f"healthy backends for {_names(slugs)}", slugs))
    desired = tuple(d.prefix for d in decisions if d.announce)
    return PopDecision(desired, blocker or _summary(decisions), tuple(decisions))


def _summary(decisions: list[PrefixDecision]) -> str:
    withdrawn = [d for d in decisions if not d.announce]
    if not withdrawn:
        return "announcing: " + "; ".join(d.reason for d in decisions)
    reasons = "; ".join(f"{d.reason} ({d.prefix})" if len(decisions) > 1 else d.reason for d in withdrawn)
    if len(withdrawn) == len(decisions):
        return reasons
    kept = ", ".join(d.prefix for d in decisions if d.announce)
    return f"{reasons}; still announcing {kept}"
