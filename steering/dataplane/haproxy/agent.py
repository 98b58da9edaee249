"""The HAProxy agent: keeps each PoP's HAProxy on the desired state and reads its figures back.

One long-running process (`manage.py haproxy_agent`) beside the PoP's HAProxy (or, in the demo,
beside all of them). It follows the state version in Redis, which moves after every committed
change: when it moves, every PoP is synced through the Runtime API (a pass is one `show servers
state` + `show stat` and only the commands that differ), so a drain reaches HAProxy within a few
hundred milliseconds without a task per change that a restart could lose. Besides:
- every `sync_seconds` a pass runs anyway (slow-start ramps change the effective weight with time);
- every `reconcile_seconds`, and whenever HAProxy's worker pid changes (a restart or a reload),
  the pass is a reconcile: drift is repaired and audited as system:reconciler;
- every `stats_seconds` the figures go to Redis (steering.dataplane.stats) and the 5xx rate is
  checked: a backend answering mostly 5xx is flagged (a passive health signal, pushed live);
- pools HAProxy does not have yet need a config: a managed HAProxy (`--spawn`) is re-rendered and
  reloaded; an external one is reported.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db import close_old_connections

from steering.dataplane.haproxy import jobs
from steering.dataplane.haproxy.apply import AppliedStore, RedisAppliedStore
from steering.dataplane.haproxy.desired import pop_spec
from steering.dataplane.haproxy.model import PopSpec
from steering.dataplane.haproxy.process import ManagedHAProxy, frontend_address, frontend_port, haproxy_binary
from steering.dataplane.haproxy.runtime import Runtime, RuntimeAPIError
from steering.dataplane.haproxy.stats import Figures, StatsCollector
from steering.dataplane.passive import FiveXXRule, set_flags
from steering.models import PoP, Service

logger = logging.getLogger(__name__)

AGENT_KEY = "steering:haproxy:agent:{pop}"   # JSON heartbeat: what the agent last saw of this PoP
AGENT_KEY_TTL = 30


@dataclass
class PopLink:
    slug: str
    socket: str
    collector: StatsCollector
    managed: ManagedHAProxy | None = None
    pid: int | None = None
    connected: bool = False
    error: str = ""
    last_reconcile: float = float("-inf")
    missing_warned: set[str] = field(default_factory=set)
    servers: int = 0
    spec: PopSpec | None = None          # for stats: which server is which backend
    spec_version: bytes | None = None


def demo_binds(pop: PoP, services: list[Service]) -> dict[str, tuple[str, int]]:
    """Each service of each PoP on its own loopback address: 127.2.<pop id>.<service id>."""
    return {s.slug: (frontend_address(pop.pk, s.pk), frontend_port(s.port)) for s in services}


class HAProxyAgent:
    def __init__(self, pops: list[str] | None = None, *, spawn: bool = False, directory: Path | None = None,
                 store: AppliedStore | None = None, redis: Any = None, sync_seconds: float = 2.0,
                 stats_seconds: float = 1.0, reconcile_seconds: float = 15.0, rule: FiveXXRule | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 binds: Callable[[PoP, list[Service]], dict[str, tuple[str, int]]] | None = None) -> None:
        from django.conf import settings

        from steering.services.effects import _redis

        self.only = pops
        self.spawn = spawn
        self.directory = directory or Path(settings.VAR_DIR) / "haproxy"
        self.redis = redis or _redis()
        self.store = store or RedisAppliedStore(self.redis)
        self.sync_seconds, self.stats_seconds, self.reconcile_seconds = sync_seconds, stats_seconds, reconcile_seconds
        self.rule = rule or FiveXXRule()
        self.clock = clock
        self.binds = binds or demo_binds
        self.binary = haproxy_binary()
        if spawn and self.binary is None:
            raise RuntimeError("--spawn needs the haproxy binary (Debian package haproxy)")
        self.links: dict[str, PopLink] = {}
        self.version: bytes | None = None
        self.last_sync = float("-inf")
        self.last_stats = float("-inf")

    # --- topology ------------------------------------------------------------------------

    def discover(self) -> None:
        """Follow the PoPs in the database: new ones get a link (and a HAProxy when managed)."""
        qs = PoP.objects.order_by("pk")
        if self.only:
            qs = qs.filter(slug__in=self.only)
        services = list(Service.objects.order_by("slug"))
        for pop in qs:
            if pop.slug in self.links:
                continue
            managed = None
            if self.spawn:
                managed = ManagedHAProxy(pop.slug, self.directory, self.binds(pop, services))
                socket = managed.socket_path
            else:
                socket = jobs.socket_for_pop(pop.slug)
            self.links[pop.slug] = PopLink(pop.slug, socket, StatsCollector(Runtime(socket)), managed)

    # --- one pass ------------------------------------------------------------------------

    def tick(self) -> None:
        """Called about every 200 ms; does what is due."""
        now = self.clock()
        version = self._version()
        moved = version != self.version
        if moved or now - self.last_sync >= self.sync_seconds:
            close_old_connections()
            if moved or not self.links:  # a new PoP is a change, so it moves the version
                self.discover()
            self.version = version
            self.last_sync = now
            for link in self.links.values():
                self._sync(link, now)
        if now - self.last_stats >= self.stats_seconds:
            self.last_stats = now
            for link in self.links.values():
                if link.connected:
                    self._stats(link)
                self._heartbeat(link)

    def _version(self) -> bytes | None:
        from steering.services.effects import VERSION_KEY

        try:
            value = self.redis.get(VERSION_KEY)
            return value if isinstance(value, bytes) else None
        except Exception:
            return self.version  # Redis away: keep the periodic passes only

    def _sync(self, link: PopLink, now: float) -> None:
        if link.managed is not None and not link.managed.running():
            try:
                link.managed.start(pop_spec(PoP.objects.get(slug=link.slug)), self._binary())
            except Exception as exc:
                link.connected, link.error = False, f"cannot start haproxy: {exc}"
                logger.warning("haproxy %s: %s", link.slug, link.error)
            return  # it needs a moment; the next pass finds its socket
        runtime = Runtime(link.socket)
        try:
            pid = runtime.worker_pid()
        except RuntimeAPIError as exc:
            if link.connected:
                logger.warning("haproxy %s: lost the runtime API: %s", link.slug, exc)
            link.connected, link.error = False, str(exc)
            return
        restarted = link.pid is not None and pid != link.pid
        due = restarted or not link.connected or now - link.last_reconcile >= self.reconcile_seconds
        link.pid, link.connected, link.error = pid, True, ""
        try:
            pop = PoP.objects.get(slug=link.slug)
            if due:
                result = jobs.reconcile_pop(pop, socket_path=link.socket, store=self.store)
                link.last_reconcile = now
                if result.repaired:
                    logger.warning("haproxy %s: repaired drift on %s", link.slug,
                                   ", ".join(d.key for d in result.repaired))
            else:
                result = jobs.sync_pop(pop, socket_path=link.socket, store=self.store)
        except RuntimeAPIError as exc:
            link.connected, link.error = False, str(exc)
            return
        missing = set(result.plan.missing_proxies)
        if missing and link.managed is not None:
            link.managed.reload(pop_spec(pop), self._binary())
        elif missing - link.missing_warned:
            logger.warning("haproxy %s: lacks %s; render its config (haproxy -c) and reload it", link.slug,
                           ", ".join(sorted(missing)))
        link.missing_warned = missing

    def _stats(self, link: PopLink) -> None:
        try:
            if link.spec is None or link.spec_version != self.version:
                # Read once per state version, not every second: names -> backend ids rarely change.
                link.spec, link.spec_version = pop_spec(PoP.objects.get(slug=link.slug)), self.version
            figures: dict[int, Figures] = link.collector.collect(link.spec)
        except RuntimeAPIError as exc:
            link.connected, link.error = False, str(exc)
            return
        except Exception:
            logger.exception("haproxy %s: stats", link.slug)
            return
        link.servers = len(figures)
        set_flags(figures, self.rule, redis=self.redis)

    def _heartbeat(self, link: PopLink) -> None:
        body = {"pop": link.slug, "at": time.time(), "connected": link.connected, "error": link.error,
                "pid": link.pid, "servers": link.servers, "managed": link.managed is not None}
        if link.managed is not None:
            body["frontends"] = {k: f"{a}:{p}" for k, (a, p) in link.managed.binds.items()}
        try:
            self.redis.set(AGENT_KEY.format(pop=link.slug), json.dumps(body), ex=AGENT_KEY_TTL)
        except Exception:
            pass  # Redis away: the API will call the layer not connected, which is the truth

    def _binary(self) -> str:
        assert self.binary is not None
        return self.binary

    # --- lifecycle -----------------------------------------------------------------------

    def run(self, should_stop: Callable[[], bool], period: float = 0.2) -> None:
        while not should_stop():
            started = self.clock()
            try:
                self.tick()
            except Exception:  # one bad pass (DB restarting, say) must not end the agent
                logger.exception("haproxy agent pass failed")
            time.sleep(max(0.0, period - (self.clock() - started)))

    def stop(self) -> None:
        for link in self.links.values():
            if link.managed is not None:
                link.managed.stop()


def read_agent_reports(redis: Any) -> dict[str, dict[str, Any]]:
    """What each PoP's agent last said, by PoP slug (absent when it never reported or expired)."""
    out: dict[str, dict[str, Any]] = {}
    try:
        keys = list(redis.scan_iter(match=AGENT_KEY.format(pop="*"), count=500))
        values = redis.mget(keys) if keys else []
    except Exception:
        return out
    for raw in values:
        if raw:
            try:
                body = json.loads(raw)
                out[body["pop"]] = body
            except (ValueError, KeyError):
                continue
    return out
