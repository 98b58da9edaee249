"""Prometheus `/metrics`: probe counters aggregated across worker processes through Redis.

Celery prefork children (and workers on other hosts) each count their probes into Redis hashes
(steering.health.store.apply_results: one Lua script call per batch of results); this collector reads
those hashes at scrape time in the web process. That works across hosts and restarts, needs no
shared directory or PROMETHEUS_MULTIPROC_DIR cleanup (prometheus_client's multiprocess mode),
and costs the web process one Redis round trip per scrape. Backends by health and pools in
panic come from the DB (one GROUP BY); outlier ejections (steering.services.outliers) count into a
Redis hash the same way. Nothing here names a host, URL or credential.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
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
        from steering.services.effects import _redis

        try:
            r = _redis()
            pipe = r.pipeline(transaction=False)
            pipe.hgetall(store.M_PROBES).hgetall(store.M_LATENCY).hgetall(store.M_LAG).hgetall(store.M_GAUGES)
            pipe.zcard(store.DUE)
            probes, latency, lag, gauges, scheduled = pipe.execute()
            probes, latency, lag, gauges = (_decode(x) for x in (probes, latency, lag, gauges))
        except Exception as exc:  # Redis away: serve the DB figures, say so in a metric
            logger.warning("metrics: Redis unavailable: %s", exc)
            probes, latency, lag, gauges, scheduled = {}, {}, {}, {}, None
        up = GaugeMetricFamily("steering_metrics_redis_up", "1 when probe counters could be read from Redis.")
        up.add_metric([], 0.0 if scheduled is None else 1.0)
        yield up
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


def _outlier_metrics() -> Iterator[Metric]:
    """Passive verdicts (steering.services.outliers): ejections by rule, their ends, the bounds."""
    from steering.models import Pool
    from steering.services import outliers

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


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(SteeringCollector())  # type: ignore[arg-type]


def metrics_view(request: HttpRequest) -> HttpResponse:
    """No auth (scrapers carry none); only counts and timings, never names or addresses."""
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
