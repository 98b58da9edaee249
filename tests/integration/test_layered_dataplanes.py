"""A layered drain of a region against all three real data planes at once, on loopback:

PowerDNS (our remote backend) stops answering with the region's VIPs first; only after the TTL
wait does BIRD lose the PoP's anycast routes (ExaBGP + our agent); then HAProxy drains the PoP's
servers (our HAProxy agent); an undrain brings every layer back. The 1 s sweeper is called by the
test (the same function Celery beat runs), so each step is observed before the next one starts.
Waits are bounded polls on a condition, never timed assertions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from steering.agents.contract import ContractClient
from steering.agents.haproxy import HAProxyAgent
from steering.dataplane.exabgp.lab import Bird, ExaBGPProcess, agent_command, speakers_for
from steering.dataplane.haproxy.runtime import Runtime
from steering.management.commands.seed_demo import seed
from steering.models import VIP, Backend, Change, Operation, PoP, Region, Service
from steering.services.actions import do_undrain
from steering.services.context import Actor
from steering.services.impact import LayeredPlan
from steering.services.layered import do_layered_drain
from steering.services.operations import sweep_due
from steering.services.tokens import do_create_token
from steering.services.topology import do_update
from tests.conftest import make_user
from tests.dataplane.exabgp.lab import Web, require_binaries
from tests.dataplane.gslb.lab import Stack
from tests.dataplane.haproxy.lab import haproxy_binary
from tests.processes import stop_process_group
from tests.support import free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

OPERATOR = Actor(name="otto", source="api")
EU_VIPS = {"192.0.2.30", "203.0.113.30"}
PREFIXES = {"198.51.100.0/24", "203.0.113.0/24"}
DEADLINE = 60.0


def until(condition: Callable[[], Any], what: str, *, step: Callable[[], Any] | None = None) -> Any:
    return wait_for(condition, what, DEADLINE, interval=0.1, step=step)


class Planes:
    def __init__(self, dns: Stack, bird: Bird, haproxy: HAProxyAgent, pop: PoP) -> None:
        self.dns, self.bird, self.haproxy, self.pop = dns, bird, haproxy, pop

    def answers(self, n: int = 60) -> set[str]:
        """Every A record PowerDNS hands out over n queries of each service (weighted: sample)."""
        seen: set[str] = set()
        for _ in range(n):
            seen |= set(self.dns.addresses("api.example.net."))
            seen |= set(self.dns.addresses("static.example.net.", ecs=("198.18.2.0", 24)))  # a European resolver
        return seen

    def routes(self) -> set[str]:
        return self.bird.routes("pop_" + self.pop.slug)

    def step(self) -> None:
        """One look at the PoP's desired state (applied when it moved) and one agent pass."""
        self.haproxy.follower.step()
        self.haproxy.tick()

    def server_states(self) -> set[str]:
        self.step()
        runtime = Runtime(self.haproxy.socket)
        try:
            return {s.state for s in runtime.show_servers_state()}
        except Exception:
            return set()


