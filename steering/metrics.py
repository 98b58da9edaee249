"""Prometheus `/metrics`: probe counters aggregated across worker processes through Redis.

Celery prefork children (and workers on other hosts) each count their probes into Redis hashes
(steering.health.store.apply_results: one Lua script call per batch of results); this collector reads
those hashes at scrape time in the web process. That works across hosts and restarts, needs no
shared directory or PROMETHEUS_MULTIPROC_DIR cleanup (prometheus_client's multiprocess mode),
and costs the web process one Redis round trip per scrape. Backends by health and pools in
panic come from the DB (one GROUP BY); outlier ejections (steering.services.outliers) count into a
Redis hash the same way. Nothing here names a host, URL or credential.

Also read at scrape time, so every process serving /metrics says the same: operations by kind and
outcome, and the guard overrides among them (the Operation rows: counters that only grow, since
operations are never deleted); drains past their deadline (Backend rows); each data plane's
desired and applied version, state and lag per layer and PoP (steering.dataplane.status, the
words of GET /api/v1/dataplanes/); live-feed sockets open (steering.live.slots, in Redis).

HTTP latency (steering_http_request_duration_seconds) is the one figure kept in the process that
served the requests (steering.middleware.AccessMiddleware observes it): by the URL route pattern
(`/api/v1/backends/<pk>/drain/`, never the raw path), method and status class; with several web
processes, scrape each. Alert rules: deploy/prometheus/rules.yml; a dashboard: deploy/grafana/.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Iterator
from typing import Any

from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from steering.choices import Health
from steering.health import store

logger = logging.getLogger(__name__)


def _decode(raw: dict[Any, Any]) -> dict[str, float]:
    return {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}


def _histogram(name: str, doc: str, raw: dict[str, float], bounds: Iterable[float]) -> HistogramMetricFamily:
    cumulative, buckets = 0.0, []
    for b in bounds:
        cumulative += raw.get(repr(b), 0.0)
        buckets.append((repr(b), cumulative))
    buckets.append(("+Inf", cumulative + raw.get("+Inf", 0.0)))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=raw.get("sum", 0.0))


class SteeringCollector:
    def collect(self) -> Iterator[Metric]:
        from steering.models import Backend, Pool
        from steering.redisconn import sync_client

        try:
            r = sync_client()
            pipe = r.pipeline(transaction=False)
            for key in (store.M_PROBES, store.M_LATENCY, store.M_LAG, store.M_GAUGES):
                pipe.hgetall(key)
            pipe.zcard(store.DUE)
            probes, latency, lag, gauges, scheduled = pipe.execute()
            probes, latency, lag, gauges = (_decode(x) for x in (probes, latency, lag, gauges))
        except Exception as exc:  # Redis away: serve the DB figures, say so in a metric
            logger.warning("metrics: Redis unavailable: %s", exc)
            probes, latency, lag, gauges, scheduled = {}, {}, {}, {}, None
        up = GaugeMetricFamily("steering_metrics_redis_up", "1 when probe counters could be read from Redis.")
        up.add_metric([], 0.0 if scheduled is None else 1.0)
        yield up
        if scheduled is not None:
            last = GaugeMetricFamily("steering_probe_last_result_timestamp_seconds",
                                     "When the newest batch of probe results was applied (unix time).")
            last.add_metric([], gauges.get("last_result_time", 0.0))
            yield last
            yield from _redis_extras(r)
        counter = CounterMetricFamily("steering_probes", "Probes run, by result.", labels=["result"])
        for result in sorted(probes):
            counter.add_metric([result], probes[result])
        yield counter
        yield _histogram("steering_probe_latency_seconds", "Time from connect to verdict, per probe.",
                         latency, store.LATENCY_BUCKETS)
        yield _histogram("steering_probe_lag_seconds", "How late a probe started against its schedule.",
                         lag, store.LAG_BUCKETS)
        lag_last = GaugeMetricFamily("steering_probe_lag_last_batch_max_seconds",
                                     "Largest lag in the most recent batch of results.")
        lag_last.add_metric([], gauges.get("lag_last_batch_max", 0.0))
        yield lag_last
        if scheduled is not None:
            sched = GaugeMetricFamily("steering_probe_scheduled_backends", "Backends in the probe schedule.")
            sched.add_metric([], float(scheduled))
            yield sched
        by_health = GaugeMetricFamily("steering_backends", "Backends by health.", labels=["health"])
        counts = dict(Backend.objects.values_list("health").annotate(n=Count("pk")).values_list("health", "n"))
        for h in Health.values:
            by_health.add_metric([h], float(counts.get(h, 0)))
        yield by_health
        panic = GaugeMetricFamily("steering_pools_in_panic", "Pools in panic (most backends look down).")
        panic.add_metric([], float(Pool.objects.filter(in_panic=True).count()))
        yield panic
        yield from _outlier_metrics()
        yield from _operation_metrics()
        yield from _dataplane_metrics()


def _outlier_metrics() -> Iterator[Metric]:
    """Passive verdicts (steering.services.outliers, read by steering.readmodels.outliers): ejections by rule,
    their ends, the bounds."""
    from steering.models import Pool
    from steering.readmodels import outliers

    counters = outliers.metrics_counters()
    ejections = CounterMetricFamily("steering_outlier_ejections", "Backends ejected by live traffic, by rule "
                                    "(observed: HAProxy's observe took it out; consecutive; share).", labels=["rule"])
    for rule in ("observed", "consecutive", "share"):
        ejections.add_metric([rule], counters.get(f"eject:{rule}", 0.0))
    yield ejections
    ends = CounterMetricFamily("steering_outlier_ejection_ends", "Ejections ended: cleared (back in), confirmed "
                               "(the prober found it down), off (policy turned off).", labels=["how"])
    for how in ("cleared", "confirmed", "off"):
        ends.add_metric([how], counters.get(f"end:{how}", 0.0))
    yield ends
    entered = CounterMetricFamily("steering_outlier_panics", "Times a pool's bounds held failing backends in.")
    entered.add_metric([], counters.get("panic", 0.0))
    yield entered
    held = GaugeMetricFamily("steering_outlier_held_back", "Failing backends the bounds keep in service (last pass).")
    held.add_metric([], counters.get("held_now", 0.0))
    yield held
    ejected = GaugeMetricFamily("steering_backends_ejected", "Backends ejected by live traffic now.")
    ejected.add_metric([], float(outliers.ejected_now()))
    yield ejected
    in_panic = GaugeMetricFamily("steering_pools_outlier_panic", "Pools whose ejection bounds hold failing backends in.")
    in_panic.add_metric([], float(Pool.objects.filter(outlier_panic=True).count()))
    yield in_panic


def _redis_extras(r: Any) -> Iterator[Metric]:
    """Live-feed sockets open in every web process (the per-user slots steering.live.slots keeps)."""
    from django.contrib.auth import get_user_model

    from steering.live import slots

    now = time.time()
    try:
        users = list(get_user_model().objects.values_list("pk", flat=True))
        pipe = r.pipeline(transaction=False)
        for user_id in users:
            pipe.zcount(slots._key(user_id), now, "+inf")  # what slots.count() reads, for every user at once
        sockets = sum(int(n) for n in pipe.execute())
    except Exception as exc:
        logger.warning("metrics: Redis unavailable: %s", exc)
        return
    clients = GaugeMetricFamily("steering_live_clients", "Live-feed WebSockets open, across every web process.")
    clients.add_metric([], float(sockets))
    yield clients


def _operation_metrics() -> Iterator[Metric]:
    """Operations by kind and outcome, guard overrides, and drains past their deadline (DB rows)."""
    from django.utils import timezone

    from steering.choices import OPERATION_FINAL_STATES, AdminState, OperationKind
    from steering.models import Backend, Operation

    rows = Operation.objects.values_list("kind", "status", "forced").annotate(n=Count("pk"))
    by_outcome: dict[tuple[str, str], float] = {}
    running: dict[tuple[str, str], float] = {}
    forced: dict[str, float] = {}
    for kind, status, was_forced, n in rows:
        bucket = by_outcome if status in OPERATION_FINAL_STATES else running
        bucket[(kind, status)] = bucket.get((kind, status), 0.0) + n
        if was_forced:
            forced[kind] = forced.get(kind, 0.0) + n
    finished = CounterMetricFamily("steering_operations", "Operations finished, by kind and outcome "
                                   "(succeeded, aborted, failed, unconfirmed).", labels=["kind", "outcome"])
    for kind in OperationKind.values:
        for outcome in sorted(OPERATION_FINAL_STATES):
            finished.add_metric([kind, outcome], by_outcome.get((kind, outcome), 0.0))
    yield finished
    now_running = GaugeMetricFamily("steering_operations_in_progress", "Operations running or paused now.",
                                    labels=["kind", "status"])
    for kind in OperationKind.values:
        for status in ("running", "paused"):
            now_running.add_metric([kind, status], running.get((kind, status), 0.0))
    yield now_running
    overrides = CounterMetricFamily("steering_guard_overrides", "Operations that went past the capacity guard "
                                    "with force and a force_reason (audited), by kind.", labels=["kind"])
    for kind in OperationKind.values:
        overrides.add_metric([kind], forced.get(kind, 0.0))
    yield overrides
    now = timezone.now()
    late = list(Backend.objects.filter(admin_state=AdminState.DRAINING, drain_deadline__lt=now)
                .values_list("drain_deadline", flat=True))
    overdue = GaugeMetricFamily("steering_drains_overdue", "Backends still draining after their drain deadline.")
    overdue.add_metric([], float(len(late)))
    yield overdue
    oldest = GaugeMetricFamily("steering_drains_overdue_max_seconds",
                               "How far past its deadline the most overdue draining backend is (0: none).")
    oldest.add_metric([], max(((now - d).total_seconds() for d in late if d is not None), default=0.0))
    yield oldest


def _dataplane_metrics() -> Iterator[Metric]:
    """Desired vs applied per layer and PoP: what GET /api/v1/dataplanes/ says, as numbers."""
    from steering.dataplane.status import STATES, all_statuses

    now = time.time()
    status = all_statuses(now)
    desired = GaugeMetricFamily("steering_dataplane_desired_version", "The state version every data plane should run.")
    desired.add_metric([], float(status["version"]))
    yield desired
    layers = [status["dns"], *(s for pop in status["pops"].values() for s in pop.values())]
    applied = GaugeMetricFamily("steering_dataplane_applied_version", "The version a layer runs at a PoP (lowest "
                                "of its live agent instances); pop is empty for the DNS layer.", labels=["layer", "pop"])
    lag = GaugeMetricFamily("steering_dataplane_lag_seconds", "Since the first change a layer has not applied "
                            "(0: in sync).", labels=["layer", "pop"])
    state = GaugeMetricFamily("steering_dataplane_state", "1 for the layer's state now: in_sync, applying, behind "
                              "(past STEERING_DATAPLANE_ACK_TIMEOUT_SECONDS), refused, absent (no agent).",
                              labels=["layer", "pop", "state"])
    seen = GaugeMetricFamily("steering_dataplane_last_seen_timestamp_seconds", "When a layer's agent last "
                             "reported (unix time).", labels=["layer", "pop"])
    for s in layers:
        labels = [s["layer"], s["pop"] or ""]
        if s["applied_version"] is not None:
            applied.add_metric(labels, float(s["applied_version"]))
        if s["lag_seconds"] is not None:
            lag.add_metric(labels, float(s["lag_seconds"]))
        for name in STATES:
            state.add_metric([*labels, name], 1.0 if s["state"] == name else 0.0)
        if s["seen_at"] is not None:
            seen.add_metric(labels, float(s["seen_at"]))
    yield from (applied, lag, state, seen)


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(SteeringCollector())  # type: ignore[arg-type]

# No `_created` series per label set: a timestamp per route that no rule or panel reads.
disable_created_metrics()
HTTP_DURATION = Histogram(
    "steering_http_request_duration_seconds",
    "Time to answer an HTTP request in this web process, by URL route pattern, method and status class.",
    ["route", "method", "status"], registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# A regex route's named group, `(?P<pk>[^/.]+)`, is written as Django writes a converter: `<pk>`.
_GROUP = re.compile(r"\(\?P<(\w+)>(?:[^()\\]|\\.|\([^()]*\))*\)")


def route_of(request: HttpRequest) -> str:
    """The URL pattern that served the request (`/api/v1/backends/<pk>/drain/`), never the raw path, so
    the label's values stay few; `unmatched` for a 404 that matched no pattern."""
    match = getattr(request, "resolver_match", None)
    if match is None or match.route is None:
        return "unmatched"
    return "/" + _GROUP.sub(r"<\1>", match.route).replace("^", "").replace("$", "").replace("\\", "")


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    HTTP_DURATION.labels(route, method if method in _METHODS else "other", f"{status // 100}xx").observe(seconds)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """No auth (scrapers carry none); only counts and timings, never names or addresses."""
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
