"""The desired state of one data plane, as its agent receives it (the agent contract, read side).

A document is `{"layer", "pop", "version", "etag", "spec"}`:
- `version` is the state version (steering.readmodels.version) read BEFORE the data, so the spec is
  at least as new as it: an agent that acknowledges `version` has applied everything up to it;
- `etag` digests the spec alone, so an agent that already runs an identical spec acknowledges the
  new version without touching its data plane;
- `spec` is plain JSON: `local` a PoP's HAProxy state (steering.dataplane.haproxy.model wire
  form) plus the addresses its frontends bind; `anycast` the PoP's desired announcements;
  `dns` the GSLB snapshot's inputs (steering.gslb.policy wire form).
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from steering.choices import DataplaneLayer
from steering.dataplane.haproxy.desired import RAMP_REFRESH_SECONDS, build_pop_spec_dicts
from steering.models import VIP, PoP
from steering.readmodels.version import current_version


def frontend_binds(pops: list[PoP], services_of: dict[int, set[str]]) -> dict[int, dict[str, list[dict[str, Any]]]]:
    """Per PoP, service slug -> the addresses its frontend binds there: the service's VIPs in the
    PoP's region, on the service's port (production binds what the model says; the demo maps
    them to loopback in its agent)."""
    by_region: dict[tuple[int, str], list[dict[str, Any]]] = {}
    vips = (VIP.objects.filter(region_id__in={p.region_id for p in pops}, enabled=True)
            .select_related("service").order_by("service__slug", "address"))
    for vip in vips:
        by_region.setdefault((vip.region_id, vip.service.slug), []).append(
            {"address": vip.address, "port": vip.service.port})
    return {pop.pk: {slug: by_region[(pop.region_id, slug)] for slug in sorted(services_of.get(pop.pk, ()))
                     if (pop.region_id, slug) in by_region} for pop in pops}


def _local_specs(pops: list[PoP]) -> tuple[dict[int, dict[str, Any]], dict[int, float | None]]:
    """The HAProxy specs of these PoPs, and when each next changes by the clock alone."""
    specs, refresh = build_pop_spec_dicts(pops)
    services_of = {pk: {s["slug"] for s in spec["services"]} for pk, spec in specs.items()}
    binds = frontend_binds(pops, services_of)
    return {pk: {**spec, "binds": binds[pk]} for pk, spec in specs.items()}, refresh


def desired_specs(layer: str, pops: list[PoP]) -> dict[int, dict[str, Any]]:
    """The specs of several PoPs' `layer` at once (a handful of queries, whatever their number)."""
    if layer == DataplaneLayer.LOCAL:
        return _local_specs(pops)[0]
    if layer == DataplaneLayer.ANYCAST:
        from steering.readmodels.announcements import desired_for, managed_prefixes

        managed = managed_prefixes()
        out: dict[int, dict[str, Any]] = {}
        for pk, (pop, decision) in desired_for(pops).items():
            out[pk] = {"pop": pop.slug, "id": pop.pk, "desired": list(decision.desired), "reason": decision.reason,
                       "prefixes": [{"prefix": d.prefix, "announce": d.announce, "reason": d.reason,
                                     "services": list(d.services)} for d in decision.prefixes],
                       "managed": managed}
        return out
    raise ValueError(f"{layer!r} is not a PoP layer")


def desired_spec(layer: str, pop: PoP | None) -> dict[str, Any]:
    if layer == DataplaneLayer.DNS:
        from steering.gslb.snapshot import snapshot_inputs

        return snapshot_inputs()
    assert pop is not None
    return desired_specs(layer, [pop])[pop.pk]


