"""The HAProxy agent against a real HAProxy it starts itself (`--spawn`), on loopback, following
the real control plane (uvicorn on the test database) through the agent contract only.

What the agent is for: a change committed through the service layer reaches HAProxy without
anyone calling it, and is acknowledged; figures come back through the API; new pools get a
config and a reload; a killed HAProxy comes back with the desired state; a 5xx spike is flagged.
Every wait is a bounded poll on a condition (no timed assertions).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from steering.agents.contract import ContractClient
from steering.agents.haproxy import HAProxyAgent
from steering.choices import Role
from steering.dataplane.haproxy.desired import pop_spec
from steering.dataplane.haproxy.runtime import Runtime
from steering.dataplane.stats import read_backend_stats
from steering.models import Backend, Change, DataplaneState, Pool, PoP, Service
from steering.readmodels.version import current_version
from steering.services.actions import do_drain
from steering.services.context import Actor
from steering.services.operations import sweep_due
from steering.services.tokens import do_create_token
from steering.services.topology import do_create
from tests import factories as f
from tests.conftest import make_user
from tests.dataplane.haproxy.lab import NameServer, haproxy_binary
from tests.processes import WebProcess
from tests.support import free_port, wait_for

OPERATOR = Actor(name="otto", source="api")


class Harness:
    def __init__(self, tmp_path: Path, web: WebProcess) -> None:
        haproxy_binary()  # fails in CI, skips elsewhere, when HAProxy is missing
        self.pop = f.pop(slug=f"agent{free_port() % 10000}")
        self.service = f.service(protocol="http", slug=f"svc{self.pop.pk}")
        self.pool = f.pool(self.pop, self.service, slug="web", algorithm="roundrobin")
        self.servers: dict[str, NameServer] = {}
        self.port = free_port()
        owner = make_user(f"owner-{self.pop.slug}", "admin")
        _token, raw = do_create_token(owner, name="haproxy", role=Role.AGENT, pop=self.pop, actor=Actor.system("test"))
        client = ContractClient(web.url, raw, "local", pop=self.pop.slug, instance="test")
        self.agent = HAProxyAgent(client, pop=self.pop.slug, socket=None, state_dir=tmp_path, spawn=True,
                                  binds={self.service.slug: ("127.0.0.1", self.port)}, reconcile_seconds=3600)
        self.agent.follower.wait = 1  # each long-poll step returns within a second when nothing moves

    def add(self, name: str, **kw: Any) -> Backend:
        server = NameServer(name).start()
        self.servers[name] = server
        return f.backend(self.pool, name=name, address="127.0.0.1", port=server.port, **kw)

    def step(self) -> None:
        """One long-poll of the desired state (applied when it moved) and one periodic pass."""
        self.agent.follower.step()
        self.agent.tick()

    def pump(self, until: Any, what: str, timeout: float = 20.0) -> Any:
        """Run agent steps until `until()` is true."""
        def step() -> Any:
            self.step()
            return until()
        return wait_for(step, what, timeout=timeout)

    @property
    def runtime(self) -> Runtime:
        return Runtime(self.agent.socket)

    def state(self, name: str) -> Any:
        proxy = pop_spec(self.pop).pool(self.pool.pk)
        assert proxy is not None
        try:
            return {s.name: s for s in self.runtime.show_servers_state(proxy.proxy)}.get(name)
        except Exception:
            return None

    def get(self, path: str = "/") -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def stop(self) -> None:
        self.agent.stop()
        for s in self.servers.values():
            s.stop()


@pytest.fixture
def harness(transactional_db: Any, tmp_path: Path, web: WebProcess) -> Iterator[Harness]:
    h = Harness(tmp_path, web)
    try:
        h.add("app-1")
        h.add("app-2")
        h.pump(lambda: h.state("app-1") is not None, "the agent to start HAProxy")
        yield h
    finally:
        h.stop()


@pytest.mark.integration
def test_a_committed_drain_reaches_haproxy_is_acknowledged_and_only_then_completes(harness: Harness,
                                                                                 settings: Any) -> None:
    settings.STEERING_DATAPLANE_CONFIRM = True
    backend = Backend.objects.get(pool=harness.pool, name="app-1")
    assert harness.state("app-1").state == "ready"
    op, _ = do_drain(backend, actor=OPERATOR, reason="deploy", grace_seconds=0, force=True, force_reason="test fleet")
    assert op is not None
    drain_version = current_version()
    # Grace 0, yet not drained: HAProxy has not said it applied the drain.
    assert Backend.objects.get(pk=backend.pk).admin_state == "draining"
    harness.pump(lambda: harness.state("app-1").state == "drain", "HAProxy to drain app-1")
    assert harness.state("app-2").state == "ready"
    # And traffic follows: every new request lands on app-2.
    answers = {harness.get()[1] for _ in range(20)}
    assert answers == {"app-2"}
    row = wait_for(lambda: DataplaneState.objects.filter(pop=harness.pop, layer="local",
                                                        applied_version__gte=drain_version).first(),
                   "the agent's acknowledgement", step=harness.step)
    assert row.instance == "test" and row.error == ""
    sweep_due()
    assert Backend.objects.get(pk=backend.pk).admin_state == "drained"
    op.refresh_from_db()
    assert op.status == "succeeded"


@pytest.mark.integration
def test_figures_reach_redis_and_the_api(harness: Harness, operator_api: Any) -> None:
    for _ in range(10):
        assert harness.get()[0] == 200
    ids = list(Backend.objects.filter(pool=harness.pool).values_list("pk", flat=True))
    harness.pump(lambda: len(read_backend_stats(ids)) == 2, "stats for both backends")
    body = operator_api.get(f"/api/v1/stats/backends/?pop={harness.pop.pk}").json()
    assert body["connected"] is True
    assert set(body["backends"]) == {str(i) for i in ids}
    assert all(v["sessions"] == 0 for v in body["backends"].values())
    layers = operator_api.get("/api/v1/dataplanes/").json()
    assert layers["local"]["connected"] is True and harness.pop.slug in layers["local"]["pops"]


@pytest.mark.integration
def test_a_server_haproxy_takes_out_on_live_traffic_is_reported_in_the_same_pass(harness: Harness) -> None:
    """The control plane learns of a DOWN from the pass that sees it, not from the next stats period:
    with the stats period out of reach, only the agent's per-pass watch can carry it."""
    harness.step()  # the first pass reports the figures; the next periodic report is an hour away
    harness.agent.stats_seconds = 3600
    dead = Backend.objects.get(pool=harness.pool, name="app-2")
    proxy = pop_spec(harness.pop).pool(harness.pool.pk)
    assert proxy is not None
    harness.servers["app-2"].stop()

    def haproxy_took_it_out() -> bool:
        for _ in range(5):
            assert harness.get()[0] == 200  # retries + redispatch: the client never sees the refusals
        rows = {r.name: r.status for r in harness.runtime.show_stat() if r.backend == proxy.proxy}
        return rows.get("app-2", "").startswith("DOWN")

    wait_for(haproxy_took_it_out, "HAProxy's observe to take app-2 out on live traffic")
    before = read_backend_stats([dead.pk]).get(dead.pk)
    assert before is None or not before.observed_down
    harness.agent.tick()
    after = read_backend_stats([dead.pk])[dead.pk]
    assert after.observed_down == 1
    alive = Backend.objects.get(pool=harness.pool, name="app-1")
    assert read_backend_stats([alive.pk])[alive.pk].observed_down == 0


