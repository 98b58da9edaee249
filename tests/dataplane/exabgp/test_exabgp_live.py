"""Anycast end to end on loopback: a real BIRD 2 router, a real ExaBGP for the PoP, our agent
(steering.agents.exabgp) as its API process following the agent contract with the PoP's agent
token, against the real web process (uvicorn config.asgi:application, which serves the long-poll)
on a free loopback port.

What the router's table shows is the proof: `birdc show route protocol pop_bom1`; what the
control plane records is GET /api/v1/dataplanes/ (the applied version) and GET /api/v1/anycast/.
Waits are bounded polls on a condition (generous deadlines), never timed assertions, except that a
change after the control plane's return must arrive within CHANGE_DEADLINE. Every process a test
starts is stopped in teardown.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model

from steering.agents.contract import ContractClient, ControlPlaneError
from steering.dataplane.exabgp.demo import Supervisor, agent_tokens
from steering.dataplane.exabgp.lab import (
    Bird,
    ExaBGPProcess,
    agent_command,
    exabgp_binary,
    exabgp_env,
    speakers_for,
)
from steering.management.commands.seed_demo import seed
from steering.models import ApiToken, DataplaneState, Pool, PoP
from steering.models.tokens import hash_token
from steering.readmodels.version import current_version
from steering.services.context import Actor
from steering.services.tokens import do_create_token, do_revoke_token
from tests import factories as f
from tests.conftest import make_user, token_client
from tests.dataplane.exabgp.lab import Web, require_binaries
from tests.processes import ROOT, stop_process_group, subprocess_env
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

API_PREFIX, STATIC_PREFIX = "198.51.100.0/24", "203.0.113.0/24"
BOTH = {API_PREFIX, STATIC_PREFIX}
DEADLINE = 60.0
CHANGE_DEADLINE = 15.0   # "within a few seconds" of the control plane coming back, with room for a slow CI host
FORCE = {"force": True, "force_reason": "test: the rest of the fleet takes it"}


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    server = Web(tmp_path / "web")
    try:
        yield server
    finally:
        server.stop()


def agent_token(pop: PoP) -> tuple[ApiToken, str]:
    owner = get_user_model().objects.filter(username="agent-owner").first() or make_user("agent-owner", "admin")
    return do_create_token(owner, name=f"agent-anycast-{pop.slug}", role="agent", pop=pop,
                           actor=Actor.system("test"))


def write_private(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


@dataclass
class Lab:
    pop: PoP
    bird: Bird
    exabgp: ExaBGPProcess
    web: Web
    operator: str
    viewer: str
    token: ApiToken
    state_dir: Path

    @property
    def protocol(self) -> str:
        return "pop_" + self.pop.slug

    @property
    def state_file(self) -> Path:
        return self.state_dir / f"anycast-{self.pop.slug}-default.json"

    def routes(self) -> set[str]:
        return self.bird.routes(self.protocol)

    def wait(self, condition: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
        try:
            return wait_for(condition, what, timeout, interval=0.2)  # birdc is a process: not too often
        except AssertionError as exc:
            raise AssertionError(f"{exc}; router has {self.routes()}\n--- exabgp log ---\n"
                                 f"{self.exabgp.log()[-5000:]}\n--- bird log ---\n{self.bird.log()[-2000:]}"
                                 f"\n--- web log ---\n{self.web.log()[-3000:]}") from exc

    def wait_routes(self, expected: set[str], timeout: float = DEADLINE) -> None:
        self.wait(lambda: self.routes() == expected, f"router table {sorted(expected)}", timeout)

    def anycast(self) -> dict[str, Any]:
        status, body = self.web.call("GET", "/api/v1/anycast/", self.viewer)
        assert status == 200, body
        return body["pops"][str(self.pop.pk)]  # type: ignore[no-any-return]

    def applied(self) -> dict[str, Any]:
        """GET /api/v1/dataplanes/ → applied → pops → <slug> → anycast, and the desired version."""
        status, body = self.web.call("GET", "/api/v1/dataplanes/", self.viewer)
        assert status == 200, body
        return {**body["applied"]["pops"][self.pop.slug]["anycast"], "version": body["applied"]["version"]}

    def wait_applied(self, version: int) -> dict[str, Any]:
        return self.wait(lambda: (a := self.applied())["state"] == "in_sync" and (a["applied_version"] or 0) >= version
                         and a, f"the anycast agent to acknowledge version {version}")

    def post(self, path: str, body: dict[str, Any]) -> int:
        """An operator's action through the API; the state version it produced."""
        status, answer = self.web.call("POST", path, self.operator, body)
        assert status == 202, answer
        return current_version()

    def restart_exabgp(self) -> None:
        self.exabgp.stop()
        assert self.exabgp.proc is not None
        stop_process_group(self.exabgp.proc)
        self.exabgp.start()


