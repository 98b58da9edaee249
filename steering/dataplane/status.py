"""Desired vs applied, per PoP and layer, in numbers and in words (a read model).

For a layer served by several agent instances (two HAProxy hosts in one PoP), the applied
version is the lowest among the instances seen within STEERING_AGENT_FORGET_SECONDS: a change
is in force at the PoP only when every live instance runs it.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from django.conf import settings
from django.db.models import Min

from steering.choices import DataplaneLayer
from steering.models import Change, DataplaneState, PoP
from steering.readmodels.dataplane import read_seen
from steering.readmodels.version import current_version

NAMES = {DataplaneLayer.LOCAL: "HAProxy", DataplaneLayer.ANYCAST: "ExaBGP", DataplaneLayer.DNS: "GSLB server"}


# What a layer's status says, each with its row in steering.choices.STATE_STYLES.
STATES = ("in_sync", "applying", "behind", "refused", "absent")


@dataclass
class LayerStatus:
    layer: str
    pop: str | None
    desired_version: int
    applied_version: int | None           # None: no agent has ever acknowledged
    state: str                            # in_sync | applying | behind | refused | absent
    lag_seconds: float | None             # since the first change it has not applied
    error: str = ""
    error_version: int | None = None
    seen_at: float | None = None          # unix time of the agent's last contact
    detail: str = ""
    instances: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _clock(ts: float | None) -> str:
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).strftime("%H:%M:%S") if ts else "never"


def _first_change_after(version: int) -> float | None:
    first = Change.objects.filter(version__gt=version).aggregate(t=Min("time"))["t"]
    return first.timestamp() if first else None


@dataclass
class _Instance:
    instance: str
    applied_version: int
    seen_at: float | None
    error: str
    error_version: int | None
    token: str

    @property
    def refusing(self) -> bool:
        return bool(self.error) and (self.error_version or 0) > self.applied_version


def summarise(layer: str, pop_slug: str | None, rows: list[DataplaneState], desired: int,
              seen: dict[str, float], now: float) -> LayerStatus:
    scope = pop_slug or "dns"
    forget = settings.STEERING_AGENT_FORGET_SECONDS
    instances = [
        _Instance(row.instance, row.applied_version,
                  seen.get(f"{layer}:{scope}:{row.instance}") or (row.seen_at.timestamp() if row.seen_at else None),
                  row.error, row.error_version, row.agent_token_name)
        for row in rows
    ]
    live = [i for i in instances if i.seen_at is not None and now - i.seen_at <= forget]
    counted = live or instances
    shown = [asdict(i) for i in counted]
    name = f"{pop_slug + ' ' if pop_slug else ''}{NAMES[DataplaneLayer(layer)]}"
    if not counted:
        return LayerStatus(layer, pop_slug, desired, None, "absent", None,
                           detail=f"no {name} agent has reported: the layer is not connected")
    applied = min(i.applied_version for i in counted)
    seen_at = max((i.seen_at for i in counted if i.seen_at is not None), default=None)
    lag = None
    if applied < desired:
        since = _first_change_after(applied)
        lag = round(max(0.0, now - since), 1) if since else None
    refusing = [i for i in counted if i.refusing]
    if refusing:
        worst = max(refusing, key=lambda i: i.error_version or 0)
        return LayerStatus(layer, pop_slug, desired, applied, "refused", lag, worst.error, worst.error_version,
                           seen_at, f"{name} refused version {worst.error_version}: {worst.error}", shown)
    if applied >= desired:
        return LayerStatus(layer, pop_slug, desired, applied, "in_sync", 0.0, seen_at=seen_at,
                           detail=f"{name} runs version {applied}", instances=shown)
    behind = lag is not None and lag > settings.STEERING_DATAPLANE_ACK_TIMEOUT_SECONDS
    state = "behind" if behind else "applying"
    detail = (f"{name} has not applied version {desired} for {int(lag or 0)} s; agent last seen {_clock(seen_at)}"
              if behind else f"{name} is applying version {desired} (runs {applied})")
    return LayerStatus(layer, pop_slug, desired, applied, state, lag, seen_at=seen_at, detail=detail, instances=shown)


def all_statuses(now: float | None = None) -> dict[str, Any]:
    """{"version", "dns": LayerStatus, "pops": {slug: {"local": LayerStatus, "anycast": LayerStatus}}}"""
    now = now if now is not None else time.time()
    desired = current_version()
    seen = read_seen()
    rows: dict[tuple[str, int | None], list[DataplaneState]] = {}
    for row in DataplaneState.objects.all():
        rows.setdefault((row.layer, row.pop_id), []).append(row)
    pops = {}
    for pop_id, slug in PoP.objects.order_by("slug").values_list("pk", "slug"):
        pops[slug] = {layer: summarise(layer, slug, rows.get((layer, pop_id), []), desired, seen, now).as_dict()
                      for layer in (DataplaneLayer.LOCAL, DataplaneLayer.ANYCAST)}
    dns = summarise(DataplaneLayer.DNS, None, rows.get((DataplaneLayer.DNS, None), []), desired, seen, now)
    return {"version": desired, "dns": dns.as_dict(), "pops": pops}


def layer_status(layer: str, pop: PoP | None, now: float | None = None) -> LayerStatus:
    now = now if now is not None else time.time()
    rows = list(DataplaneState.objects.filter(layer=layer, pop=pop))
    return summarise(layer, pop.slug if pop else None, rows, current_version(), read_seen(), now)


def confirmed_versions(layer: str, pop_ids: set[int], now: float | None = None) -> dict[int, int]:
    """The version each PoP's layer is known to run (lowest of its live instances); PoPs whose
    agents never acknowledged are absent."""
    now = now if now is not None else time.time()
    forget = settings.STEERING_AGENT_FORGET_SECONDS
    seen = read_seen()
    by_pop: dict[int, list[tuple[int, float | None]]] = {}
    for row in DataplaneState.objects.filter(layer=layer, pop_id__in=pop_ids).select_related("pop"):
        assert row.pop is not None
        at = seen.get(f"{layer}:{row.pop.slug}:{row.instance}") or (row.seen_at.timestamp() if row.seen_at else None)
        by_pop.setdefault(row.pop_id, []).append((row.applied_version, at))  # type: ignore[arg-type]
    out: dict[int, int] = {}
    for pop_id, items in by_pop.items():
        live = [v for v, at in items if at is not None and now - at <= forget] or [v for v, _ in items]
        out[pop_id] = min(live)
    return out