def refresh_times(layer: str, pops: list[PoP] | None, now: float | None = None) -> dict[int | None, float | None]:
    """When each scope's spec next changes by the clock alone (a slow-start ramp in progress, an
    ejection running out), or None when only a new version can change it. Keyed by PoP id
    (None: the DNS layer, which all backends feed)."""
    import datetime

    from django.utils import timezone

    from steering.models import Backend

    now_dt = timezone.now() if now is None else datetime.datetime.fromtimestamp(now, tz=datetime.UTC)
    now_ts = now_dt.timestamp()
    scopes: list[int | None] = [None] if pops is None else [p.pk for p in pops]
    out: dict[int | None, float | None] = dict.fromkeys(scopes)
    backends = Backend.objects.all() if pops is None else Backend.objects.filter(pool__pop__in=pops)

    def scope_of(pop_id: int) -> int | None:
        return None if pops is None else pop_id

    def sooner(scope: int | None, at: float) -> None:
        current = out.get(scope)
        out[scope] = at if current is None else min(current, at)

    # Slow start lasts at most an hour (the model's validator), so older returns cannot be ramping.
    ramping = backends.filter(slow_start_seconds__gt=0, ready_since__gt=now_dt - datetime.timedelta(hours=1))
    for pop_id, since, seconds in ramping.values_list("pool__pop_id", "ready_since", "slow_start_seconds"):
        if since is not None and since.timestamp() + seconds > now_ts:
            sooner(scope_of(pop_id), now_ts + RAMP_REFRESH_SECONDS)
    for pop_id, until in backends.filter(ejected_until__gt=now_dt).values_list("pool__pop_id", "ejected_until"):
        if until is not None:
            sooner(scope_of(pop_id), until.timestamp())
    return out


def refresh_at(layer: str, pop: PoP | None, now: float | None = None) -> float | None:
    return refresh_times(layer, None if layer == DataplaneLayer.DNS else [pop] if pop else [], now).get(
        None if layer == DataplaneLayer.DNS or pop is None else pop.pk)


def encode_spec(spec: dict[str, Any]) -> bytes:
    # orjson: a fleet-wide change encodes 200 PoPs' specs at once, several times faster than json.
    # Sorted keys: the digest of equal specs is equal however their dicts were assembled.
    return orjson.dumps(spec, option=orjson.OPT_SORT_KEYS, default=str)


def etag_of(encoded_spec: bytes) -> str:
    return '"' + hashlib.sha256(encoded_spec).hexdigest()[:32] + '"'


def spec_etag(spec: dict[str, Any]) -> str:
    return etag_of(encode_spec(spec))


def desired_document(layer: str, pop: PoP | None) -> dict[str, Any]:
    version = current_version()  # first: the spec read next is at least this new
    spec = desired_spec(layer, pop)
    return {"layer": layer, "pop": pop.slug if pop else None, "version": version, "etag": spec_etag(spec),
            "refresh_at": refresh_at(layer, pop), "spec": spec}


def encoded_documents(layer: str, pops: list[PoP]) -> dict[int, tuple[dict[str, Any], bytes]]:
    """desired_document for several PoPs of one layer, built together, each with its spec
    encoded (the bytes its etag digests, which an answer's body can carry as they are)."""
    version = current_version()
    refresh: dict[int, float | None] | dict[int | None, float | None]
    if layer == DataplaneLayer.LOCAL:
        specs, refresh = _local_specs(pops)
    else:
        specs, refresh = desired_specs(layer, pops), refresh_times(layer, pops)
    out: dict[int, tuple[dict[str, Any], bytes]] = {}
    for pop in pops:
        encoded = encode_spec(specs[pop.pk])
        out[pop.pk] = ({"layer": layer, "pop": pop.slug, "version": version, "etag": etag_of(encoded),
                        "refresh_at": refresh.get(pop.pk), "spec": specs[pop.pk]}, encoded)
    return out


def desired_documents(layer: str, pops: list[PoP]) -> dict[int, dict[str, Any]]:
    """desired_document for several PoPs of one layer, built together."""
    return {pk: document for pk, (document, _encoded) in encoded_documents(layer, pops).items()}