@pytest.fixture
def lab(tmp_path: Path, web: Web) -> Iterator[Lab]:
    require_binaries()
    seed(Actor.system("test"))
    pop = PoP.objects.get(slug="bom1")
    token, raw = agent_token(pop)
    token_file = write_private(tmp_path / "agent.token", raw + "\n")
    state_dir = tmp_path / "state"
    operator = token_client(make_user("otto-operator", "operator")).raw_token  # type: ignore[attr-defined]
    viewer = token_client(make_user("vera-viewer", "viewer")).raw_token  # type: ignore[attr-defined]
    web.start()
    speaker = speakers_for([pop.slug])[0]
    bird = Bird(tmp_path / "bird", [speaker])
    exabgp: ExaBGPProcess | None = None
    try:
        bird.start()
        exabgp = ExaBGPProcess(tmp_path / "exabgp", speaker, router_port=bird.port,
                               agent=agent_command(pop.slug, web.url, token_file, state_dir)).start()
        yield Lab(pop, bird, exabgp, web, operator, viewer, token, state_dir)
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
        if message.get("layer") == "anycast" and message["pop"] == pop_id and message.get("observed") == observed:
            return message  # type: ignore[no-any-return]


def test_a_withdraw_through_the_api_leaves_the_router_and_the_applied_version_says_so(lab: Lab) -> None:
    lab.wait_routes(BOTH)
    row = lab.wait(lambda: (r := lab.anycast())["agent"] == "connected" and set(r["observed"]) == BOTH and r,
                   "the agent's report")
    assert row["desired"] == sorted(BOTH) == row["observed"]
    assert row["session"] == "up" and row["reason"].startswith("announcing")
    lab.wait_applied(current_version())

    layer, channel = live_channel()
    withdrawn = lab.post(f"/api/v1/pops/{lab.pop.pk}/withdraw/", {"reason": "router maintenance", **FORCE})
    lab.wait_routes(set())
    applied = lab.wait_applied(withdrawn)
    assert applied["error"] == "" and "ExaBGP runs version" in applied["detail"]
    state = DataplaneState.objects.get(layer="anycast", pop=lab.pop, instance="default")
    assert state.applied_version >= withdrawn and state.agent_token_name == lab.token.name
    pushed = next_observed(layer, channel, lab.pop.pk, [])
    assert pushed["type"] == "observed" and pushed["desired"] == []
    row = lab.wait(lambda: (r := lab.anycast())["observed"] == [] and r, "the withdrawal reported")
    assert row["desired"] == [] and row["reason"] == "operator withdrew" and row["agent"] == "connected"

    announced = lab.post(f"/api/v1/pops/{lab.pop.pk}/announce/", {"reason": "maintenance over"})
    lab.wait_routes(BOTH)
    assert lab.wait_applied(announced)["applied_version"] >= announced
    assert next_observed(layer, channel, lab.pop.pk, sorted(BOTH))["desired"] == sorted(BOTH)


def test_fail_static_a_restarted_exabgp_announces_the_kept_state_while_the_control_plane_is_down(lab: Lab) -> None:
    lab.wait_routes(BOTH)
    for pool in Pool.objects.filter(pop=lab.pop, service__slug="api"):   # api-web and pay-pci
        version = lab.post(f"/api/v1/pools/{pool.pk}/maintenance/", {"reason": "disk swap", **FORCE})
    lab.wait_routes({STATIC_PREFIX})
    lab.wait_applied(version)
    kept = json.loads(lab.state_file.read_text())
    assert kept["spec"]["desired"] == [STATIC_PREFIX] and kept["version"] >= version
    assert stat.S_IMODE(lab.state_file.stat().st_mode) == 0o600

    lab.web.stop()                        # the control plane is away...
    lab.restart_exabgp()                  # ...and ExaBGP (so its agent) starts again: an empty RIB
    lab.wait_routes({STATIC_PREFIX})      # announced again from the kept state, not from the API
    for _ in range(10):                   # and it stays: no withdrawal, nothing more
        time.sleep(0.3)
        assert lab.routes() == {STATIC_PREFIX}
    log = lab.exabgp.log()
    assert "restored version" in log and "control plane:" in log

    lab.web.start()                       # back: a change made now reaches the router in seconds
    for pool in Pool.objects.filter(pop=lab.pop, service__slug="api"):
        version = lab.post(f"/api/v1/pools/{pool.pk}/undrain/", {"reason": "back in service"})
    lab.wait_routes(BOTH, timeout=CHANGE_DEADLINE)
    lab.wait_applied(version)


