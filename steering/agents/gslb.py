"""The GSLB server as an agent: PowerDNS's remote backend, fed by the agent contract.

    steering-agent gslb --api https://steering.example.net --token-file /etc/steering/gslb.token \\
        --listen 127.0.0.1:8053 --state-dir /var/lib/steering-agent [--instance dns1]

- uvicorn serves the raw-ASGI RemoteBackendApp (steering.gslb.app) on --listen; every lookup
  reads the in-memory snapshot (steering.gslb.policy), never the network. Every route it serves
  (POST /dns and /dns/<method>, GET|HEAD /healthz and /stats, POST /stats/reset), with its bodies
  and answers, is described in steering/agents/gslb_openapi.json (OpenAPI 3, written by hand;
  tests/dataplane/gslb/test_schemathesis_gslb.py fails when a route is missing from it, and fuzzes the running
  server against it).
- A Follower (steering.agents.contract, layer "dns") long-polls the desired state; applying it is
  `policy.snapshot_from_dict(spec, version)` swapped into the app's holder. A spec that does not
  build is refused (NACK with the error) and the last snapshot keeps answering.
- Fail static: each applied state is kept in <state-dir>/dns.json (0600, atomic); at startup it
  is applied before the control plane is asked, so PowerDNS gets answers even while the control
  plane is down.
- Every second the answers handed out per service and region are reported (`answers`); counts
  that fail to send are kept and sent with the next report. The report is also the DNS layer's
  heartbeat.
- `--reuse-port`: a restart without a gap (deploy/pdns/README.md). --listen is bound with
  SO_REUSEPORT, so a second server can listen on the same address: start the new one (it answers
  from the kept state before it listens), then SIGTERM the old one, which hands over instead of
  stopping at once: it stops listening, answers each kept connection once more with
  `Connection: close` (PowerDNS reconnects, to the new one, at its next lookup), and exits when
  none is left or after HANDOVER_SECONDS. Closing a kept connection that is idle instead would race
  PowerDNS's next request on it (a reset, so a SERVFAIL). Both must have it; without it a second
  server fails to bind.

Needs only its agent token (`manage.py create_token --agent --dns`): no database, no Redis, no
Django. Standard library plus uvicorn.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from steering.agents.contract import (
    DEFAULT_WAIT_SECONDS,
    ApplyError,
    ContractClient,
    ControlPlaneError,
    Desired,
    Follower,
    StateFile,
    read_token,
)
from steering.gslb import policy
from steering.gslb.app import LatencyRecorder, RemoteBackendApp, SnapshotHolder
from steering.gslb.counters import AnswerCounter
from steering.gslb.server import parse_listen, uvicorn_server

logger = logging.getLogger("steering.agents.gslb")

LAYER = "dns"
STATE_FILE_NAME = "dns.json"
REPORT_SECONDS = 1.0
# The report endpoint takes at most this many [service, region, count] rows at once.
MAX_ROWS_PER_REPORT = 10_000
USER_AGENT = "steering-agent-gslb"
# With --reuse-port, how long a SIGTERMed server keeps answering its kept connections (each with
# `Connection: close`) before it closes those that stayed idle.
HANDOVER_SECONDS = 2.0


def build_snapshot(desired: Desired) -> policy.Snapshot:
    """The snapshot of a desired state, or ApplyError saying why the spec does not make one."""
    spec = desired.spec
    try:
        services = spec.get("services", [])
        if not isinstance(services, list) or not isinstance(spec.get("networks", []), list):
            raise TypeError("`services` and `networks` must be lists")
        for service in services:
            if not isinstance(service, dict) or service.get("policy") not in policy.POLICIES:
                raise ValueError(f"service {service.get('fqdn') if isinstance(service, dict) else service!r}: "
                                 f"policy must be one of {', '.join(policy.POLICIES)}")
        return policy.snapshot_from_dict(spec, desired.version)
    except Exception as exc:  # whatever the spec holds, a bad one is refused, never half-applied
        raise ApplyError(f"dns spec of version {desired.version} does not build: {type(exc).__name__}: {exc}") from exc


class GslbFollower(Follower):
    """The contract's Follower, with one fix kept local to this agent (see the report to the
    contract's owner): after refusing version V, a long-poll that times out answers
    304 `X-Steering-Version: V` (nothing moved past V), and Follower would then ACK V with the etag
    of the older spec it still runs, marking V applied and erasing the refusal. A version we
    refused is acknowledged only once a newer version or a matching etag comes."""

    def _acknowledge(self, version: int, etag: str) -> None:
        if self.refused is not None and version <= self.refused[0]:
            return
        super()._acknowledge(version, etag)


class GslbAgent:
    """The snapshot holder's writer (follower thread) and the answer reporter (reporter thread)."""

    def __init__(self, follower_client: ContractClient, report_client: ContractClient, store: StateFile,
                 holder: SnapshotHolder, counter: AnswerCounter, *, wait: int = DEFAULT_WAIT_SECONDS,
                 report_seconds: float = REPORT_SECONDS) -> None:
        self.holder, self.counter = holder, counter
        self.report_client = report_client
        self.report_seconds = report_seconds
        self.stopping = threading.Event()
        self.follower = GslbFollower(follower_client, store, self.apply, wait=wait, sleep=self._sleep)
        self.reported_at: float | None = None
        self.report_error = ""
        self._threads: list[threading.Thread] = []

    def _sleep(self, seconds: float) -> None:
        self.stopping.wait(seconds)

    def apply(self, desired: Desired) -> None:
        snapshot = build_snapshot(desired)
        self.holder.current = snapshot  # one reference assignment: lookups see the old or the new one
        self.holder.built_at = time.time()
        logger.info("serving version %s: %d services, %d zones", desired.version, len(snapshot.services),
                    len(snapshot.zones))

    def restore(self) -> Desired | None:
        return self.follower.restore()

    def report_once(self) -> int:
        """Send what was counted since the last report (an empty report still says we are up).
        Returns the answers delivered; what could not be sent is kept for the next report."""
        counts = self.counter.take()
        rows = [[service_id, region_id, n] for (service_id, region_id), n in counts.items()]
        delivered = 0
        for start in range(0, max(len(rows), 1), MAX_ROWS_PER_REPORT):
            chunk = rows[start:start + MAX_ROWS_PER_REPORT]
            try:
                self.report_client.report(answers=chunk)
            except ControlPlaneError as exc:
                # Kept for the next report, except rows the control plane refused as invalid (400):
                # sending those again would be refused again, forever.
                keep = rows[start + len(chunk):] if exc.status == 400 else rows[start:]
                self.counter.put_back({(s, r): n for s, r, n in keep})
                if self.report_error != str(exc):
                    logger.warning("could not report answers (kept for the next report): %s", exc)
                self.report_error = str(exc)
                return delivered
            delivered += sum(row[2] for row in chunk)
        self.reported_at, self.report_error = time.time(), ""
        return delivered

    def _report_loop(self) -> None:
        while not self.stopping.wait(self.report_seconds):
            try:
                self.report_once()
            except Exception:  # a bug here must not stop the answers' delivery for good
                logger.exception("answer report failed")

    def start(self) -> None:
        for name, target in (("gslb-follower", lambda: self.follower.run(self.stopping.is_set)),
                             ("gslb-reporter", self._report_loop)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self.stopping.set()
        try:
            self.report_once()  # the last second's answers
        except Exception:
            pass
        # The follower may sit in a long-poll; it is a daemon thread and holds nothing to flush.
        for thread in self._threads:
            thread.join(timeout=0.5)

    def status(self) -> dict[str, Any]:
        f = self.follower
        current = f.current
        return {"control_plane": {
            "connected": f.connected, "seen_version": f.seen_version, "acked_version": f.acked if f.acked >= 0 else None,
            "running_version": current.version if current else None,
            "refused": {"version": f.refused[0], "error": f.refused[1]} if f.refused else None,
            "error": f.last_error if not f.connected else "",
            "reported_at": self.reported_at, "report_error": self.report_error,
        }}


def default_instance() -> str:
    name = re.sub(r"[^A-Za-z0-9._:-]", "-", socket.gethostname())[:100]
    return name or "default"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="steering-agent gslb", description=(
        "The GSLB server: PowerDNS's remote backend (HTTP, post_json), following the DNS layer's desired "
        "state through the agent contract. Needs an agent token for the DNS layer "
        "(manage.py create_token --agent --dns); no database and no Redis."))
    p.add_argument("--api", required=True, help="The control plane's URL, e.g. https://steering.example.net")
    p.add_argument("--token-file", required=True, type=Path,
                   help="File holding the DNS agent token (keep it 0600). Also what POST /stats/reset accepts.")
    p.add_argument("--listen", required=True, help="HOST:PORT for PowerDNS's remote-connection-string, e.g. 127.0.0.1:8053")
    p.add_argument("--state-dir", required=True, type=Path,
                   help=f"Where the last applied state is kept ({STATE_FILE_NAME}): answers survive a restart "
                        "while the control plane is down")
    p.add_argument("--instance", default=default_instance(),
                   help="This server's name in the control plane's view (default: the host name)")
    p.add_argument("--wait", type=int, default=DEFAULT_WAIT_SECONDS, help="Long-poll seconds (default %(default)s)")
    p.add_argument("--reuse-port", action="store_true",
                   help="Bind --listen with SO_REUSEPORT: a new server may start on the same address before the "
                        "old one stops, so PowerDNS always finds one listening (restart without a gap)")
    p.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    return p


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port with SO_REUSEPORT (and SO_REUSEADDR), for uvicorn to listen
    on: other processes that set SO_REUSEPORT too may bind the same address, and the kernel spreads
    new connections over those listening. Not listening yet: uvicorn listens once it serves, and a
    process that is not listening gets no connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class ClosingApp:
    """The ASGI app, whose responses say `Connection: close` once `closing` is set: uvicorn then
    closes each connection after a complete response, never under a request in flight."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.closing = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def send_closing(message: dict[str, Any]) -> None:
            if self.closing and message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_closing)


def handover_server(app: Any, host: str, port: int, *, seconds: float = HANDOVER_SECONDS) -> Any:
    """uvicorn_server's server, for --reuse-port: the first SIGTERM or SIGINT is a hand-over to the
    other server on the address. It stops listening at once, then each kept connection is closed
    after its next answer (ClosingApp), and the server exits when none is left or after `seconds`
    (closing the idle ones, as uvicorn does). A second signal exits at once."""
    import uvicorn

    closing = ClosingApp(app)

    class HandoverServer(uvicorn.Server):
        handover_until: float | None = None
        handover_asked = False

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.handover_asked:
                super().handle_exit(sig, frame)
                return
            self.handover_asked = True  # then main() returns as after any stop: the last report is sent

        async def on_tick(self, counter: int) -> bool:
            if self.handover_asked and not self.should_exit:
                now = time.monotonic()
                if self.handover_until is None:
                    for listener in self.servers:
                        listener.close()  # new connections go to the other server from now on
                    closing.closing = True
                    self.handover_until = now + seconds
                    logger.info("handing over: not listening; closing %d connections after their next answer",
                                len(self.server_state.connections))
                if not self.server_state.connections or now >= self.handover_until:
                    self.should_exit = True
            return bool(await super().on_tick(counter))

    return HandoverServer(uvicorn_server(closing, host, port).config)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        host, port = parse_listen(args.listen)
        token = read_token(args.token_file)
        follower_client = ContractClient(args.api, token, LAYER, instance=args.instance, user_agent=USER_AGENT)
        report_client = ContractClient(args.api, token, LAYER, instance=args.instance, user_agent=USER_AGENT)
        args.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Bound before the kept state is restored, but listening (and so given connections) only
        # once uvicorn serves, after it: a second server started this way never answers empty.
        sockets = [listening_socket(host, port)] if args.reuse_port else None
    except (ValueError, OSError) as exc:
        print(f"steering-agent gslb: {exc}", file=sys.stderr)
        return 2
    holder, counter = SnapshotHolder(), AnswerCounter()
    agent = GslbAgent(follower_client, report_client, StateFile(args.state_dir / STATE_FILE_NAME), holder, counter,
                      wait=args.wait)
    kept = agent.restore()
    logger.info("GSLB server on http://%s:%s/dns (instance %s, control plane %s); %s", host, port, args.instance,
                args.api, f"answering from the kept version {kept.version}" if kept else "no kept state yet")
    app = RemoteBackendApp(holder, counter, LatencyRecorder(), admin_token=token, status=agent.status)
    server = handover_server(app, host, port) if args.reuse_port else uvicorn_server(app, host, port)
    agent.start()
    try:
        server.run(sockets=sockets)
    finally:
        agent.stop()
    return 0 if server.started else 1


if __name__ == "__main__":
    raise SystemExit(main())
