"""Passive health against a real HAProxy under load (issue 17).

HAProxy runs the config we render (retries, redispatch, retry-on, observe) in front of real
backend processes on loopback; clients send steady GETs over keep-alive connections from threads.
Figures go through the real stats collector into Redis and the outlier policy runs as its task
would (`outliers.tick`), here driven from the test so each step is seen. No agent: where the
data plane must follow an ejection the test pushes the effective weights itself, as the agent
would. No timed assertions: waits are bounded polls ("within the window").
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from steering import redis_keys
from steering.dataplane.haproxy.desired import pop_spec
from steering.dataplane.haproxy.runtime import Runtime
from steering.dataplane.haproxy.stats import StatsCollector
from steering.dataplane.stats import RedisFigureStore
from steering.models import Backend, Change, Pool
from steering.redisconn import sync_client
from steering.services import outliers
from steering.services.health import record_transitions
from tests import factories as f
from tests.dataplane.haproxy.lab import BackendProcess, HAProxy, Load
from tests.support import wait_for

pytestmark = pytest.mark.integration

class Lab:
    """A PoP with one L7 pool of real backends behind a real HAProxy, as we render it."""

    def __init__(self, workdir: Path, n: int, **pool_kw: Any) -> None:
        self.workdir = workdir
        self.pop = f.pop(slug="pas1")
        service = f.service(protocol="http", slug="api")
        self.pool = f.pool(self.pop, service, slug="api-web", **pool_kw)
        self.backends: dict[str, BackendProcess] = {}
        self.hap = HAProxy(workdir)   # the rendered config, on loopback (tests/dataplane/haproxy/lab.py)
        self.port = self.hap.port
        self.socket = self.hap.socket
        for i in range(1, n + 1):
            proc = BackendProcess(f"api-{i}")
            self.backends[proc.name] = proc
            f.backend(self.pool, name=proc.name, address="127.0.0.1", port=proc.port, capacity_rps=1000, health="up")
        self.collector = StatsCollector(Runtime(self.socket), RedisFigureStore())

    def start(self) -> Lab:
        self.hap.start(self.pop)
        return self

    def stop(self) -> None:
        self.hap.stop()
        for b in self.backends.values():
            b.stop()

    def status(self, name: str) -> str:
        return next(s.status for s in Runtime(self.socket).show_stat() if s.name == name)

    def backend(self, name: str) -> Backend:
        return Backend.objects.get(pool=self.pool, name=name)

    def observe(self) -> None:
        """One agent pass and one outlier pass: figures into Redis, then the verdicts."""
        self.collector.collect(pop_spec(self.pop))
        outliers.tick()

    def push_weights(self) -> None:
        """What the agent does after a state version: the effective weights into HAProxy."""
        rt = Runtime(self.socket)
        for p in pop_spec(self.pop).pools:
            for s in p.servers:
                rt.set_weight(p.proxy, s.name, s.weight)

    def ejected(self) -> list[str]:
        return sorted(Backend.objects.filter(pool=self.pool, ejected_at__isnull=False).values_list("name", flat=True))


@pytest.fixture(autouse=True)
def _clean_redis() -> Iterator[None]:
    client = sync_client()
    keys = [redis_keys.OUTLIER_TRACKS, redis_keys.OUTLIER_HELD, redis_keys.METRICS_OUTLIER, redis_keys.OUTLIER_LOCK]
    client.delete(*keys)
    yield
    for key in client.scan_iter(redis_keys.BACKEND_STATS.format(id="*")):
        client.delete(key)
    client.delete(*keys)


@pytest.fixture
def lab_factory(db: Any, tmp_path: Path) -> Iterator[Any]:
    labs: list[Lab] = []

    def make(n: int, **pool_kw: Any) -> Lab:
        lab = Lab(tmp_path, n, **pool_kw)
        labs.append(lab)
        return lab.start()

    try:
        yield make
    finally:
        for lab in labs:
            lab.stop()


def test_a_backend_killed_mid_load_costs_no_failed_get_and_is_seen_at_once(lab_factory: Any) -> None:
    lab = lab_factory(4)
    load = Load(lab.port).start()
    try:
        wait_for(lambda: load.sent() >= 300, "steady load through HAProxy")
        lab.observe()  # a baseline sample
        victim = lab.backends["api-2"]
        victim.kill()
        # HAProxy's observe takes it out after 5 failed connections in a row (the retries carried
        # those requests to the other servers) ...
        wait_for(lambda: lab.status("api-2").startswith("DOWN"), "HAProxy to take the dead server out", timeout=1.0)
        # ... and the control plane sees it in its next pass: ejected, audited, weight 0.
        wait_for(lambda: lab.ejected() == ["api-2"], "the ejection", timeout=1.0, interval=0.1, step=lab.observe)
        sent_at_kill = load.sent()
        wait_for(lambda: load.sent() >= sent_at_kill + 300, "more load after the kill")
    finally:
        results = load.stop()
    assert set(results) == {"ok"}, results  # not one failed GET: no 5xx, no reset, no timeout
    assert results["ok"] >= 600
    b = lab.backend("api-2")
    assert b.ejection_reason == "HAProxy took it out after 5 failed connections in a row (observe layer4)"
    change = Change.objects.get(action="backend.eject", object_id=b.pk)
    assert change.actor_name == "system:outlier" and change.related_id == lab.pool.pk
    # The figures say why: failed attempts on the dead server, none on the others.
    stats = {s.name: s for s in Runtime(lab.socket).show_stat() if s.backend.startswith("pool-")}
    assert stats["api-2"].wredis + stats["api-2"].wretr + stats["api-2"].econ + stats["api-2"].eresp >= 1
    assert all(stats[n].econ == stats[n].eresp == 0 for n in ("api-1", "api-3", "api-4"))


def test_a_backend_failing_half_its_requests_is_ejected_within_the_window_and_returns(lab_factory: Any) -> None:
    lab = lab_factory(4, outlier_ejection_seconds=2, outlier_max_ejection_seconds=10)
    flaky = lab.backends["api-1"]
    flaky.fail(0.5)
    load = Load(lab.port).start()
    try:
        wait_for(lambda: lab.ejected() == ["api-1"], "the 5xx share to eject api-1",
                 timeout=lab.pool.outlier_window_seconds, interval=0.25, step=lab.observe)
        b = lab.backend("api-1")
        share = int(b.ejection_reason.split("(")[1].split("%")[0])
        assert " × 5xx in " in b.ejection_reason and 40 <= share <= 60, b.ejection_reason  # about half its requests
        assert lab.ejected() == ["api-1"]  # one verdict, and only the backend that earned it
        lab.push_weights()  # the agent's part: weight 0 in HAProxy, so the 503s stop
        time.sleep(0.2)  # requests already on their way finish
        fives = load.results["503"]
        time.sleep(0.5)
        assert load.results["503"] == fives
        flaky.fail(0)  # it recovers; the prober still passes it (it always did)
        record_transitions(lab.pool.pk, [(b.pk, "up", {"check": "http", "ok_streak": 2, "rise": 2})])
        wait_for(lambda: lab.ejected() == [], "the ejection to end", timeout=5.0, interval=0.25, step=lab.observe)
        lab.push_weights()
        served = next(s.stot for s in Runtime(lab.socket).show_stat() if s.name == "api-1")
        wait_for(lambda: next(s.stot for s in Runtime(lab.socket).show_stat() if s.name == "api-1") > served + 20,
                 "api-1 to serve again")
    finally:
        load.stop()
    end = Change.objects.get(action="backend.eject_end", object_id=b.pk)
    assert end.actor_name == "system:outlier" and end.reason.startswith("back in: ejection over")
    assert not Backend.objects.filter(pool=lab.pool, ejected_at__isnull=False).exists()


def test_when_every_backend_misbehaves_ejection_stays_within_the_share(lab_factory: Any) -> None:
    lab = lab_factory(10)
    for proc in lab.backends.values():
        proc.fail(0.5)
    load = Load(lab.port, threads=8).start()
    most = 0
    try:
        def panicking() -> bool:
            nonlocal most
            most = max(most, len(lab.ejected()))
            return Pool.objects.get(pk=lab.pool.pk).outlier_panic

        wait_for(panicking, "the bound to hold the others in", timeout=lab.pool.outlier_window_seconds,
                 interval=0.25, step=lab.observe)
        for _ in range(8):  # and it keeps holding while the verdicts keep coming
            lab.observe()
            most = max(most, len(lab.ejected()))
            time.sleep(0.25)
    finally:
        load.stop()
    assert most == 1  # 10 % of 10 backends, whatever live traffic says about all of them
    pool = Pool.objects.get(pk=lab.pool.pk)
    assert pool.outlier_panic and "at most 10% of the pool may be ejected at once (1 of 10)" in pool.outlier_panic_reason
    told = Change.objects.filter(action="pool.outlier_panic", object_id=pool.pk)
    assert told.count() == 1 and told.get().actor_name == "system:outlier"
    # HAProxy never took anyone out on its own either: 503 is an answer, not a failed connection.
    assert all(s.status.startswith("UP") for s in Runtime(lab.socket).show_stat() if s.backend.startswith("pool-"))
