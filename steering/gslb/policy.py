"""The DNS answer policy: which VIP a resolver gets for a service. Pure: no Django here.

The snapshot is plain data built elsewhere (snapshot.py, from the DB); `lookup` answers one
PowerDNS remote-backend lookup from it without any I/O, so it is cheap and testable.

Policies (per address family, A = IPv4 VIPs, AAAA = IPv6 VIPs):
- weighted: one VIP at random in proportion to its weight, among enabled VIPs of regions with
  healthy capacity (like PowerDNS LUA `pickwrandom`);
- geo: the region of the client network (longest prefix match of the EDNS client subnet, else
  the resolver address), one VIP of it by weight; weighted when that region cannot serve or no
  network matches;
- failover: the enabled VIP with the lowest priority whose region has healthy capacity (ties
  by weight).
A VIP with weight 0 or `enabled=False` takes nothing. When no region can serve, every enabled VIP
is answered (fail open, see `_fail_open`).
"""

from __future__ import annotations

import ipaddress
import random
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

WEIGHTED = "weighted"
GEO = "geo"
FAILOVER = "failover"
POLICIES = (WEIGHTED, GEO, FAILOVER)

_FAMILIES_FOR_QTYPE: dict[str, tuple[int, ...]] = {"A": (4,), "AAAA": (6,), "ANY": (4, 6)}
_RTYPE = {4: "A", 6: "AAAA"}

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def canonical_name(name: str) -> str:
    """DNS names as PowerDNS sends them: lower case, with the trailing dot."""
    name = name.strip().lower()
    return name if name.endswith(".") else name + "."


def zone_of(fqdn: str) -> str:
    """The zone a service name lives in: its parent (api.example.net. -> example.net.)."""
    labels = canonical_name(fqdn).rstrip(".").split(".")
    return ".".join(labels[1:]) + "." if len(labels) > 1 else canonical_name(fqdn)


@dataclass(frozen=True)
class Vip:
    id: int
    region_id: int
    address: str
    weight: int = 100
    priority: int = 1
    enabled: bool = True

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.address).version


@dataclass(frozen=True)
class Service:
    id: int
    fqdn: str
    policy: str
    ttl: int
    vips: tuple[Vip, ...]
    # Regions with healthy capacity for this service (computed from backends' effective weights).
    healthy_regions: frozenset[int]


@dataclass(frozen=True)
class Zone:
    id: int
    name: str
    nameservers: tuple[str, ...]
    hostmaster: str
    serial: int
    ttl: int = 300
    negative_ttl: int = 30

    @property
    def soa(self) -> str:
        primary = self.nameservers[0] if self.nameservers else f"ns1.{self.name}"
        return f"{primary} {self.hostmaster} {self.serial} 3600 600 604800 {self.negative_ttl}"


@dataclass(frozen=True)
class Record:
    qtype: str
    qname: str
    content: str
    ttl: int
    domain_id: int = -1
    scope_mask: int = 0

    def as_remote(self) -> dict[str, Any]:
        """The remote-backend form of a record."""
        return {"qtype": self.qtype, "qname": self.qname, "content": self.content, "ttl": self.ttl,
                "domain_id": self.domain_id, "scopeMask": self.scope_mask, "auth": 1}


@dataclass(frozen=True)
class Answer:
    records: tuple[Record, ...] = ()
    service_id: int | None = None
    # Regions whose VIPs were handed out (what the answer counters count).
    regions: tuple[int, ...] = ()
    fail_open: bool = False


class _Pick:
    """A weighted random choice over VIPs (weight 0 never chosen); O(log n) per pick."""

    __slots__ = ("items", "cumulative", "total")

    def __init__(self, items: Iterable[Vip]) -> None:
        self.items = tuple(v for v in items if v.weight > 0)
        self.cumulative = list(accumulate(v.weight for v in self.items))
        self.total = self.cumulative[-1] if self.cumulative else 0

    def __bool__(self) -> bool:
        return self.total > 0

    def pick(self, rng: random.Random) -> Vip:
        return self.items[bisect_right(self.cumulative, rng.random() * self.total)]


@dataclass(frozen=True)
class _FamilyPlan:
    healthy: _Pick                  # weighted among healthy regions (also the geo fallback)
    by_region: Mapping[int, _Pick]  # geo: within one healthy region
    failover: _Pick                 # lowest priority among healthy, ties by weight
    enabled: tuple[Vip, ...]        # fail open