@pytest.mark.integration
def test_a_new_pool_gets_a_config_and_a_reload(harness: Harness) -> None:
    # Through the service layer, as the API does: each write moves the state version agents follow.
    pci = do_create(Pool, {"pop": harness.pop, "service": harness.service, "slug": "pay-pci",
                           "match_path_prefix": "/payments", "rule_priority": 10}, actor=OPERATOR)
    server = NameServer("pay-1").start()
    harness.servers["pay-1"] = server
    do_create(Backend, {"pool": pci, "name": "pay-1", "address": "127.0.0.1", "port": server.port}, actor=OPERATOR)
    harness.pump(lambda: harness.get("/payments/x") == (200, "pay-1"), "the reloaded HAProxy to route /payments")
    assert harness.get("/")[1] in {"app-1", "app-2"}


@pytest.mark.integration
def test_a_killed_haproxy_comes_back_with_the_desired_state(harness: Harness) -> None:
    backend = Backend.objects.get(pool=harness.pool, name="app-2")
    do_drain(backend, actor=OPERATOR, reason="deploy", grace_seconds=60, force=True, force_reason="test fleet")
    harness.pump(lambda: harness.state("app-2").state == "drain", "HAProxy to drain app-2")
    managed = harness.agent.managed
    assert managed is not None and managed.proc is not None
    old_pid = managed.proc.pid
    managed.proc.kill()
    managed.proc.wait(timeout=10)
    harness.pump(lambda: managed.proc is not None and managed.proc.pid != old_pid and harness.state("app-2") is not None,
                 "the agent to start a new HAProxy")
    # Rendered draining = weight 0, or the runtime drain: either way no new traffic for app-2.
    harness.pump(lambda: {harness.get()[1] for _ in range(10)} == {"app-1"}, "traffic to avoid app-2 again")