@pytest.fixture
def planes(request: pytest.FixtureRequest, live_server: Any, tmp_path: Path) -> Iterator[Planes]:
    require_binaries()
    haproxy_binary()
    seed(Actor.system("test"))
    for service in Service.objects.all():  # a 1 s TTL keeps the DNS wait step short
        do_update(service, {"ttl": 1}, actor=Actor.system("test"), reason="short TTL for the test")
    pop = PoP.objects.get(slug="fra1")
    dns = request.getfixturevalue("stack")()  # tests/conftest.py's: starts PowerDNS on our data
    _, raw = do_create_token(make_user("agent-owner", "admin"), name="agent-anycast-fra1", role="agent", pop=pop,
                             actor=Actor.system("test"))
    token_file = tmp_path / "agent.token"
    token_file.write_text(raw + "\n")
    token_file.chmod(0o600)
    speaker = speakers_for([pop.slug])[0]
    bird = Bird(tmp_path / "bird", [speaker])
    exabgp: ExaBGPProcess | None = None
    # The anycast agent long-polls the real ASGI app (as in production), not live_server's WSGI fallback.
    web = Web(tmp_path / "web")
    port = free_port()
    _, agent_token = do_create_token(make_user("owner-fra1", "admin"), name="haproxy fra1", role="agent", pop=pop,
                                     actor=Actor.system("test"))
    client = ContractClient(live_server.url, agent_token, "local", pop=pop.slug)
    agent = HAProxyAgent(client, pop=pop.slug, socket=None, state_dir=tmp_path / "haproxy", spawn=True,
                         reconcile_seconds=3600,
                         binds={s.slug: ("127.0.0.1", port + i) for i, s in enumerate(Service.objects.order_by("slug"))})
    agent.follower.wait = 0  # live_server is the WSGI app: each look answers at once
    try:
        bird.start()
        exabgp = ExaBGPProcess(tmp_path / "exabgp", speaker, router_port=bird.port,
                               agent=agent_command(pop.slug, web.start().url, token_file,
                                                   tmp_path / "anycast-state")).start()
        yield Planes(dns, bird, agent, pop)
    finally:
        agent.stop()
        if exabgp is not None and exabgp.proc is not None:
            exabgp.stop()
            stop_process_group(exabgp.proc)
        if bird.proc is not None:
            stop_process_group(bird.proc)
        bird.stop()
        web.stop()


def test_a_layered_region_drain_leaves_dns_then_anycast_then_haproxy_and_comes_back(planes: Planes) -> None:
    region = Region.objects.get(slug="eu-west")
    # Before: every layer carries Europe.
    until(lambda: planes.routes() == PREFIXES, "BIRD to learn fra1's prefixes")
    assert EU_VIPS <= planes.answers()
    until(lambda: planes.server_states() == {"ready"}, "fra1's HAProxy with every server ready")

    op, impact = do_layered_drain(region, actor=OPERATOR, reason="eu-west maintenance window", ttl_factor=1.0,
                                  grace_seconds=30, force=True, force_reason="test: the survivors are tiny")
    assert op is not None and isinstance(impact.plan, LayeredPlan) and impact.plan.wait_seconds == 1

    # 1. DNS first: the region's VIPs leave the answers while anycast and HAProxy still carry it.
    until(lambda: not (planes.answers(30) & EU_VIPS), "PowerDNS to stop answering with eu-west")
    assert planes.routes() == PREFIXES
    assert planes.server_states() == {"ready"}

    # 2. After the TTL wait the sweeper withdraws anycast: BIRD loses fra1's routes; HAProxy still serves.
    until(lambda: Operation.objects.get(pk=op.pk).steps[2]["status"] == "done", "the anycast step",
          step=lambda: (time.sleep(0.3), sweep_due()))
    until(lambda: planes.routes() == set(), "BIRD to lose fra1's prefixes")

    # 3. Then the local drain reaches HAProxy, and with no sessions the drains finish early.
    until(lambda: planes.server_states() <= {"drain", "maint"} and planes.server_states(), "HAProxy to drain fra1")
    until(lambda: Operation.objects.get(pk=op.pk).status == "succeeded", "the layered drain to finish",
          step=lambda: (planes.step(), sweep_due()))
    assert set(Backend.objects.filter(pool__pop=planes.pop).values_list("admin_state", flat=True)) == {"drained"}
    until(lambda: planes.server_states() == {"maint"}, "HAProxy to hold fra1's servers in maintenance")
    assert not VIP.objects.filter(region=region, enabled=True).exists()
    actions = set(Change.objects.filter(operation_id=op.pk).values_list("action", flat=True))
    assert {"vip.disable", "pop.withdraw", "backend.drain", "backend.drained"} <= actions, actions

    # Undrain: every layer comes back.
    do_undrain(region, actor=OPERATOR, reason="window over")
    until(lambda: planes.routes() == PREFIXES, "BIRD to learn fra1's prefixes again")
    until(lambda: EU_VIPS <= planes.answers(), "PowerDNS to answer with eu-west again")
    until(lambda: planes.server_states() == {"ready"}, "HAProxy to take fra1's servers back")