def _plan(service: Service, family: int) -> _FamilyPlan:
    enabled = tuple(v for v in service.vips if v.enabled and v.family == family)
    usable = [v for v in enabled if v.region_id in service.healthy_regions and v.weight > 0]
    by_region: dict[int, list[Vip]] = {}
    for v in usable:
        by_region.setdefault(v.region_id, []).append(v)
    first = min((v.priority for v in usable), default=None)
    return _FamilyPlan(
        healthy=_Pick(usable),
        by_region={region: _Pick(vips) for region, vips in by_region.items()},
        failover=_Pick(v for v in usable if v.priority == first),
        enabled=enabled,
    )


class GeoTable:
    """Longest-prefix match of client networks (CIDR -> region), one dict probe per prefix length."""

    def __init__(self, networks: Iterable[tuple[str, int]]) -> None:
        parsed = [(ipaddress.ip_network(cidr, strict=False), region) for cidr, region in networks]
        self._by_len: dict[int, dict[tuple[int, int], tuple[int, int]]] = {}
        for net, region in parsed:
            # A network with a more specific one inside it decides less than its own length says:
            # a resolver may only cache its answer for as many bits as we looked at.
            inner = [o.prefixlen for o, _ in parsed if o.version == net.version and o != net and o.subnet_of(net)]  # type: ignore[arg-type]
            scope = max([net.prefixlen, *inner])
            self._by_len.setdefault(net.prefixlen, {})[(net.version, int(net.network_address))] = (region, scope)
        self._lengths = {
            version: sorted({n.prefixlen for n, _ in parsed if n.version == version}, reverse=True) for version in (4, 6)
        }
        self.size = len(parsed)

    def match(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[int, int] | None:
        """(region id, scope mask bits) of the most specific network holding `address`."""
        value, bits = int(address), address.max_prefixlen
        for length in self._lengths[address.version]:
            hit = self._by_len[length].get((address.version, (value >> (bits - length)) << (bits - length)))
            if hit is not None:
                return hit
        return None


@dataclass
class Snapshot:
    """Everything a lookup needs, built once per state version."""

    version: int | None
    services: Mapping[str, Service]
    zones: Mapping[str, Zone]
    geo: GeoTable
    plans: dict[tuple[str, int], _FamilyPlan] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, service in self.services.items():
            for family in (4, 6):
                self.plans[(name, family)] = _plan(service, family)

    def zone_for(self, qname: str) -> Zone | None:
        labels = qname.rstrip(".").split(".")
        for i in range(len(labels)):
            zone = self.zones.get(".".join(labels[i:]) + ".")
            if zone is not None:
                return zone
        return None


def build_snapshot(
    services: Sequence[Service],
    networks: Iterable[tuple[str, int]] = (),
    *,
    version: int | None = None,
    nameservers: Sequence[str] = (),
    hostmaster: str = "",
    serial: int | None = None,
    zone_ttl: int = 300,
) -> Snapshot:
    """Index services by name and derive their zones (the parent of each service's fqdn)."""
    by_name = {canonical_name(s.fqdn): s for s in services}
    zones: dict[str, Zone] = {}
    for name in sorted(by_name):
        zname = zone_of(name)
        if zname not in zones:
            ns = tuple(canonical_name(n) for n in nameservers) or (f"ns1.{zname}", f"ns2.{zname}")
            zones[zname] = Zone(
                id=len(zones) + 1, name=zname, nameservers=ns,
                hostmaster=canonical_name(hostmaster) if hostmaster else f"hostmaster.{zname}",
                # The SOA serial follows the state version, so it moves when answers may change.
                serial=(serial if serial is not None else (version or 1)) % 2**32,
                ttl=zone_ttl,
            )
    return Snapshot(version=version, services=by_name, zones=zones, geo=GeoTable(networks))


def _client(real_remote: str | None, remote: str | None) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int] | None:
    """The client address and the bits we were given: the ECS subnet when present, else the resolver."""
    for value in (real_remote, remote):
        if not value:
            continue
        try:
            net = ipaddress.ip_network(value.split("%", 1)[0], strict=False)
        except ValueError:
            continue
        return net.network_address, net.prefixlen
    return None


def _fail_open(plan: _FamilyPlan) -> tuple[Vip, ...]:
    # Nothing healthy: answer every enabled VIP rather than NXDOMAIN or an empty answer. If our
    # health view is wrong (prober trouble, a bad push), clients still reach something; if it is
    # right, nothing is lost that an empty answer would have saved.
    return plan.enabled


