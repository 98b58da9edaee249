"""Entry points for tasks/ and management commands: one PoP's sync, reconcile and stats.

Where a PoP's admin socket lives: settings.HAPROXY_SOCKETS {pop slug: path}, else
<VAR_DIR>/haproxy/<pop>.sock.
"""

from __future__ import annotations

from django.conf import settings

from steering.dataplane.haproxy.apply import AppliedStore, RedisAppliedStore, Result, reconcile, sync
from steering.dataplane.haproxy.desired import pop_spec
from steering.dataplane.haproxy.runtime import Runtime
from steering.dataplane.haproxy.stats import Figures, StatsCollector
from steering.models import PoP
from steering.services.dataplane import do_record_dataplane_repair


def socket_for_pop(slug: str) -> str:
    configured = getattr(settings, "HAPROXY_SOCKETS", {}) or {}
    return str(configured.get(slug) or settings.VAR_DIR / "haproxy" / f"{slug}.sock")


def _slug(pop: PoP | int) -> str:
    return pop.slug if isinstance(pop, PoP) else str(PoP.objects.values_list("slug", flat=True).get(pk=pop))


def sync_pop(pop: PoP | int, *, socket_path: str | None = None, store: AppliedStore | None = None) -> Result:
    """After a change commits: push it (no audit; the change itself was audited)."""
    store = store or RedisAppliedStore()
    slug = _slug(pop)
    with store.lock(slug):  # the desired state is read under the lock: a late pass never pushes an older one
        return sync(pop_spec(pop), Runtime(socket_path or socket_for_pop(slug)), store)


def reconcile_pop(pop: PoP | int, *, socket_path: str | None = None, store: AppliedStore | None = None) -> Result:
    """On a schedule and after a HAProxy restart: repair drift, audited as system:reconciler."""
    store = store or RedisAppliedStore()
    slug = _slug(pop)
    with store.lock(slug):
        return reconcile(pop_spec(pop), Runtime(socket_path or socket_for_pop(slug)), store,
                         audit=lambda s, repaired: do_record_dataplane_repair(s, repaired))


def collect_pop_stats(pop: PoP | int, collector: StatsCollector) -> dict[int, Figures]:
    return collector.collect(pop_spec(pop))