def test_backends_out_of_service_withdraw_their_service_prefix(lab: Lab) -> None:
    lab.wait_routes(BOTH)
    for pool in Pool.objects.filter(pop=lab.pop, service__slug="api"):
        lab.post(f"/api/v1/pools/{pool.pk}/maintenance/", {"reason": "disk swap", **FORCE})
    lab.wait_routes({STATIC_PREFIX})
    row = lab.wait(lambda: (r := lab.anycast())["observed"] == [STATIC_PREFIX] and r, "the partial withdrawal")
    assert row["desired"] == [STATIC_PREFIX] and "no healthy backends for api" in row["reason"]

    lab.post(f"/api/v1/pops/{lab.pop.pk}/maintenance/", {"reason": "everything", **FORCE})
    lab.wait_routes(set())
    assert lab.anycast()["reason"] == "PoP in maintenance"
    lab.post(f"/api/v1/pops/{lab.pop.pk}/undrain/", {"reason": "back in service"})
    lab.wait_routes(BOTH)


def test_the_agent_keeps_the_last_state_while_the_control_plane_refuses_it(lab: Lab) -> None:
    lab.wait_routes(BOTH)
    lab.wait(lambda: lab.anycast()["agent"] == "connected", "the agent connected")
    do_revoke_token(lab.token, actor=Actor.system("test"), reason="test: cut the agent off")  # now 401s
    lab.wait(lambda: lab.anycast()["agent"] == "stale", "the agent to go stale")
    assert lab.routes() == BOTH, "a control plane the agent cannot use must not withdraw the PoP"
    assert lab.exabgp.running()
    lab.wait(lambda: "HTTP 401" in lab.exabgp.log(), "the agent to log the refusal")


def test_an_agent_token_serves_its_own_pop_only(web: Web) -> None:
    seed(Actor.system("test"))
    bom1 = PoP.objects.get(slug="bom1")
    _token, raw = agent_token(bom1)
    web.start()

    own = ContractClient(web.url, raw, "anycast", pop="bom1", timeout=10)
    desired = own.fetch()
    assert not isinstance(desired, int) and desired.layer == "anycast" and desired.pop == "bom1"
    assert desired.spec["desired"] == sorted(BOTH) and "at" not in desired.spec
    assert own.report(observed=[STATIC_PREFIX], session="up") == {"stored": {"observed": [STATIC_PREFIX]}}
    assert own.ack(desired.version, desired.etag)["accepted"] is True

    other = ContractClient(web.url, raw, "anycast", pop="maa1", timeout=10)
    dns = ContractClient(web.url, raw, "dns", timeout=10)
    for attempt in (other.fetch, lambda: other.report(observed=[], session="up"),
                    lambda: other.ack(desired.version, desired.etag), dns.fetch,
                    lambda: dns.report(answers=[]), lambda: dns.ack(desired.version, "x")):
        with pytest.raises(ControlPlaneError) as refused:
            attempt()
        assert refused.value.status == 403, refused.value
    assert not DataplaneState.objects.filter(pop__slug="maa1").exists()

    # The operator-token endpoints of before are gone; the overview stays, for people's tokens.
    operator = token_client(make_user("otto-operator", "operator")).raw_token  # type: ignore[attr-defined]
    assert web.call("GET", "/api/v1/anycast/desired/?pop=bom1", operator)[0] == 404
    assert web.call("POST", "/api/v1/anycast/report/", operator, {"pop": "bom1", "observed": []})[0] == 404
    assert web.call("GET", "/api/v1/anycast/", operator)[0] == 200
    assert web.call("GET", "/api/v1/anycast/", raw)[0] == 403   # an agent token is no viewer