def _choose(service: Service, plan: _FamilyPlan, client: tuple[Any, int] | None, geo: GeoTable,
            rng: random.Random) -> tuple[tuple[Vip, ...], int, bool]:
    """(VIPs to answer, ECS scope mask, fail open?)"""
    scope = 0
    if service.policy == GEO:
        if client is not None and geo.size:
            hit = geo.match(client[0])
            # No match is a decision on the address too: scope it to the bits we were given.
            scope = hit[1] if hit is not None else client[1]
            if hit is not None:
                local = plan.by_region.get(hit[0])
                if local:
                    return (local.pick(rng),), scope, False
        if plan.healthy:
            return (plan.healthy.pick(rng),), scope, False
    elif service.policy == FAILOVER:
        if plan.failover:
            return (plan.failover.pick(rng),), 0, False
    elif plan.healthy:
        return (plan.healthy.pick(rng),), 0, False
    return _fail_open(plan), scope, True


def lookup(
    snapshot: Snapshot,
    qname: str,
    qtype: str,
    *,
    remote: str | None = None,
    real_remote: str | None = None,
    rng: random.Random | None = None,
) -> Answer:
    """Answer one remote-backend `lookup` (qtype A, AAAA, SOA, NS or ANY; others get nothing)."""
    rng = rng or random.Random()
    qname = canonical_name(qname)
    qtype = qtype.upper()
    zone = snapshot.zone_for(qname)
    if zone is None:
        return Answer()
    records: list[Record] = []
    if qname == zone.name:
        if qtype in ("SOA", "ANY"):
            records.append(Record("SOA", zone.name, zone.soa, zone.ttl, zone.id))
        if qtype in ("NS", "ANY"):
            records.extend(Record("NS", zone.name, ns, zone.ttl, zone.id) for ns in zone.nameservers)
    service = snapshot.services.get(qname)
    families = _FAMILIES_FOR_QTYPE.get(qtype, ())
    if service is None or not families:
        return Answer(tuple(records))
    client = _client(real_remote, remote) if service.policy == GEO else None
    counted: tuple[int, ...] = ()
    fail_open = False
    for family in families:
        vips, scope, opened = _choose(service, snapshot.plans[(qname, family)], client, snapshot.geo, rng)
        records.extend(Record(_RTYPE[family], qname, v.address, service.ttl, zone.id, scope) for v in vips)
        if vips and not counted:
            # One lookup counts once (PowerDNS asks ANY and keeps the type the client wanted;
            # IPv4 first, as most clients ask A).
            counted = tuple(dict.fromkeys(v.region_id for v in vips))
            fail_open = opened
    return Answer(tuple(records), service.id, counted, fail_open)


# --- the wire form: the snapshot's inputs as JSON, as the GSLB server receives them ----------------

def snapshot_inputs_to_dict(services: Sequence[Service], networks: Iterable[tuple[str, int]], *,
                            nameservers: Sequence[str], hostmaster: str, zone_ttl: int) -> dict[str, Any]:
    return {
        "services": [{"id": s.id, "fqdn": s.fqdn, "policy": s.policy, "ttl": s.ttl,
                      "vips": [vars(v) for v in s.vips],
                      "healthy_regions": sorted(s.healthy_regions)} for s in services],
        "networks": [[cidr, region] for cidr, region in networks],
        "nameservers": list(nameservers),
        "hostmaster": hostmaster,
        "zone_ttl": zone_ttl,
    }


def snapshot_from_dict(data: Mapping[str, Any], version: int | None) -> Snapshot:
    """Rebuild the snapshot from its wire form (raises KeyError/TypeError/ValueError when malformed)."""
    services = [
        Service(id=int(s["id"]), fqdn=str(s["fqdn"]), policy=str(s["policy"]), ttl=int(s["ttl"]),
                vips=tuple(Vip(int(v["id"]), int(v["region_id"]), str(v["address"]), int(v.get("weight", 100)),
                               int(v.get("priority", 1)), bool(v.get("enabled", True))) for v in s.get("vips", ())),
                healthy_regions=frozenset(int(r) for r in s.get("healthy_regions", ())))
        for s in data.get("services", ())
    ]
    networks = [(str(cidr), int(region)) for cidr, region in data.get("networks", ())]
    return build_snapshot(services, networks, version=version, nameservers=tuple(data.get("nameservers", ())),
                          hostmaster=str(data.get("hostmaster", "")), zone_ttl=int(data.get("zone_ttl", 300)))
