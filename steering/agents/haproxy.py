"""The HAProxy agent: keeps one PoP's HAProxy on the desired state and reports what it shows.

It runs beside the PoP's HAProxy with an agent token bound to that PoP, and talks to nothing
but the control plane's HTTP API and HAProxy's admin socket:

- a Follower (steering.agents.contract) long-polls the PoP's desired state (layer `local`),
  pushes each new version through the Runtime API (no reload: only the commands that differ),
  ACKs it, or NACKs it with HAProxy's own error (a refused command, a config `haproxy -c`
  rejects); the last applied state is kept on disk and applied again after a restart;
- every `reconcile_seconds`, and whenever HAProxy's worker pid changes (a restart or reload),
  the pass is a reconcile: drift (a hand-typed runtime command, a restart from an old config)
  is repaired and reported, and the control plane audits it as system:reconciler;
- every `stats_seconds` it reports each server's figures (sessions, rates, 5xx, errors) and
  HAProxy's status; and on every pass it reads which servers HAProxy's live-traffic watch
  (`observe`) has just taken out, reporting at once when one more goes DOWN, so the control
  plane's ejection (map, audit) follows the kill within a pass rather than a stats period;
- HAProxy's observe judges each server alone, so a network flap can take a whole pool out: on
  every pass the servers it has DOWN beyond the pool's bound (the share and minimum healthy
  capacity outlier ejection obeys, steering.dataplane.haproxy.observe) are put back
  (`set server ... health up`) and reported (`observe_held`), and the control plane tells the
  operator (the pool's outlier panic);
- what only a config changes (new pools, a pool's passive settings: retries, redispatch, retry-on,
  observe, error-limit): a managed HAProxy (`--spawn`: the demo, a single host) is re-rendered,
  checked with `haproxy -c`, reloaded, and the reload checked by the settings the new worker
  reports; for an HAProxy started by the host's init system the version is refused with the
  pools named (missing, or running other passive settings than desired), the servers' states
  and weights still applied. Once that HAProxy restarts (a new worker pid), the refused version
  is tried again at once.

Frontends bind the addresses the desired state names for this PoP (each service's VIP in its
region); `--bind SERVICE=ADDR:PORT` overrides that (the demo maps them to loopback).
Standard library only, plus the Django-free HAProxy modules of steering.dataplane.haproxy.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from steering.agents.contract import (
    ApplyError,
    ContractClient,
    Desired,
    Follower,
    StateFile,
    read_token,
)
from steering.dataplane.haproxy.apply import Key, Result, Want, reconcile, sync
from steering.dataplane.haproxy.model import NOT_RENDERED, PopSpec, pop_spec_from_dict
from steering.dataplane.haproxy.observe import beyond_the_bound, settings_differ
from steering.dataplane.haproxy.process import ManagedHAProxy, haproxy_binary
from steering.dataplane.haproxy.render import bind_list
from steering.dataplane.haproxy.runtime import Runtime, RuntimeAPIError, ServerStat
from steering.dataplane.haproxy.stats import StatsCollector
from steering.privatefiles import write_private

logger = logging.getLogger("steering.agents.haproxy")

Bind = tuple[str, int]


class FileAppliedStore:
    """What this agent last pushed to each server, on local disk (steering.dataplane.haproxy.apply
    tells a pending change from drift with it): it survives the agent's restart."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()

    def lock(self, pop: str) -> AbstractContextManager[Any]:
        return self._lock

    def get(self, pop: str) -> dict[Key, Want] | None:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (ValueError, OSError):
            return None
        return {k: Want(v["state"], int(v["weight"])) for k, v in raw.items()}

    def put(self, pop: str, applied: Mapping[Key, Want]) -> None:
        write_private(self.path, json.dumps({k: v.as_dict() for k, v in applied.items()}))


def config_signature(spec: PopSpec) -> str:
    """What of a PoP's state only a config reload changes: everything but the servers (which the
    Runtime API adds, removes and sets) and the bound the agent itself applies."""
    pools = [{k: v for k, v in vars(p).items() if k not in NOT_RENDERED} for p in spec.pools]
    return json.dumps({"services": [vars(s) for s in spec.services], "pools": pools}, sort_keys=True, default=str)


def parse_bind(text: str) -> tuple[str, Bind]:
    """`api=127.2.1.1:8443` -> ("api", ("127.2.1.1", 8443))."""
    service, sep, address = text.partition("=")
    host, colon, port = address.rpartition(":")
    if not sep or not colon or not port.isdigit() or not service or not 0 < int(port) < 65536:
        raise ValueError(f"--bind wants SERVICE=ADDRESS:PORT, got {text!r}")
    return service, (host.strip("[]"), int(port))


