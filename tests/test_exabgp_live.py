"""Anycast end to end on loopback: a real BIRD 2 router, a real ExaBGP for the PoP, our agent as its
API process polling a live control plane (pytest-django's live_server) over HTTP.

What the router's table shows is the proof: `birdc show route protocol pop_bom1`. Waits are
bounded polls on a condition (generous deadlines), never timed assertions. Every process a test
starts is stopped in teardown.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from steering.dataplane.exabgp.demo import Supervisor, issue_agent_token
from steering.dataplane.exabgp.lab import (
    Bird,
    ExaBGPProcess,
    agent_command,
    bird_binary,
    birdc_binary,
    exabgp_binary,
    exabgp_env,
    speakers_for,
)
from steering.management.commands.seed_demo import seed
from steering.models import ApiToken, Pool, PoP
from steering.services.context import Actor
from steering.services.tokens import do_create_token, do_revoke_token
from tests import factories as f
from tests.conftest import IN_CI, make_user, token_client
from tests.processes import stop_process_group, subprocess_env
from tests.support import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

API_PREFIX, STATIC_PREFIX = "198.51.100.0/24", "203.0.113.0/24"
BOTH = {API_PREFIX, STATIC_PREFIX}
DEADLINE = 60.0


def require_binaries() -> None:
    missing = [name for name, found in (("bird", bird_binary()), ("birdc", birdc_binary()),
                                        ("exabgp", exabgp_binary())) if not found]
    if missing:
        message = f"{', '.join(missing)} not installed (Debian bird2; exabgp from requirements-dev.txt)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@dataclass
class Lab:
    pop: PoP
    bird: Bird
    exabgp: ExaBGPProcess
    operator: APIClient
    viewer: APIClient
    token: ApiToken

    @property
    def protocol(self) -> str:
        return "pop_" + self.pop.slug

    def routes(self) -> set[str]:
        return self.bird.routes(self.protocol)

    def wait(self, condition: Callable[[], Any], what: str) -> Any:
        try:
            return wait_for(condition, what, DEADLINE, interval=0.2)  # birdc is a process: not too often
        except AssertionError as exc:
            raise AssertionError(f"{exc}; router has {self.routes()}\n--- exabgp log ---\n"
                                 f"{self.exabgp.log()[-4000:]}\n--- bird log ---\n{self.bird.log()[-2000:]}") from exc

    def wait_routes(self, expected: set[str]) -> None:
        self.wait(lambda: self.routes() == expected, f"router table {sorted(expected)}")

    def anycast(self) -> dict[str, Any]:
        response = self.viewer.get("/api/v1/anycast/")
        assert response.status_code == 200, response.content
        return response.json()["pops"][str(self.pop.pk)]  # type: ignore[no-any-return]

    def post(self, url: str, body: dict[str, Any]) -> Any:
        response = self.operator.post(url, body, format="json")
        assert response.status_code == 202, response.content
        return response


@pytest.fixture
def lab(tmp_path: Path, live_server: Any) -> Iterator[Lab]:
    require_binaries()
    seed(Actor.system("test"))
    pop = PoP.objects.get(slug="bom1")
    agent_user = make_user("agent-bom1", "operator")
    token, raw = do_create_token(agent_user, name="exabgp agent bom1", role="operator", actor=Actor.system("test"))
    token_file = tmp_path / "agent.token"
    token_file.write_text(raw + "\n")
    token_file.chmod(0o600)
    api = f"http://127.0.0.1:{live_server.thread.port}"
    speaker = speakers_for([pop.slug])[0]
    bird = Bird(tmp_path / "bird", [speaker])
    exabgp: ExaBGPProcess | None = None
    try:
        bird.start()
        exabgp = ExaBGPProcess(tmp_path / "exabgp", speaker, agent=agent_command(pop.slug, api, token_file),
                               router_port=bird.port).start()
        yield Lab(pop, bird, exabgp, token_client(make_user("otto-operator", "operator")),
                  token_client(make_user("vera-viewer", "viewer")), token)
    finally:
        if exabgp is not None and exabgp.proc is not None:
            exabgp.stop()                       # ExaBGP first ends its agent itself
            stop_process_group(exabgp.proc)
        if bird.proc is not None:
            stop_process_group(bird.proc)
        bird.stop()


def live_channel() -> tuple[Any, str]:
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)("live", channel)
    return layer, channel


def next_observed(layer: Any, channel: str, pop_id: int, observed: list[str]) -> dict[str, Any]:
    """The first anycast push for this PoP whose observed set is `observed` (bounded wait)."""
    deadline = time.monotonic() + DEADLINE

    async def receive() -> dict[str, Any]:
        import asyncio

        return await asyncio.wait_for(layer.receive(channel), timeout=max(0.1, deadline - time.monotonic()))

    while True:
        event = async_to_sync(receive)()
        if event.get("type") != "live.observed":
            continue
        message = event["message"]
        if message.get("layer") == "anycast" and message["pop"] == pop_id and message["observed"] == observed:
            return message  # type: ignore[no-any-return]


def test_the_router_follows_withdraw_and_announce_through_the_api(lab: Lab) -> None:
    lab.wait_routes(BOTH)
    row = lab.wait(lambda: (r := lab.anycast())["agent"] == "connected" and set(r["observed"]) == BOTH and r,
                   "the agent's report")
    assert row["desired"] == sorted(BOTH) == row["observed"]
    assert row["session"] == "up" and row["observed_at"] is not None
    assert row["reason"].startswith("announcing")

    layer, channel = live_channel()
    lab.post(f"/api/v1/pops/{lab.pop.pk}/withdraw/",
             {"reason": "router maintenance", "force": True, "force_reason": "test: neighbours take it"})
    lab.wait_routes(set())
    pushed = next_observed(layer, channel, lab.pop.pk, [])
    assert pushed["type"] == "observed" and pushed["desired"] == []
    row = lab.wait(lambda: (r := lab.anycast())["observed"] == [] and r, "the withdrawal reported")
    assert row["desired"] == [] and row["reason"] == "operator withdrew" and row["agent"] == "connected"

    lab.post(f"/api/v1/pops/{lab.pop.pk}/announce/", {"reason": "maintenance over"})
    lab.wait_routes(BOTH)
    assert next_observed(layer, channel, lab.pop.pk, sorted(BOTH))["desired"] == sorted(BOTH)


def test_backends_out_of_service_withdraw_their_service_prefix(lab: Lab) -> None:
    lab.wait_routes(BOTH)
    force = {"reason": "disk swap", "force": True, "force_reason": "test: the fleet takes it"}
    for pool in Pool.objects.filter(pop=lab.pop, service__slug="api"):   # api-web and pay-pci
        lab.post(f"/api/v1/pools/{pool.pk}/maintenance/", force)
    lab.wait_routes({STATIC_PREFIX})
    row = lab.wait(lambda: (r := lab.anycast())["observed"] == [STATIC_PREFIX] and r, "the partial withdrawal")
    assert row["desired"] == [STATIC_PREFIX]
    assert "no healthy backends for api" in row["reason"]

    lab.post(f"/api/v1/pops/{lab.pop.pk}/maintenance/", force)   # now everything at the PoP
    lab.wait_routes(set())
    assert lab.anycast()["reason"] == "PoP in maintenance"

    lab.post(f"/api/v1/pops/{lab.pop.pk}/undrain/", {"reason": "back in service"})
    lab.wait_routes(BOTH)


def test_the_agent_keeps_the_last_state_while_the_control_plane_refuses_it(lab: Lab) -> None:
    lab.wait_routes(BOTH)
    lab.wait(lambda: lab.anycast()["agent"] == "connected", "the agent connected")
    do_revoke_token(lab.token, actor=Actor.system("test"), reason="test: cut the agent off")  # now 401s
    lab.wait(lambda: lab.anycast()["agent"] == "stale", "the agent to go stale")
    assert lab.routes() == BOTH, "a control plane the agent cannot reach must not withdraw the PoP"
    assert lab.exabgp.running()
    assert "control plane unavailable" in lab.exabgp.log()


def test_the_demo_runs_a_router_and_an_exabgp_per_pop(tmp_path: Path, live_server: Any) -> None:
    require_binaries()
    seed(Actor.system("test"))
    get_user_model().objects.create_superuser("admin", password="demo-admin-pass")
    pops, raw = issue_agent_token()
    assert pops[:2] == ["bom1", "maa1"] and len(pops) == 7
    assert ApiToken.objects.get(name="exabgp-demo", revoked_at__isnull=True).role == "operator"
    token_file = tmp_path / "agent.token"
    token_file.write_text(raw)
    supervisor = Supervisor(tmp_path, pops[:3], f"http://127.0.0.1:{live_server.thread.port}", token_file)
    try:
        supervisor.start()
        protocols = [f"pop_{slug}" for slug in pops[:3]]
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline and any(supervisor.bird.routes(p) != BOTH for p in protocols):
            time.sleep(0.2)
        assert all(supervisor.bird.routes(p) == BOTH for p in protocols), supervisor.bird.birdc("show", "route")
        assert "pop_lhr1" not in supervisor.bird.birdc("show", "protocols")
    finally:
        supervisor.stop()
        for speaker in supervisor.speakers.values():
            if speaker.proc is not None:
                stop_process_group(speaker.proc)
        if supervisor.bird.proc is not None:
            stop_process_group(supervisor.bird.proc)


def test_the_example_deploy_config_is_valid_exabgp(tmp_path: Path) -> None:
    require_binaries()
    example = Path(__file__).resolve().parent.parent / "deploy" / "exabgp" / "exabgp.conf"
    done = subprocess.run([str(exabgp_binary()), "--validate", str(example)], env=exabgp_env(), cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)   # parses only: connects nowhere
    assert done.returncode == 0, done.stdout + done.stderr
    assert "loaded new configuration successfully" in done.stdout + done.stderr
    assert "steering.dataplane.exabgp.agent --pop bom1" in example.read_text()


def _ours(marker: Path) -> list[int]:
    """Pids of processes whose command line names this test's directory (what the demo started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(marker) in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_the_demo_command_stops_its_router_and_speakers_on_sigterm(tmp_path: Path, live_server: Any) -> None:
    require_binaries()
    svc = f.service(slug="api", anycast_prefix=f.prefix(prefix=API_PREFIX))
    pops = [f.pop(slug=slug) for slug in ("aaa1", "bbb1")]
    for p in pops:
        f.backend(f.pool(p, svc))
    get_user_model().objects.create_superuser("admin", password="demo-admin-pass")
    work = tmp_path / "anycast"
    log = (tmp_path / "demo.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "steering.dataplane.exabgp.demo", "--api",
                             f"http://127.0.0.1:{live_server.thread.port}", "--dir", str(work)],
                            env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        bird = Bird(work / "bird", [])
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline and not all(
                os.path.exists(bird.socket) and bird.routes(f"pop_{p.slug}") == {API_PREFIX} for p in pops):
            time.sleep(0.2)
        assert all(bird.routes(f"pop_{p.slug}") == {API_PREFIX} for p in pops), (tmp_path / "demo.log").read_text()
        assert len(_ours(work)) >= 3   # BIRD and two ExaBGPs (and their agents)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        deadline = time.monotonic() + DEADLINE
        while _ours(work) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _ours(work) == [], "the demo left processes behind"
    finally:
        stop_process_group(proc)
        for pid in _ours(work):   # only if the demo failed to: the processes it started for this test
            os.kill(pid, signal.SIGKILL)
        log.close()
