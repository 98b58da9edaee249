"""A real HAProxy on loopback in front of real (small, Python) HTTP backends.

Each backend answers with its own name; traffic goes through HAProxy with urllib. Everything a
test starts (HAProxy, backends) is stopped in teardown. No timed assertions: waits are bounded
polls on a condition, never "it took less than N s".
"""

from __future__ import annotations

import datetime
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from steering.dataplane.haproxy.apply import MemoryAppliedStore, reconcile, sync
from steering.dataplane.haproxy.desired import pop_spec
from steering.dataplane.haproxy.render import render
from steering.dataplane.haproxy.runtime import Runtime
from steering.dataplane.haproxy.stats import StatsCollector
from steering.dataplane.stats import RedisFigureStore, read_backend_stats
from steering.models import Backend, Change, Pool, PoP
from steering.services.dataplane import do_record_dataplane_repair
from tests import factories as f
from tests.dataplane.haproxy.lab import HAProxy, NameServer
from tests.support import free_port, wait_for

pytestmark = pytest.mark.integration


@dataclass
class Site:
    pop: PoP
    web: Pool
    pci: Pool
    servers: dict[str, NameServer]
    haproxy: HAProxy
    store: MemoryAppliedStore

    def backend(self, name: str) -> Backend:
        return Backend.objects.get(pool__pop=self.pop, name=name)

    def add(self, pool: Pool, name: str, **kw: Any) -> Backend:
        server = NameServer(name).start()
        self.servers[name] = server
        return f.backend(pool, name=name, address="127.0.0.1", port=server.port, **kw)

    def sync(self) -> Any:
        # What the HAProxy agent does with each version (steering.agents.haproxy), minus the HTTP.
        result = sync(pop_spec(self.pop), Runtime(self.haproxy.socket), self.store)
        assert not result.errors, result.errors
        return result

    def reconcile(self) -> Any:
        # The agent reports repairs; the API audits them with do_record_dataplane_repair.
        return reconcile(pop_spec(self.pop), Runtime(self.haproxy.socket), self.store,
                         audit=lambda slug, repaired: do_record_dataplane_repair(slug, repaired))

    def state(self, pool: Pool, name: str) -> Any:
        proxy = pop_spec(self.pop).pool(pool.pk)
        assert proxy is not None
        return {s.name: s for s in self.haproxy.runtime.show_servers_state(proxy.proxy)}.get(name)


@pytest.fixture
def site(db: Any, tmp_path: Path) -> Iterator[Site]:
    """The demo's shape: api-web (default, weights 1:1:3) and pay-pci (/payments) in one PoP."""
    pop = f.pop(slug="hap1")
    api = f.service(protocol="http", slug="api")
    web = f.pool(pop, api, slug="api-web", algorithm="roundrobin", rule_priority=200)
    pci = f.pool(pop, api, slug="pay-pci", match_path_prefix="/payments", rule_priority=10, algorithm="leastconn")
    s = Site(pop, web, pci, {}, HAProxy(tmp_path), MemoryAppliedStore())
    try:
        for name, weight in (("api-1", 1), ("api-2", 1), ("api-3", 3)):
            s.add(web, name, weight=weight)
        s.add(pci, "pay-1")
        s.haproxy.start(pop)
        s.sync()  # nothing to do on a fresh HAProxy; records what we applied
        yield s
    finally:
        s.haproxy.stop()
        for server in s.servers.values():
            server.stop()


def test_weights_1_1_3_give_a_matching_split(site: Site) -> None:
    counts = site.haproxy.spread(250)
    # 1:1:3 of 250 = 50:50:150; smooth weighted round robin lands within a few requests of it.
    assert abs(counts["api-1"] - 50) <= 10 and abs(counts["api-2"] - 50) <= 10 and abs(counts["api-3"] - 150) <= 15, counts
    assert set(counts) == {"api-1", "api-2", "api-3"}


def test_payments_go_to_the_pci_pool(site: Site) -> None:
    assert site.haproxy.spread(10, "/payments") == Counter({"pay-1": 10})
    assert site.haproxy.spread(5, "/payments/charge?x=1") == Counter({"pay-1": 5})
    assert "pay-1" not in site.haproxy.spread(20, "/paymentsfoo")


def test_a_drained_server_takes_no_new_requests_while_its_open_request_finishes(site: Site) -> None:
    slow_answer: list[str] = []
    t = threading.Thread(target=lambda: slow_answer.append(site.haproxy.get("/slow")))
    t.start()
    try:
        busy = wait_for(lambda: next((n for n, s in site.servers.items() if s.in_flight), None), "the slow request")
        b = site.backend(busy)
        b.admin_state, b.drain_deadline = "draining", timezone.now() + datetime.timedelta(minutes=5)
        b.save()
        result = site.sync()
        assert [s.line() for s in result.applied] == [f"state pool-{site.web.pk}-api-web/{busy} drain"]
        hits_before = site.servers[busy].hits
        counts = site.haproxy.spread(60)
        assert busy not in counts and sum(counts.values()) == 60
        assert site.servers[busy].hits == hits_before
        assert site.servers[busy].in_flight == 1  # its open request is still being served
        stat = {x.name: x for x in site.haproxy.runtime.show_stat()}[busy]
        assert stat.scur == 1 and stat.status == "DRAIN"
    finally:
        for s in site.servers.values():
            s.release.set()
        t.join(15)
    assert slow_answer == [busy]  # the open request finished, answered by the drained server


