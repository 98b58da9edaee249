"""The DNS data plane on loopback: the control plane's web process, our GSLB server (the agent,
`python -m steering.agents gslb`) and a real PowerDNS asking it (remote backend).

The tests of tests/dataplane/gslb start these; tests/conftest.py's `gslb` and `stack` fixtures
(a module's control plane, and a GSLB server with PowerDNS on the test's data) are built from
control_plane_stack and dns_starter here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dns.edns
import dns.exception
import dns.message
import dns.query
import dns.rdatatype
from django.contrib.auth.models import User
from django.db import transaction

from steering.gslb.pdnsconf import pdns_command, pdns_server_binary, write_config
from steering.models import PoP, StateVersion
from steering.readmodels.version import current_version
from steering.redis_keys import GSLB_ANSWERS_PREFIX, GSLB_HEARTBEAT, STATE_VERSION
from steering.redisconn import sync_client
from steering.services.audit import bump_version
from steering.services.context import Actor
from steering.services.effects import publish_after_commit
from steering.services.tokens import do_create_token
from tests import factories as f
from tests.conftest import make_user
from tests.processes import ROOT, WebProcess, stop_process_group
from tests.support import free_port, missing, wait_for

START_SECONDS = 90.0


def pdns_binary() -> str:
    found = pdns_server_binary()
    if found is None:
        message = "pdns_server is not installed: apt-get install pdns-server pdns-backend-remote"
        missing(message)
    return found


def get_json(url: str, token: str | None = None) -> Any:
    """The JSON body of a GET (also of an error status); None when nothing answers."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310  (loopback, our own servers)
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            return json.loads(exc.read())
        except ValueError:
            return None
    except (OSError, ValueError):
        return None


def dns_agent_token(path: Path, *, pop: PoP | None = None) -> str:
    """An agent token (the DNS layer's, or a PoP's) owned by an admin, written 0600 to `path`."""
    owner = User.objects.filter(username="gslb-token-owner").first() or make_user("gslb-token-owner", "admin")
    _token, raw = do_create_token(owner, name=f"agent-{pop.slug if pop else 'dns'}-{time.monotonic_ns()}",
                                  role="agent", pop=pop, actor=Actor.system("test"))
    path.touch(mode=0o600)
    path.write_text(raw + "\n")
    return raw


class ControlPlane(WebProcess):
    """The control plane's web process (tests.processes.WebProcess) with its var dir in `var_dir`;
    drains complete in the model alone. A long-poll in flight holds uvicorn's graceful shutdown
    for up to its wait (the long-poll does not watch for the client going away): a stop does
    not wait for it (SIGKILL after 3 s)."""

    def __init__(self, var_dir: Path) -> None:
        super().__init__(var_dir, stop_timeout=3, STEERING_VAR_DIR=str(var_dir), STEERING_DATAPLANE_CONFIRM="0")

    def start(self, timeout: float = START_SECONDS) -> ControlPlane:
        super().start(timeout)
        return self


class GslbAgent:
    """`python -m steering.agents gslb` with only an API URL, a token file and a state dir: its
    environment carries no database URL, no Redis URL and no Django settings."""

    def __init__(self, api: str, token_file: Path, state_dir: Path, port: int, log_path: Path,
                 instance: str = "test-dns") -> None:
        self.api, self.token_file, self.state_dir, self.port = api, token_file, state_dir, port
        self.log_path, self.instance = log_path, instance
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GslbAgent:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
        env["PYTHONUNBUFFERED"] = "1"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "steering.agents", "gslb", "--api", self.api, "--token-file", str(self.token_file),
                 "--listen", f"127.0.0.1:{self.port}", "--state-dir", str(self.state_dir), "--instance", self.instance,
                 "--log-level", "INFO"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        proc = self.proc
        wait_for(lambda: proc.poll() is not None or get_json(f"{self.url}/healthz") is not None,
                 "the GSLB agent to listen", START_SECONDS, interval=0.05)
        assert proc.poll() is None, self.log_tail()
        return self

    def health(self) -> dict[str, Any]:
        return get_json(f"{self.url}/healthz") or {}

    def serves(self, version: int) -> bool:
        return self.health().get("snapshot_version") == version

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc)
            self.proc = None

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""


