"""Stand-ins for the three data planes' agents, so a picture shows the map `make run` shows: every
layer connected, every backend up, every version applied.

Nothing is faked below the API's own services: each second, for every PoP, it writes what the
agent contract's report and ack views write (steering.api.views.agent): the HAProxy agent's status
(steering.services.agent_reports.store_haproxy_status), the ExaBGP agent's observed announcements
(steering.services.announcements.record_agent_report, the PoP's desired ones), the GSLB server's
answers and heartbeat (store_dns_answers), and each agent's contact and ACK of the current version
(steering.services.agents.record_seen and acknowledge). Backends are marked up once, as the prober
records a passing check (steering.services.health.record_transitions_many).

It runs on a thread of its own (its own database connection), away from Playwright's event loop.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

from django.db import connections

from steering.choices import DataplaneLayer, Health
from steering.models import Backend, PoP, Region, Service
from steering.readmodels.announcements import desired_for
from steering.readmodels.version import current_version
from steering.services.agent_reports import store_dns_answers, store_haproxy_status
from steering.services.agents import AgentIdentity, acknowledge, record_seen
from steering.services.announcements import record_agent_report
from steering.services.health import record_transitions_many

INSTANCE = "docs"
PERIOD_SECONDS = 1.0  # the layers read as connected for 5 s after a report (readmodels.dataplane)


def mark_backends_up() -> None:
    """Every backend up, as the prober records a passing check (audited as system:prober)."""
    by_pool: dict[int, list[tuple[int, str, dict[str, object]]]] = {}
    for pk, pool_id in Backend.objects.values_list("pk", "pool_id"):
        evidence: dict[str, object] = {"check": "http", "status": 200, "ok_streak": 2, "rise": 2}
        by_pool.setdefault(pool_id, []).append((pk, Health.UP, evidence))
    record_transitions_many(by_pool)


class LiveDataplanes:
    """`with LiveDataplanes(): ...` keeps the three layers reporting until the block ends."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="docs-agents", daemon=True)
        self.last_error = ""

    def __enter__(self) -> LiveDataplanes:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            pops = list(PoP.objects.order_by("pk"))
            answers = [(s, r, 5) for s in Service.objects.values_list("pk", flat=True)
                       for r in Region.objects.values_list("pk", flat=True)]
            agents = [AgentIdentity(layer, pop, INSTANCE, f"agent-{layer}-{pop.slug}")
                      for pop in pops for layer in (DataplaneLayer.LOCAL, DataplaneLayer.ANYCAST)]
            agents.append(AgentIdentity(DataplaneLayer.DNS, None, INSTANCE, "agent-dns"))
            while not self._stop.is_set():
                try:
                    self._report(pops, answers, agents)
                except Exception as exc:  # said in the test's failure (the header never connects)
                    self.last_error = repr(exc)
                self._stop.wait(PERIOD_SECONDS)
        finally:
            connections.close_all()

    @staticmethod
    def _report(pops: list[PoP], answers: list[tuple[int, int, int]], agents: list[AgentIdentity]) -> None:
        now = time.time()
        desired = desired_for(pops)
        for pop in pops:
            store_haproxy_status(pop, {"connected": True, "error": "", "servers": 9, "managed": True},
                                 instance=INSTANCE, now=now)
            record_agent_report(pop, desired[pop.pk][1].desired, session="established", now=now)
        store_dns_answers(answers, now=now)
        version = current_version()
        for identity in agents:
            record_seen(identity, now=now)
            acknowledge(identity, version=version)