@pytest.mark.integration
def test_a_5xx_spike_is_flagged_and_clears(harness: Harness, operator_api: Any) -> None:
    backend = Backend.objects.get(pool=harness.pool, name="app-1")
    harness.pump(lambda: str(backend.pk) in operator_api.get("/api/v1/stats/backends/").json()["backends"],
                 "a first stats sample")

    def fail_a_while() -> bool:
        for _ in range(30):
            harness.get("/fail")  # NameServer answers 500 on /fail
        harness.agent.last_stats = float("-inf")  # collect now rather than on the next second
        harness.agent.tick()
        figures = read_backend_stats([backend.pk])
        return bool(figures) and figures[backend.pk].flag_5xx

    wait_for(fail_a_while, "the 5xx spike flag", timeout=30)
    body = operator_api.get("/api/v1/stats/backends/").json()
    assert body["backends"][str(backend.pk)]["flag_5xx"] is True
    assert body["backends"][str(backend.pk)]["rate_5xx"] > 0

    def healthy_a_while() -> bool:
        for _ in range(10):
            harness.get("/")
        harness.agent.last_stats = float("-inf")
        harness.agent.tick()
        return not read_backend_stats([backend.pk])[backend.pk].flag_5xx

    wait_for(healthy_a_while, "the flag to clear", timeout=30)
    # A flag is evidence, not a transition: nothing was written to the audit log for it.
    assert not Change.objects.filter(object_id=backend.pk, action__startswith="health").exists()


def test_demo_frontends_get_one_loopback_address_per_pop_and_service() -> None:
    from steering.dataplane.haproxy.demo import demo_binds
    from steering.dataplane.haproxy.process import frontend_address, frontend_port

    binds = demo_binds(PoP(pk=3, slug="x"), [Service(pk=2, slug="api", port=443), Service(pk=5, slug="raw", port=9000)])
    assert binds == ["api=127.2.3.2:8443", "raw=127.2.3.5:9000"]
    assert frontend_port(80) == 8080
    with pytest.raises(ValueError):
        frontend_address(0, 1)
    with pytest.raises(ValueError):
        frontend_address(1, 255)


class DemoBackends:
    """The demo's own backend listeners (manage.py demo_backends' protocol) on free loopback ports."""

    def __init__(self, names: list[str]) -> None:
        import asyncio
        import functools
        import threading

        from steering.management.commands.demo_backends import _Http

        self.loop = asyncio.new_event_loop()
        self.ports: dict[str, int] = {}
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        for name in names:
            server = asyncio.run_coroutine_threadsafe(
                self.loop.create_server(functools.partial(_Http, name), "127.0.0.1", 0), self.loop).result(10)
            self.ports[name] = server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.mark.integration