def test_a_server_added_at_runtime_takes_traffic_and_a_removed_one_stops(site: Site) -> None:
    site.add(site.web, "api-4", weight=5)
    result = site.sync()
    assert [s.op for s in result.applied] == ["add", "state"]
    assert site.state(site.web, "api-4").state == "ready"
    # Watched on live traffic like the servers from the config (the pool's observe words), not
    # only after the next reload.
    status = {x.name: x.status for x in site.haproxy.runtime.show_stat()}
    assert status["api-4"] != "no check" and status["api-4"].split()[0] == status["api-1"].split()[0], status
    counts = site.haproxy.spread(100)
    assert counts["api-4"] >= 30, counts  # weight 5 of 10
    Backend.objects.filter(pk=site.backend("api-4").pk).delete()
    result = site.sync()
    assert [s.line().split()[0] for s in result.applied] == ["state", "delete"]
    assert site.state(site.web, "api-4") is None
    hits = site.servers["api-4"].hits
    counts = site.haproxy.spread(50)
    assert "api-4" not in counts and site.servers["api-4"].hits == hits


def test_reconcile_repairs_hand_made_drift_and_audits_it_once(site: Site) -> None:
    proxy = f"pool-{site.web.pk}-api-web"
    site.haproxy.runtime.set_state(proxy, "api-3", "maint")  # an operator with socat, behind our back
    assert site.state(site.web, "api-3").state == "maint"
    assert "api-3" not in site.haproxy.spread(20)
    result = site.reconcile()
    assert [d.server for d in result.repaired] == ["api-3"]
    assert site.state(site.web, "api-3").state == "ready"
    changes = list(Change.objects.filter(actor_name="system:reconciler"))
    assert len(changes) == 1
    change = changes[0]
    assert change.action == "dataplane.repair" and change.source == "system"
    assert change.object_type == "backend" and change.object_id == site.backend("api-3").pk
    assert change.before == {"haproxy": {"server": f"{proxy}/api-3", "state": "maint", "weight": 3}}
    assert change.after == {"haproxy": {"server": f"{proxy}/api-3", "state": "ready", "weight": 3}}
    assert "api-3" in site.haproxy.spread(20)
    # Nothing left to repair; and a pending change (weight saved, not yet synced) is no drift.
    assert site.reconcile().plan.steps == []
    Backend.objects.filter(pk=site.backend("api-1").pk).update(weight=7)
    result = site.reconcile()
    assert [s.line() for s in result.applied] == [f"weight {proxy}/api-1 7"] and result.repaired == []
    assert Change.objects.filter(actor_name="system:reconciler").count() == 1
    assert site.state(site.web, "api-1").weight == 7


def test_reconcile_after_a_restart_from_a_stale_config(site: Site, tmp_path: Path) -> None:
    b = site.backend("api-2")
    Backend.objects.filter(pk=b.pk).update(admin_state="maint")
    site.sync()  # HAProxy and our record: api-2 in maintenance
    # HAProxy restarts from an old haproxy.cfg, written while api-2 was still ready.
    site.haproxy.stop()
    Backend.objects.filter(pk=b.pk).update(admin_state="ready")
    old = HAProxy(tmp_path)
    old.port, site.haproxy = site.haproxy.port, old
    old.start(site.pop)
    Backend.objects.filter(pk=b.pk).update(admin_state="maint")
    assert site.state(site.web, "api-2").state == "ready"
    result = site.reconcile()
    assert [d.server for d in result.repaired] == ["api-2"]
    assert site.state(site.web, "api-2").state == "maint"
    assert Change.objects.filter(actor_name="system:reconciler", object_id=b.pk).count() == 1
    assert "api-2" not in site.haproxy.spread(20)


def test_the_runtime_client_reports_refusals(site: Site) -> None:
    from steering.dataplane.haproxy.runtime import RuntimeAPIError

    rt = site.haproxy.runtime
    with pytest.raises(RuntimeAPIError, match="No such server"):
        rt.set_state(f"pool-{site.web.pk}-api-web", "nope", "ready")
    with pytest.raises(RuntimeAPIError):
        rt.del_server(f"pool-{site.web.pk}-api-web", "api-1")  # not in maintenance
    with pytest.raises(RuntimeAPIError, match="Can't find backend"):
        rt.show_servers_state("no-such-backend")
    with pytest.raises(RuntimeAPIError, match="No such file"):
        Runtime(str(site.haproxy.workdir / "missing.sock")).backends()