def binds_of(desired: Desired, overrides: Mapping[str, Bind]) -> dict[str, list[Bind]]:
    """Per service, the addresses its frontend binds: the override, else every one the desired
    state names for it (the service's VIPs in the PoP's region: IPv4 and IPv6, say)."""
    binds: dict[str, list[Bind]] = {}
    for service, items in (desired.spec.get("binds") or {}).items():
        if items:
            binds[service] = [(str(item["address"]), int(item["port"])) for item in items]
    binds.update({service: [bind] for service, bind in overrides.items()})
    return binds


class HAProxyAgent:
    def __init__(self, client: ContractClient, *, pop: str, socket: str | None, state_dir: Path,
                 spawn: bool = False, binds: Mapping[str, Bind] | None = None, reconcile_seconds: float = 15.0,
                 stats_seconds: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.client, self.pop = client, pop
        self.state_dir = state_dir
        self.binary = haproxy_binary()
        if spawn and self.binary is None:
            raise RuntimeError("--spawn needs the haproxy binary (Debian package haproxy)")
        self.managed = ManagedHAProxy(pop, state_dir / "haproxy", {k: [v] for k, v in (binds or {}).items()}) \
            if spawn else None
        self.socket = self.managed.socket_path if self.managed else (socket or "")
        if not self.socket:
            raise ValueError("name HAProxy's admin socket (--socket) or let the agent run HAProxy (--spawn)")
        self.overrides = dict(binds or {})
        self.applied = FileAppliedStore(state_dir / f"haproxy-{pop}-applied.json")
        self.follower = Follower(client, StateFile(state_dir / f"haproxy-{pop}-desired.json"), self.apply)
        self.collector = StatsCollector(Runtime(self.socket))
        self.reconcile_seconds, self.stats_seconds = reconcile_seconds, stats_seconds
        self.clock = clock
        self._lock = threading.RLock()     # one pass at a time: the follower's apply or the periodic pass
        self.spec: PopSpec | None = None
        self.pid: int | None = None
        self.connected = False
        self.error = ""
        self.last_reconcile = float("-inf")
        self.last_stats = float("-inf")
        self.observed_down: set[int] = set()   # servers HAProxy's observe had taken out at the last pass
        self.down_since: dict[int, float] = {}  # when this agent first saw each of them DOWN (its clock)
        self.rendered: str | None = None        # config_signature of the config our managed HAProxy loaded
        self.retry_refused = threading.Event()  # HAProxy restarted: offer a refused version again

    # --- applying a version --------------------------------------------------------------------

    def apply(self, desired: Desired) -> None:
        """Bring HAProxy to `desired`; ApplyError (a NACK) when HAProxy refuses it; another error
        (HAProxy not answering) leaves the version to be fetched and applied again."""
        if desired.pop not in (None, self.pop):
            raise ApplyError(f"this agent serves {self.pop}, not {desired.pop}")
        try:
            spec = pop_spec_from_dict(desired.spec)
        except (KeyError, TypeError, ValueError) as exc:
            raise ApplyError(f"malformed desired state: {exc}") from exc
        with self._lock:
            if self.managed is not None:
                self._ensure_managed(spec, binds_of(desired, self.overrides))
                if config_signature(spec) != self.rendered:
                    # A pool's own settings (retries, observe, rules...) live in the config, not
                    # in the Runtime API: render, check and reload for them.
                    self._reload(spec)
            result = self._push(spec)
            if result.plan.missing_proxies:
                if self.managed is None:
                    raise ApplyError(f"HAProxy has no backend for {', '.join(result.plan.missing_proxies)}: "
                                     "render its config (haproxy -c) and reload it")
                self._reload(spec)
                raise RuntimeAPIError("reloading HAProxy for new pools")  # apply again once it answers
            if result.errors:
                raise ApplyError("HAProxy refused: " + "; ".join(result.errors[:5]))
            # Our own config says what it runs; a host's hand-written one may say nothing (its choice).
            stale = settings_differ(spec, Runtime(self.socket), unknown_differs=self.managed is not None)
            if stale and self.managed is not None:
                self.rendered = None  # the next version reloads again
                raise ApplyError(f"HAProxy did not take the reloaded config (see {self.managed.log_path}): "
                                 + "; ".join(stale[:5]))
            # The servers are applied whatever follows: the reconcile keeps them, not the old ones.
            self.spec = spec
            if stale:
                raise ApplyError("HAProxy cannot change these at runtime, it runs the settings it was started with: "
                                 + "; ".join(stale[:5]) + ". Render its config with them (haproxy -c) and reload it; "
                                 "the servers' states and weights are applied")

    def _push(self, spec: PopSpec, *, audit: bool = False) -> Result:
        runtime = Runtime(self.socket)
        if not audit:
            return sync(spec, runtime, self.applied)
        return reconcile(spec, runtime, self.applied, audit=self._report_repairs)

    def _ensure_managed(self, spec: PopSpec, binds: dict[str, list[Bind]]) -> None:
        assert self.managed is not None and self.binary is not None
        if self.managed.binds != binds:
            self.managed.binds = binds
            if self.managed.running():
                self._reload(spec)
        if not self.managed.running():
            try:
                self.managed.start(spec, self.binary)
            except Exception as exc:  # haproxy -c said no, or it would not start
                raise ApplyError(f"cannot start haproxy: {exc}") from exc
            self.rendered = config_signature(spec)
            self._wait_for(spec)

    def _reload(self, spec: PopSpec) -> None:
        assert self.managed is not None and self.binary is not None
        try:
            self.managed.reload(spec, self.binary)
        except Exception as exc:
            raise ApplyError(f"haproxy -c refused the rendered config: {exc}") from exc
        self.rendered = config_signature(spec)
        self._wait_for(spec)

    def _wait_for(self, spec: PopSpec, seconds: float = 10.0) -> None:
        """Until the worker of the config just written answers: the old worker keeps answering on
        the same socket for a while after a reload, so it is known by the settings it reports.
        Past `seconds` the caller's own check says what HAProxy runs."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if not settings_differ(spec, Runtime(self.socket)):
                    return
            except RuntimeAPIError:
                pass  # not answering yet
            time.sleep(0.05)

    def _report_repairs(self, pop: str, repaired: list[Any]) -> None:
        body = [{"proxy": d.proxy, "server": d.server, "observed": d.observed, "desired": d.desired,
                 "backend_id": d.backend_id} for d in repaired]
        logger.warning("haproxy %s: repaired drift on %s", pop, ", ".join(d.key for d in repaired))
        try:
            self.client.report(repaired=body)
        except Exception as exc:  # the repair happened; the audit of it is late, not lost to a crash
            logger.warning("could not report the repair: %s", exc)

    # --- the periodic pass ---------------------------------------------------------------------

    def tick(self) -> None:
        now = self.clock()
        with self._lock:
            if self.managed is not None and self.spec is not None and not self.managed.running():
                # Our HAProxy died: start it again from the state we run (rendered, checked).
                try:
                    self._ensure_managed(self.spec, self.managed.binds)
                except ApplyError as exc:
                    self.connected, self.error = False, str(exc)
                    return
            try:
                pid = Runtime(self.socket).worker_pid()
            except RuntimeAPIError as exc:
                if self.connected:
                    logger.warning("haproxy %s: lost the runtime API: %s", self.pop, exc)
                self.connected, self.error = False, str(exc)
            else:
                restarted = self.pid is not None and pid != self.pid
                self.pid, self.connected, self.error = pid, True, ""
                if restarted and self.managed is None:
                    # Reloaded by the host (perhaps with the config a refused version asked for).
                    self.retry_refused.set()
                if self.spec is not None and (restarted or now - self.last_reconcile >= self.reconcile_seconds):
                    self.last_reconcile = now
                    try:
                        self._push(self.spec, audit=True)
                    except RuntimeAPIError as exc:
                        self.connected, self.error = False, str(exc)
        with self._lock:
            rows, held = self._watch_down()
        if rows is not None or held or now - self.last_stats >= self.stats_seconds:
            self.last_stats = now
            self._report_stats(rows, held)

    def _watch_down(self) -> tuple[list[ServerStat] | None, set[int]]:
        """Puts back what HAProxy's observe has DOWN beyond each pool's bound. Returns the `show stat`
        rows when a server has newly gone DOWN since the last pass (else None: nothing to report at
        once), and the servers put back (reported at once)."""
        if not (self.connected and self.spec is not None):
            return None, set()
        try:
            down, rows = self.collector.observed_down(self.spec)
        except RuntimeAPIError as exc:
            self.connected, self.error = False, str(exc)
            return None, set()
        now = self.clock()
        self.down_since = {bid: self.down_since.get(bid, now) for bid in down}
        held: set[int] = set()
        runtime = Runtime(self.socket)
        for put in beyond_the_bound(self.spec, rows, self.down_since):
            try:
                runtime.set_health(put.proxy, put.server, "up")
            except RuntimeAPIError as exc:
                logger.warning("haproxy %s: could not put %s/%s back: %s", self.pop, put.proxy, put.server, exc)
                continue
            logger.warning("haproxy %s: put %s/%s back: %s", self.pop, put.proxy, put.server, put.why)
            held.add(put.backend_id)
            self.down_since.pop(put.backend_id, None)
        down -= held
        flipped = down - self.observed_down
        self.observed_down = down
        if held:
            return None, held  # the report reads HAProxy again, after the servers came back
        return (rows if flipped else None), held

    def _report_stats(self, rows: list[ServerStat] | None = None, held: set[int] | None = None) -> None:
        servers: dict[str, dict[str, float]] = {}
        if self.connected and self.spec is not None:
            try:
                figures = self.collector.collect(self.spec, rows=rows)
                servers = {str(bid): {k: v for k, v in asdict(f).items() if isinstance(v, (int, float))}
                           | {"observe_held": int(bid in (held or ()))} for bid, f in figures.items()}
            except RuntimeAPIError as exc:
                self.connected, self.error = False, str(exc)
        status = {"connected": self.connected, "error": self.error, "pid": self.pid, "servers": len(servers),
                  "managed": self.managed is not None}
        if self.managed is not None:
            status["frontends"] = {k: ", ".join(f"{a}:{p}" for a, p in bind_list(v))
                                   for k, v in self.managed.binds.items()}
        try:
            self.client.report(servers=servers, haproxy=status)
        except Exception as exc:
            logger.debug("stats not reported: %s", exc)

    # --- lifecycle -----------------------------------------------------------------------------

    def follow(self) -> None:
        """One step of the desired-state follower; a version refused before HAProxy restarted is
        offered again first. Between two steps no fetch is in flight, so forgetting the refusal
        here cannot mistake an answer about the refused state for one about ours."""
        if self.retry_refused.is_set():
            self.retry_refused.clear()
            self.follower.refused = None
        self.follower.step()

    def _follow(self, should_stop: Callable[[], bool]) -> None:
        while not should_stop():
            try:
                self.follow()
            except Exception:  # an agent bug must not stop the data plane's updates for good
                logger.exception("agent step failed")
                time.sleep(1.0)

    def run(self, should_stop: Callable[[], bool], period: float = 0.2) -> None:
        self.follower.restore()  # fail static: HAProxy runs what we last applied, before anyone answers
        follower = threading.Thread(target=self._follow, args=(should_stop,), name="desired-state", daemon=True)
        follower.start()
        while not should_stop():
            started = self.clock()
            try:
                self.tick()
            except Exception:  # one bad pass must not end the agent
                logger.exception("haproxy agent pass failed")
            time.sleep(max(0.0, period - (self.clock() - started)))

    def stop(self) -> None:
        if self.managed is not None:
            self.managed.stop()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="steering-agent haproxy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pop", required=True, help="The PoP this agent serves (its token is bound to it)")
    parser.add_argument("--api", required=True, help="The control plane's URL, e.g. https://steering.example.net")
    parser.add_argument("--token-file", required=True, help="File holding the agent token (create_token --agent --pop)")
    parser.add_argument("--state-dir", required=True, type=Path, help="Where the last applied state is kept")
    parser.add_argument("--socket", help="HAProxy's admin socket (stats socket ... level admin)")
    parser.add_argument("--spawn", action="store_true", help="Run HAProxy ourselves: render, check, start, reload")
    parser.add_argument("--bind", action="append", default=[], metavar="SERVICE=ADDR:PORT",
                        help="Bind this service's frontend here instead of its VIP (repeatable)")
    parser.add_argument("--instance", default=os.uname().nodename, help="This agent's name among the PoP's (host name)")
    parser.add_argument("--reconcile-seconds", type=float, default=15.0)
    parser.add_argument("--stats-seconds", type=float, default=1.0)
    parser.add_argument("--wait", type=int, default=25, help="Seconds each long-poll waits for a change")
    return parser


def main(argv: list[str] | None = None) -> int:
    from steering.lifecycle import StopRequest

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        binds = dict(parse_bind(b) for b in args.bind)
        client = ContractClient(args.api, read_token(args.token_file), "local", pop=args.pop,
                                instance=args.instance, user_agent="steering-haproxy-agent")
        agent = HAProxyAgent(client, pop=args.pop, socket=args.socket, state_dir=args.state_dir, spawn=args.spawn,
                             binds=binds, reconcile_seconds=args.reconcile_seconds, stats_seconds=args.stats_seconds)
        agent.follower.wait = args.wait
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"steering-agent haproxy: {exc}", file=sys.stderr)
        return 2
    stop = StopRequest()
    logger.info("haproxy agent for %s: following %s", args.pop, args.api)
    try:
        agent.run(stop)
    finally:
        agent.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
