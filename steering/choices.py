"""Every state the product shows, with its colour and symbol, in one place.

The API serves this table at /api/v1/states/ so the dashboard and the API never disagree.
Colour never travels alone: each state has a symbol and a word too.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import models


class AdminState(models.TextChoices):
    READY = "ready", "ready"
    DRAINING = "draining", "draining"
    DRAINED = "drained", "drained"
    MAINT = "maint", "maintenance"


class Health(models.TextChoices):
    UNKNOWN = "unknown", "unknown"
    UP = "up", "up"
    DOWN = "down", "down"
    STALE = "stale", "stale"


class PoolMode(models.TextChoices):
    L4 = "l4", "L4 (TCP)"
    L7 = "l7", "L7 (HTTP)"


class Algorithm(models.TextChoices):
    ROUNDROBIN = "roundrobin", "round robin"
    LEASTCONN = "leastconn", "least connections"
    SOURCE = "source", "source hash"
    FIRST = "first", "first available"
    RANDOM = "random", "random"


class ServiceProtocol(models.TextChoices):
    TCP = "tcp", "TCP"
    HTTP = "http", "HTTP"


class SafetyRuleKind(models.TextChoices):
    MIN_DNS_REGIONS = "min_dns_regions", "at least N regions in DNS for a service"
    MIN_ANNOUNCING_POPS = "min_announcing_pops", "at least N PoPs announcing a prefix"
    MAX_POOL_OUT_PERCENT = "max_pool_out_percent", "at most X% of a pool out of service at once"


class DnsPolicy(models.TextChoices):
    WEIGHTED = "weighted", "weighted"
    GEO = "geo", "geo (client network / ECS)"
    FAILOVER = "failover", "ordered failover"


class MonitorKind(models.TextChoices):
    TCP = "tcp", "TCP connect"
    HTTP = "http", "HTTP"
    HTTPS = "https", "HTTPS"


class HttpMethod(models.TextChoices):
    GET = "GET", "GET"
    HEAD = "HEAD", "HEAD"


class AnnounceState(models.TextChoices):
    ANNOUNCE = "announce", "announce"
    WITHDRAW = "withdraw", "withdraw"


class OperationKind(models.TextChoices):
    DRAIN = "drain", "drain"
    UNDRAIN = "undrain", "undrain"
    MAINTENANCE = "maintenance", "maintenance"
    WEIGHT = "weight", "weight"
    ANNOUNCE = "announce", "announce"
    WITHDRAW = "withdraw", "withdraw"
    LAYERED_DRAIN = "layered_drain", "layered drain"
    # A fleet file applied as one audited change of the topology (steering.services.fleet).
    FLEET_APPLY = "fleet_apply", "fleet apply"


class OperationStatus(models.TextChoices):
    # A drain or maintenance with a start time ahead (not_before): the scheduler starts it then.
    SCHEDULED = "scheduled", "scheduled"
    RUNNING = "running", "running"
    PAUSED = "paused", "paused"
    SUCCEEDED = "succeeded", "succeeded"
    ABORTED = "aborted", "aborted"
    FAILED = "failed", "failed"
    # Finished in the desired state, but a data plane never acknowledged it (see DataplaneState).
    UNCONFIRMED = "unconfirmed", "unconfirmed"


OPERATION_FINAL_STATES = frozenset({OperationStatus.SUCCEEDED, OperationStatus.ABORTED, OperationStatus.FAILED,
                                    OperationStatus.UNCONFIRMED})


class WebhookFormat(models.TextChoices):
    JSON = "json", "JSON (signed event envelope)"
    SLACK = "slack", "Slack-compatible ({\"text\", \"blocks\"})"


class DeliveryStatus(models.TextChoices):
    """A webhook delivery's life (steering.services.webhooks): pending until its first try;
    failed while retries are left (next_attempt_at says when); dead after the last one."""

    PENDING = "pending", "pending"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed, retrying"
    DEAD = "dead", "dead letter"


# Every event a webhook can subscribe to (steering.services.notifications emits them). A
# subscription lists some (none: all of them); a new event is added here, never improvised.
WEBHOOK_EVENTS: tuple[tuple[str, str], ...] = (
    ("health.changed", "backends of a pool went up or down (grouped per pool and window)"),
    ("operation.started", "an operation started (drain, maintenance, weight, withdraw, fleet apply...)"),
    ("operation.finished", "an operation ended: succeeded, unconfirmed or aborted"),
    ("operation.failed", "an operation failed"),
    ("operation.paused", "an operation paused (a weight ramp whose backend went down)"),
    ("guard.refused", "the capacity guard or a safety rule refused an action"),
    ("guard.forced", "an action was forced past the capacity guard or a safety rule"),
    ("drift.detected", "the live fleet differs from the fleet file applied"),
    ("drift.resolved", "the live fleet is the fleet file applied again"),
    ("dataplane.disconnected", "a data plane's agent stopped reporting"),
    ("dataplane.lagging", "a data plane has not applied the desired version in time, or refused it"),
    ("dataplane.recovered", "a data plane disconnected or lagging runs the desired version again"),
    ("webhook.test", "a test delivery sent from the API or the dashboard"),
)
WebhookEvent = models.TextChoices("WebhookEvent", [(value.replace(".", "_").upper(), (value, label))  # type: ignore[call-overload]
                                                   for value, label in WEBHOOK_EVENTS])


class DataplaneLayer(models.TextChoices):
    """The three layers that steer traffic, as their agents name themselves."""

    LOCAL = "local", "local (HAProxy)"
    DNS = "dns", "DNS (PowerDNS)"
    ANYCAST = "anycast", "anycast (ExaBGP)"


# Layers that run at a PoP (an agent bound to a PoP serves these); DNS is one fleet-wide layer.
POP_LAYERS = (DataplaneLayer.LOCAL, DataplaneLayer.ANYCAST)


class ChangeSource(models.TextChoices):
    UI = "ui", "dashboard"
    API = "api", "API"
    CLI = "cli", "CLI"
    SYSTEM = "system", "system"


class Role(models.TextChoices):
    VIEWER = "viewer", "viewer"
    OPERATOR = "operator", "operator"
    ADMIN = "admin", "admin"
    # A data-plane agent's token, bound to one PoP (or to the DNS layer): it reads that scope's
    # desired state and reports for it, nothing else. Ranked below viewer so no other check passes.
    AGENT = "agent", "agent"


ROLE_RANK = {Role.AGENT: 0, Role.VIEWER: 1, Role.OPERATOR: 2, Role.ADMIN: 3}


@dataclass(frozen=True)
class StateStyle:
    key: str
    label: str
    symbol: str
    colour: str
    meaning: str


def _style(state: models.TextChoices | str, symbol: str, colour: str, meaning: str, label: str = "") -> StateStyle:
    """A state's row: a model state (Health, AdminState, AnnounceState) brings its own value and
    label, so the style cannot drift from the choices the database stores."""
    if isinstance(state, models.TextChoices):
        return StateStyle(str(state.value), label or str(state.label), symbol, colour, meaning)
    return StateStyle(state, label or state.replace("_", " "), symbol, colour, meaning)


# The one table of what every state looks like: its word, symbol and colour (the dashboard reads it
# from /api/v1/states/; colour never travels alone). Health first, then admin states, then alarms
# and the data planes' versions. tests/api/test_system.py checks every model state has its row.
STATE_STYLES: tuple[StateStyle, ...] = (
    _style(Health.UP, "▲", "#2e9e44", "passing health checks"),
    _style(Health.DOWN, "▼", "#d64545", "failing health checks"),
    _style(Health.UNKNOWN, "?", "#8a8f98", "not checked yet"),
    _style(Health.STALE, "◌", "#b58a00", "no check results arriving; last known state kept"),
    # A PoP or pool, not a backend: some of its backends down, the rest serving.
    _style("degraded", "◆", "#e07a1f", "some backends down; the rest carry the traffic"),
    _style(AdminState.READY, "●", "#2e9e44", "in service"),
    _style(AdminState.DRAINING, "◐", "#d98a00", "no new traffic; existing sessions finishing"),
    _style(AdminState.DRAINED, "○", "#5f6b7a", "out of service, no sessions"),
    _style(AdminState.MAINT, "■", "#7a5cc2", "forced out of service"),
    _style("panic", "‼", "#ff2d55", "most of the pool looks down: serving anyway, prober suspected"),
    # A backend, beside its health: live traffic took it out for a while (outlier ejection).
    _style("ejected", "⏏", "#d0479b", "taken out by live traffic for a while; the prober confirms (down) or it comes back"),
    _style(AnnounceState.ANNOUNCE, "⇡", "#2e9e44", "anycast prefix announced", label="announcing"),
    _style(AnnounceState.WITHDRAW, "⇣", "#5f6b7a", "anycast prefix withdrawn", label="withdrawn"),
    # A data plane's version against the desired one (steering.dataplane.status).
    _style("in_sync", "✓", "#2e9e44", "the data plane runs the desired version"),
    _style("applying", "⟳", "#b58a00", "a newer version is on its way to the data plane"),
    _style("behind", "✗", "#d64545", "the data plane has not applied the desired version in time"),
    _style("refused", "✗", "#d64545", "the data plane refused the desired version (its error is shown)"),
    _style("absent", "○", "#8a8f98", "no agent has reported for this data plane", label="no agent"),
    # A webhook delivery (steering.services.webhooks).
    _style(DeliveryStatus.PENDING, "◌", "#8a8f98", "webhook delivery not tried yet"),
    _style(DeliveryStatus.SUCCEEDED, "✓", "#2e9e44", "the receiver answered 2xx"),
    _style(DeliveryStatus.FAILED, "⟳", "#b58a00", "the last try failed; it is retried with backoff"),
    _style(DeliveryStatus.DEAD, "✗", "#d64545", "every try failed: a dead letter, redeliver it by hand"),
)
STATE_STYLE = {style.key: style for style in STATE_STYLES}


# --- audit actions: every Change.action the product writes, in one table -----------------------
# "<object type>.<verb>". Site moves use the backend's verbs (drain, drained, undrain,
# maintenance), so `?action=` finds the same move on any target. steering.services.audit.ChangeSet
# refuses an action that is not here: a new action is added to this table, never improvised.
TOPOLOGY_TYPES = ("region", "pop", "service", "vip", "anycastprefix", "clientnetwork", "monitor", "pool", "backend")
SITE_TYPES = ("region", "pop", "pool")
_VERBS: tuple[tuple[str, str], ...] = (
    # Topology: the API, the admin site and fleet files (create / update / delete).
    *((f"{t}.{verb}", f"{t} {word}") for t in TOPOLOGY_TYPES
      for verb, word in (("create", "created"), ("update", "changed"), ("delete", "deleted"))),
    # Admin state of backends and sites.
    *((f"{t}.{verb}", f"{t} {word}") for t in ("backend", *SITE_TYPES)
      for verb, word in (("drain", "drain started"), ("drained", "drained"), ("undrain", "back in service"),
                         ("maintenance", "put in maintenance"))),
    ("backend.weight", "backend weight set"),
    ("backend.health", "backend health changed"),
    ("backend.eject", "backend ejected by live traffic"),
    ("backend.eject_confirmed", "ejection confirmed by the prober"),
    ("backend.eject_end", "ejection ended"),
    ("pool.panic", "pool in panic"),
    ("pool.panic_end", "pool out of panic"),
    ("pool.outlier_panic", "pool's ejections capped"),
    ("pool.outlier_panic_end", "pool's ejection cap lifted"),
    ("pop.announce", "PoP announces its prefixes"),
    ("pop.withdraw", "PoP withdraws its prefixes"),
    ("vip.enable", "VIP back in DNS"),
    ("vip.disable", "VIP out of DNS"),
    ("operation.abort", "operation aborted"),
    ("operation.pause", "operation paused"),
    ("operation.resume", "operation resumed"),
    ("operation.schedule", "drain or maintenance scheduled"),
    ("operation.extend", "maintenance window extended"),
    ("operation.expire", "maintenance window ended"),
    ("dataplane.repair", "data plane repaired to the desired state"),
    ("fleet.apply", "fleet file applied"),
    ("changefreeze.on", "changes frozen"),
    ("changefreeze.off", "changes allowed again"),
    ("safetyrule.create", "safety rule added"),
    ("safetyrule.update", "safety rule changed"),
    ("safetyrule.delete", "safety rule removed"),
    ("webhook.create", "webhook subscription added"),
    ("webhook.update", "webhook subscription changed"),
    ("webhook.delete", "webhook subscription removed"),
    ("webhook.test", "webhook test delivery sent"),
    ("webhook.redeliver", "webhook delivery sent again"),
    ("token.create", "API token issued"),
    ("token.revoke", "API token revoked"),
    ("token.delete", "API token deleted"),
    ("user.create", "user created"),
    ("user.update", "user changed"),
    ("user.role", "user's role changed"),
    ("user.superuser", "user's superuser flag changed"),
    ("user.password", "user's password changed"),
    ("user.deactivate", "user deactivated"),
    ("user.reactivate", "user reactivated"),
    ("user.delete", "user deleted"),
    ("group.create", "group created"),
    ("group.update", "group changed"),
    ("group.delete", "group deleted"),
)
ChangeAction = models.TextChoices("ChangeAction", [(value.replace(".", "_").upper(), (value, label))  # type: ignore[call-overload]
                                                   for value, label in _VERBS])
# Names earlier versions wrote for site moves; kept so old rows still filter and read.
LEGACY_CHANGE_ACTIONS = frozenset(f"{t}.{state}" for t in SITE_TYPES for state in ("draining", "ready", "maint"))