def test_demo_traffic_shows_live_sessions_that_move_when_an_operator_drains(transactional_db: Any,
                                                                           tmp_path: Path, web: WebProcess) -> None:
    import asyncio
    import threading

    from steering.management.commands.demo_traffic import one_request

    h = Harness(tmp_path, web)
    demo = DemoBackends(["d-1", "d-2"])
    stop = threading.Event()
    try:
        for name, port in demo.ports.items():
            f.backend(h.pool, name=name, address="127.0.0.1", port=port)
        h.pump(lambda: h.state("d-1") is not None, "the agent to start HAProxy")

        async def traffic() -> None:
            tasks: set[asyncio.Task[int]] = set()
            while not stop.is_set():
                task = asyncio.create_task(one_request("127.0.0.1", h.port, "/?ms=1500", timeout=20))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                await asyncio.sleep(0.05)
            await asyncio.gather(*tasks, return_exceptions=True)

        runner = threading.Thread(target=asyncio.run, args=(traffic(),), daemon=True)
        runner.start()
        ids = dict(Backend.objects.filter(pool=h.pool).values_list("name", "pk"))

        def sessions() -> dict[str, int]:
            h.step()
            figures = read_backend_stats(ids.values())
            return {name: figures[pk].sessions for name, pk in ids.items() if pk in figures}

        h.pump(lambda: all(v > 0 for v in sessions().values()) and len(sessions()) == 2,
               "open sessions on both backends")
        # No grace given: it is suggested from HAProxy's figures (sessions / completion rate + buffer).
        h.pump(lambda: read_backend_stats([ids["d-1"]])[ids["d-1"]].completion_rate > 0, "a measured completion rate")
        op, _ = do_drain(Backend.objects.get(pk=ids["d-1"]), actor=OPERATOR, reason="deploy",
                         force=True, force_reason="test fleet")
        assert op is not None and op.params["grace_basis"] == "measured", op.params
        assert "sessions" in op.params["grace_derivation"]
        # Its open sessions finish and no new ones arrive, while d-2 keeps serving.
        h.pump(lambda: (s := sessions()).get("d-1") == 0 and s.get("d-2", 0) > 0, "d-1 to empty while d-2 serves",
               timeout=40)
        # The sweeper sees the zero and completes the drain before its deadline.
        sweep_due()
        drained = Backend.objects.get(pk=ids["d-1"])
        assert drained.admin_state == "drained"
        assert Change.objects.filter(object_id=drained.pk, action="backend.drained",
                                     reason__contains="sessions reached zero").count() == 1
    finally:
        stop.set()
        h.stop()
        demo.stop()


def test_the_demo_backends_answer_slowly_or_with_a_status_when_asked() -> None:
    import asyncio

    from steering.management.commands.demo_backends import _asked
    from steering.management.commands.demo_traffic import one_request

    assert _asked(b"GET /?ms=800&status=503 HTTP/1.1\r\n\r\n") == (0.8, 503)
    assert _asked(b"GET /healthz HTTP/1.1\r\n\r\n") == (0.0, 200)
    assert _asked(b"GET /?ms=99999999 HTTP/1.1\r\n\r\n") == (60.0, 200)   # capped
    assert _asked(b"GET /?status=999 HTTP/1.1\r\n\r\n") == (0.0, 200)     # not a status
    assert _asked(b"garbage") == (0.0, 200)
    demo = DemoBackends(["x-1"])
    try:
        port = demo.ports["x-1"]
        assert asyncio.run(one_request("127.0.0.1", port, "/?status=503", timeout=10)) == 503
        assert asyncio.run(one_request("127.0.0.1", port, "/?ms=200", timeout=10)) == 200
        assert asyncio.run(one_request("127.0.0.1", free_port(), "/", timeout=5)) == 0  # nobody listens
    finally:
        demo.stop()


def test_demo_traffic_asks_dns_as_resolvers_from_the_client_networks_would() -> None:
    import asyncio

    import dns.edns
    import dns.message

    from steering.management.commands.demo_traffic import dns_queries

    seen: list[dns.message.Message] = []

    class Responder(asyncio.DatagramProtocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: Any) -> None:
            query = dns.message.from_wire(data)
            seen.append(query)
            self.transport.sendto(dns.message.make_response(query).to_wire(), addr)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(Responder, local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
        stop = asyncio.Event()
        task = asyncio.create_task(dns_queries(stop, port, 200.0, ["api.example.net"], ["198.18.2.0/24", "2001:db8::/48"]))
        deadline = loop.time() + 20
        while len(seen) < 40 and loop.time() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        await task
        transport.close()

    asyncio.run(run())
    assert len(seen) >= 40
    assert {q.question[0].name.to_text() for q in seen} == {"api.example.net."}
    subnets = {o.address for q in seen for o in q.options if isinstance(o, dns.edns.ECSOption)}
    assert subnets == {"198.18.2.0"}           # only the IPv4 client network, as a /24 ECS
    assert any(not q.options for q in seen)    # and plain queries, answered by weight