class Stack:
    def __init__(self, web: ControlPlane, log_dir: Path) -> None:
        self.web = web
        self.log_dir = log_dir
        self.agent: GslbAgent | None = None
        self.dns_port = 0
        # The highest version this module's web process may have seen. Each test's database starts
        # over at version 0, but the web process's version watcher only moves up: publish() starts
        # each test past it, or the long-poll would not wake for the test's changes.
        self.high_water = 0

    @property
    def gslb_port(self) -> int:
        assert self.agent is not None
        return self.agent.port

    @property
    def health_url(self) -> str:
        return f"{self.agent.url if self.agent else ''}/healthz"

    def publish(self) -> int:
        """Announce the test's data as a new state version, as every service action does."""
        seen = int(sync_client().get(STATE_VERSION) or 0)
        if self.agent is not None:
            seen = max(seen, int(self.agent.health().get("snapshot_version") or 0))
        with transaction.atomic():
            StateVersion.objects.update_or_create(pk=1, defaults={"value": max(current_version(), seen, self.high_water)})
            version = bump_version()
        publish_after_commit(version, [])
        self.high_water = max(self.high_water, version)
        for key in sync_client().scan_iter(match=f"{GSLB_ANSWERS_PREFIX}*"):  # earlier tests' answer counts
            sync_client().delete(key)
        return version

    def start_agent(self, tmp_path: Path, *, token_file: Path, port: int | None = None) -> GslbAgent:
        self.agent = GslbAgent(self.web.url, token_file, tmp_path / "gslb-state", port or free_port(),
                               tmp_path / "gslb.log").start()
        return self.agent

    def forget_agent(self) -> None:
        if self.agent is not None:
            health = self.agent.health()
            self.high_water = max(self.high_water, int(health.get("snapshot_version") or 0),
                                  int((health.get("control_plane") or {}).get("seen_version") or 0))
            self.agent.stop()
            self.agent = None
        # Later tests must not see a GSLB server that has gone (its heartbeat stays fresh 5 s).
        sync_client().delete(GSLB_HEARTBEAT, *sync_client().scan_iter(match=f"{GSLB_ANSWERS_PREFIX}*"))

    def ask(self, name: str, rdtype: str = "A", ecs: tuple[str, int] | None = None) -> dns.message.Message:
        options = [dns.edns.ECSOption(*ecs)] if ecs else None
        query = dns.message.make_query(name, rdtype, use_edns=0 if ecs else None, options=options)
        return dns.query.udp(query, "127.0.0.1", port=self.dns_port, timeout=3)

    def addresses(self, name: str, **kw: Any) -> list[str]:
        return [rr.address for rrset in self.ask(name, **kw).answer if rrset.rdtype == dns.rdatatype.A for rr in rrset]


@contextmanager
def control_plane_stack(django_db_blocker: Any, log_dir: Path) -> Iterator[Stack]:
    """The control plane's web process, for a module (each test starts its own GSLB agent)."""
    pdns_binary()
    with django_db_blocker.unblock():
        web = ControlPlane(log_dir)
        web.start()
    stack = Stack(web, log_dir)
    try:
        yield stack
    finally:
        stack.forget_agent()
        web.stop()


def start_pdns(stack: Stack, config_dir: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """PowerDNS on a fresh loopback port asking the stack's GSLB agent (a new port each time)."""
    stack.dns_port = free_port()
    write_config(config_dir, port=stack.dns_port, backend_url=f"http://127.0.0.1:{stack.gslb_port}/dns")
    with log_path.open("ab") as log:
        return subprocess.Popen(pdns_command(pdns_binary(), config_dir), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def soa_serial(stack: Stack, proc: subprocess.Popen[bytes], log_path: Path) -> int | None:
    assert proc.poll() is None, log_path.read_text(errors="replace")
    try:
        reply = stack.ask("example.net.", "SOA")
    except (OSError, dns.exception.Timeout):
        return None
    return reply.answer[0][0].serial if reply.answer else None


@contextmanager
def dns_starter(gslb: Stack, tmp_path: Path) -> Iterator[Callable[[], Stack]]:
    """A `start()` to call once the test's data exists: a fresh DNS agent token, the data published
    as a new version, a GSLB agent serving that version, then PowerDNS (which reads the zone list
    from the backend when it starts) answering with its SOA serial. Everything stops on exit."""
    started: list[subprocess.Popen[bytes]] = []

    def start() -> Stack:
        token_file = tmp_path / "gslb.token"
        dns_agent_token(token_file)  # first: issuing a token is an audited change, a version of its own
        version = gslb.publish()
        agent = gslb.start_agent(tmp_path, token_file=token_file)
        wait_for(lambda: agent.serves(version), f"the GSLB agent to serve version {version}", 30,
                 interval=0.05)
        log_path = tmp_path / "pdns.log"
        proc = start_pdns(gslb, tmp_path / "pdns", log_path)
        started.append(proc)
        wait_for(lambda: soa_serial(gslb, proc, log_path) == version, "PowerDNS answering for example.net",
                 timeout=30)
        return gslb

    try:
        yield start
    finally:
        for proc in started:
            stop_process_group(proc)
        gslb.forget_agent()


def weighted_fleet(weights: dict[str, int], *, policy: str = "weighted", down: tuple[str, ...] = ()) -> dict[str, Any]:
    """One service in example.net with a region (PoP, pool, two backends, a VIP) per entry."""
    svc = f.service(fqdn="api.example.net", dns_policy=policy, ttl=20)
    fleet: dict[str, Any] = {"service": svc}
    for i, (slug, weight) in enumerate(weights.items(), start=1):
        region = f.region(slug=slug)
        # No panic threshold: a region whose backends all go down must drop out here.
        pool = f.pool(f.pop(region), svc, expected_rps=100, panic_threshold_percent=0)
        for _ in range(2):
            f.backend(pool, health="down" if slug in down else "up", capacity_rps=1000)
        f.vip(svc, region, address=f"192.0.2.{10 * i}", weight=weight)
        fleet[slug] = region
    return fleet