def test_stats_collector_writes_sessions_and_rates(site: Site) -> None:
    collector = StatsCollector(site.haproxy.runtime, RedisFigureStore())
    spec = pop_spec(site.pop)
    collector.collect(spec, now=1000.0)
    site.haproxy.spread(50)
    figures = collector.collect(spec, now=1002.0)  # a 2 s interval between the two samples
    ids = {name: site.backend(name).pk for name in ("api-1", "api-2", "api-3")}
    by_name = {name: figures[i] for name, i in ids.items()}
    assert sum(x.session_rate for x in by_name.values()) == pytest.approx(25.0)   # 50 sessions / 2 s
    assert sum(x.completion_rate for x in by_name.values()) == pytest.approx(25.0)  # all of them ended
    assert by_name["api-3"].session_rate == pytest.approx(15.0, abs=2.5)  # ~30 of 50 at weight 3 of 5
    assert all(x.sessions == 0 and x.rate_5xx == 0 for x in by_name.values())
    site.haproxy.spread(10, "/fail")
    figures = collector.collect(spec, now=1004.0)
    assert sum(figures[i].rate_5xx for i in ids.values()) == pytest.approx(5.0)  # 10 answers of 500 in 2 s
    collector.collect(spec)  # now = wall clock, so the figures are fresh for the readers
    stored = read_backend_stats(ids.values())
    assert set(stored) == set(ids.values()) and all(s.sessions == 0 for s in stored.values())


def test_a_reload_keeps_the_desired_state_and_brings_new_pools(site: Site) -> None:
    b = site.backend("api-1")
    Backend.objects.filter(pk=b.pk).update(admin_state="draining", drain_deadline=timezone.now())
    site.sync()
    extra = f.pool(site.pop, site.web.service, slug="extra", match_path_prefix="/extra", rule_priority=20)
    site.add(extra, "extra-1")
    result = site.sync()
    assert result.plan.missing_proxies == [f"pool-{extra.pk}-extra"]  # a new pool needs a new config
    site.haproxy.reload(site.pop)
    result = site.reconcile()
    # The new config writes the drain as weight 0, which is what we applied: no steps, no drift.
    assert result.plan.steps == [] and result.repaired == []
    assert not Change.objects.filter(actor_name="system:reconciler").exists()
    assert site.haproxy.spread(5, "/extra/x") == Counter({"extra-1": 5})
    assert "api-1" not in site.haproxy.spread(30)


def test_every_algorithm_we_render_accepts_runtime_added_servers(tmp_path: Path) -> None:
    from steering.dataplane.haproxy.model import ALGORITHMS, PoolSpec, PopSpec, ServiceSpec

    services = tuple(ServiceSpec(f"svc-{a}", "http") for a in ALGORITHMS)
    pools = tuple(PoolSpec(i, a, f"svc-{a}", "http", a) for i, a in enumerate(ALGORITHMS, start=1))
    hap = HAProxy(tmp_path)
    text = render(PopSpec("algos", services, pools), socket_path=hap.socket,
                  binds={s.slug: ("127.0.0.1", free_port()) for s in services}).text
    try:
        hap.start(text=text)
        for p in pools:
            hap.runtime.add_server(p.proxy, "dyn-1", "127.0.0.1", 9, weight=1)
            hap.runtime.set_state(p.proxy, "dyn-1", "ready")
            assert [s.state for s in hap.runtime.show_servers_state(p.proxy)] == ["ready"], p.algorithm
    finally:
        hap.stop()


def test_a_removed_server_with_an_open_request_is_drained_then_deleted(site: Site) -> None:
    answer: list[str] = []
    t = threading.Thread(target=lambda: answer.append(site.haproxy.get("/slow")))
    t.start()
    try:
        busy = wait_for(lambda: next((n for n, s in site.servers.items() if s.in_flight), None), "the slow request")
        Backend.objects.filter(pk=site.backend(busy).pk).delete()
        result = site.reconcile()
        assert [s.line() for s in result.applied] == [f"state pool-{site.web.pk}-api-web/{busy} drain"]
        assert result.plan.waiting == [f"pool-{site.web.pk}-api-web/{busy}: 1 sessions"] and result.repaired == []
        assert busy not in site.haproxy.spread(30)
        assert site.reconcile().applied == []  # still waiting for its session; nothing to redo, no drift
    finally:
        for s in site.servers.values():
            s.release.set()
        t.join(15)
    assert answer == [busy]  # the open request was not cut
    wait_for(lambda: {x.name: x for x in site.haproxy.runtime.show_stat()}[busy].scur == 0, "its session to end")
    result = site.reconcile()
    assert [s.op for s in result.applied] == ["state", "delete"]
    assert site.state(site.web, busy) is None
    assert not Change.objects.filter(actor_name="system:reconciler").exists()