def test_the_demo_gives_each_pop_its_own_token_and_runs_a_router_and_an_exabgp_per_pop(
        tmp_path: Path, web: Web) -> None:
    require_binaries()
    seed(Actor.system("test"))
    get_user_model().objects.create_superuser("admin", password="demo-admin-pass")
    tokens = agent_tokens(tmp_path)
    assert list(tokens)[:2] == ["bom1", "maa1"] and len(tokens) == 7
    for slug, path in tokens.items():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        token = ApiToken.objects.get(digest=hash_token(path.read_text().strip()))
        assert (token.role, token.pop.slug if token.pop else None, token.name) == ("agent", slug, f"agent-anycast-{slug}")
    again = agent_tokens(tmp_path)   # still valid: reused, nothing new issued
    assert {s: p.read_text() for s, p in again.items()} == {s: p.read_text() for s, p in tokens.items()}
    assert ApiToken.objects.filter(role="agent").count() == 7
    tokens["maa1"].write_text("str_not-a-token\n")    # a token no longer valid is replaced
    assert agent_tokens(tmp_path)["maa1"].read_text() != "str_not-a-token\n"
    assert ApiToken.objects.filter(role="agent", revoked_at__isnull=True).count() == 7

    first = dict(list(tokens.items())[:3])
    supervisor = Supervisor(tmp_path, web.start().url, first)
    try:
        supervisor.start()
        protocols = [f"pop_{slug}" for slug in first]
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline and any(supervisor.bird.routes(p) != BOTH for p in protocols):
            time.sleep(0.2)
        assert all(supervisor.bird.routes(p) == BOTH for p in protocols), supervisor.bird.birdc("show", "route")
        assert "pop_lhr1" not in supervisor.bird.birdc("show", "protocols")
        # The route reaches BIRD as ExaBGP announces it; the agent keeps the state once its ACK is in.
        wait_for(lambda: all((tmp_path / "state" / f"anycast-{slug}-default.json").exists() for slug in first),
                 "each agent's kept state", timeout=DEADLINE)
    finally:
        supervisor.stop()
        for speaker in supervisor.speakers.values():
            if speaker.proc is not None:
                stop_process_group(speaker.proc)
        if supervisor.bird.proc is not None:
            stop_process_group(supervisor.bird.proc)


def test_the_example_deploy_config_is_valid_exabgp(tmp_path: Path) -> None:
    require_binaries()
    example = ROOT / "deploy" / "exabgp" / "exabgp.conf"
    text = example.read_text()
    assert "run /usr/bin/env python3 -m steering.agents.exabgp --pop bom1 " in text
    assert "--token-file /etc/steering/agent-bom1.token --state-dir /var/lib/steering-agent;" in text
    done = subprocess.run([str(exabgp_binary()), "--validate", str(example)], env=exabgp_env(), cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)   # parses only: connects nowhere
    assert done.returncode == 0, done.stdout + done.stderr
    assert "loaded new configuration successfully" in done.stdout + done.stderr


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


def test_the_demo_command_stops_its_router_and_speakers_on_sigterm(tmp_path: Path, web: Web) -> None:
    require_binaries()
    svc = f.service(slug="api", anycast_prefix=f.prefix(prefix=API_PREFIX))
    pops = [f.pop(slug=slug) for slug in ("aaa1", "bbb1")]
    for p in pops:
        f.backend(f.pool(p, svc))
    get_user_model().objects.create_superuser("admin", password="demo-admin-pass")
    work = tmp_path / "anycast"
    log: IO[bytes] = (tmp_path / "demo.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "steering.dataplane.exabgp.demo", "--api", web.start().url,
                             "--dir", str(work)],
                            env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        bird = Bird(work / "bird", [])
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline and not all(
                os.path.exists(bird.socket) and bird.routes(f"pop_{p.slug}") == {API_PREFIX} for p in pops):
            time.sleep(0.2)
        assert all(bird.routes(f"pop_{p.slug}") == {API_PREFIX} for p in pops), (tmp_path / "demo.log").read_text()
        assert len(_ours(work)) >= 3   # BIRD and two ExaBGPs (and their agents)
        assert sorted(p.name for p in (work / "tokens").iterdir()) == ["aaa1.token", "bbb1.token"]
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
