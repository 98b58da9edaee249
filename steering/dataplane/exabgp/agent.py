"""The anycast agent: an ExaBGP `process` that keeps its PoP's announcements on the desired state.

ExaBGP starts it (`process steering { run python -m steering.dataplane.exabgp.agent --pop bom1
--api http://127.0.0.1:8000 --token-file /etc/steering/agent.token; encoder json; }`) and talks
to it over stdin/stdout with the ExaBGP 4 text API. About every second the agent:

1. asks the control plane for the PoP's desired prefixes (GET /api/v1/anycast/desired/?pop=);
2. asks ExaBGP what it announces (`show adj-rib out`) and writes `announce route <prefix>
   next-hop self` / `withdraw route <prefix> next-hop self` for the difference; it only ever
   withdraws prefixes the control plane manages, never routes configured in ExaBGP by hand;
3. reads the BGP session state (`show neighbor summary`) and reports what is really announced
   (POST /api/v1/anycast/report/: nothing while no session is established).

When the control plane is away, the last desired state stays in force and the agent retries: a
control-plane outage must not withdraw the fleet. Before its first answer it announces nothing.
It talks to the configured API URL (no proxies, no redirects) and to its stdin/stdout, nothing
else, and uses only the standard library so it runs on PoP hosts beside ExaBGP.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import queue
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any, TextIO

__version__ = "1"
logger = logging.getLogger("steering.exabgp.agent")

ANSWER_TIMEOUT_SECONDS = 10.0


class ExaBGPGone(Exception):
    """ExaBGP closed our stdin or said it is shutting down: the agent ends with it."""


class CommandFailed(Exception):
    """ExaBGP answered `error`, or did not answer in time."""


class ControlPlaneError(Exception):
    """The control plane could not be reached or refused the request."""


# --- ExaBGP's side -------------------------------------------------------------------------------

class ExaBGP:
    """Commands to ExaBGP on `writer` (our stdout); its answers, line by line, on `reader` (our stdin).

    With `exabgp.api.ack` (the default) every command is answered with its output lines then `done`
    or `error`. JSON lines are ExaBGP's own messages (neighbor state, shutdown), not answers.
    """

    def __init__(self, reader: TextIO, writer: TextIO, *, timeout: float = ANSWER_TIMEOUT_SECONDS) -> None:
        self.writer = writer
        self.timeout = timeout
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._gone = False
        threading.Thread(target=self._read, args=(reader,), name="exabgp-reader", daemon=True).start()

    def _read(self, reader: TextIO) -> None:
        try:
            for line in reader:
                self._lines.put(line.rstrip("\r\n"))
        except (OSError, ValueError):
            pass
        self._lines.put(None)

    def _next(self, deadline: float) -> str | None:
        try:
            return self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty as exc:
            raise CommandFailed("ExaBGP did not answer in time") from exc

    def _discard_late_answers(self) -> None:
        # A command that timed out may be answered later; its lines must not pass for the next one's.
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                return
            if line is None:
                self._gone = True
                return

    def command(self, line: str) -> list[str]:
        """Send one command; its output lines (without the final `done`)."""
        self._discard_late_answers()
        if self._gone:
            raise ExaBGPGone("ExaBGP closed the API pipe")
        try:
            self.writer.write(line + "\n")
            self.writer.flush()
        except (BrokenPipeError, OSError, ValueError) as exc:
            raise ExaBGPGone(f"cannot write to ExaBGP: {exc}") from exc
        deadline = time.monotonic() + self.timeout
        output: list[str] = []
        while True:
            answer = self._next(deadline)
            if answer is None:
                self._gone = True
                raise ExaBGPGone("ExaBGP closed the API pipe")
            if answer.startswith("{"):
                self._message(answer)
                continue
            if answer == "done":
                return output
            if answer == "error":
                raise CommandFailed(f"ExaBGP refused: {line}")
            if answer == "shutdown":
                raise ExaBGPGone("ExaBGP is shutting down")
            output.append(answer)

    def _message(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            return
        if isinstance(message, dict) and message.get("notification") == "shutdown":
            raise ExaBGPGone("ExaBGP is shutting down")

    def announced(self) -> set[str]:
        """The prefixes in ExaBGP's adj-RIB-out (kept while a session is down, sent when it is up)."""
        return parse_adj_rib_out(self.command("show adj-rib out"))

    def sessions(self) -> dict[str, str]:
        """Each neighbor's BGP state, e.g. {"127.0.0.1": "established"}."""
        return parse_neighbor_summary(self.command("show neighbor summary"))

    def announce(self, prefix: str) -> None:
        self.command(f"announce route {prefix} next-hop self")

    def withdraw(self, prefix: str) -> None:
        self.command(f"withdraw route {prefix} next-hop self")


def _prefix(word: str) -> str | None:
    if "/" not in word:
        return None
    try:
        return str(ipaddress.ip_network(word, strict=False))
    except ValueError:
        return None


def parse_adj_rib_out(lines: Iterable[str]) -> set[str]:
    """`neighbor 127.0.0.1 ipv4 unicast 198.51.100.0/24 next-hop 127.0.0.2` -> {"198.51.100.0/24"}."""
    found: set[str] = set()
    for line in lines:
        words = line.split()
        if not words or words[0] != "neighbor":
            continue
        for word in words[2:]:
            prefix = _prefix(word)
            if prefix is not None:
                found.add(prefix)
                break
    return found


def parse_neighbor_summary(lines: Iterable[str]) -> dict[str, str]:
    """The table `Peer AS up/down state | #sent #recvd`: peer address -> state word."""
    states: dict[str, str] = {}
    for line in lines:
        words = line.split()
        if len(words) < 4 or words[0] == "Peer":
            continue
        try:
            ipaddress.ip_address(words[0])
        except ValueError:
            continue
        states[words[0]] = words[3].lower()
    return states


# --- the control plane's side ------------------------------------------------------------------

class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect could point anywhere; the agent talks to its API URL only


class ControlPlane:
    def __init__(self, api: str, token: str, pop: str, *, timeout: float = 3.0) -> None:
        parsed = urllib.parse.urlsplit(api)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"--api must be an http(s) URL, not {api!r}")
        self.base = api.rstrip("/")
        self.token = token
        self.pop = pop
        self.timeout = timeout
        # No ProxyHandler settings from the environment: requests go to the API URL itself.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Accept": "application/json",
            "Content-Type": "application/json", "User-Agent": f"steering-exabgp-agent/{__version__}",
        })
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode(errors="replace")
            raise ControlPlaneError(f"{method} {path}: HTTP {exc.code} {detail}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ControlPlaneError(f"{method} {path}: {exc}") from exc

    def desired(self) -> dict[str, Any]:
        answer = self._request("GET", "/api/v1/anycast/desired/?" + urllib.parse.urlencode({"pop": self.pop}))
        if not isinstance(answer, dict) or not isinstance(answer.get("desired"), list):
            raise ControlPlaneError(f"unexpected answer: {str(answer)[:200]}")
        return answer

    def report(self, observed: Iterable[str], session: str) -> None:
        self._request("POST", "/api/v1/anycast/report/",
                      {"pop": self.pop, "observed": sorted(observed), "session": session})


# --- the loop ------------------------------------------------------------------------------------

class Agent:
    def __init__(self, exabgp: ExaBGP, control: ControlPlane, *, interval: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
        self.exabgp = exabgp
        self.control = control
        self.interval = interval
        self.sleep = sleep
        self.clock = clock
        self.desired: set[str] | None = None    # None until the control plane first answers
        self.managed: set[str] = set()          # only grows: a prefix once managed stays ours to withdraw
        self.reason = ""
        self.observed: set[str] = set()
        self.session = "down"
        self._control_ok = True
        self._retrying: set[tuple[str, str]] = set()
        self._warned: set[tuple[str, str]] = set()

    def fetch(self) -> None:
        try:
            answer = self.control.desired()
        except ControlPlaneError as exc:
            if self._control_ok:
                kept = "nothing announced yet" if self.desired is None else f"keeping {sorted(self.desired)}"
                logger.warning("control plane unavailable (%s); %s, retrying", exc, kept)
            self._control_ok = False
            return
        if not self._control_ok:
            logger.info("control plane reachable again")
        self._control_ok = True
        desired = {p for p in (_prefix(str(p)) for p in answer["desired"]) if p}
        managed = {p for p in (_prefix(str(p)) for p in answer.get("managed") or []) if p}
        if desired != self.desired:
            logger.info("desired %s: %s", sorted(desired) or "nothing", answer.get("reason", ""))
        self.desired, self.reason = desired, str(answer.get("reason", ""))
        self.managed |= managed | desired

    def converge(self) -> None:
        announced = self.exabgp.announced()
        attempted: set[tuple[str, str]] = set()
        if self.desired is not None:
            for prefix in sorted(self.desired - announced):
                self._apply(self.exabgp.announce, "announce", prefix, attempted)
            for prefix in sorted((announced & self.managed) - self.desired):
                self._apply(self.exabgp.withdraw, "withdraw", prefix, attempted)
            if attempted:
                announced = self.exabgp.announced()
        # What had to be asked for twice in a row is said once, not every second.
        self._retrying = attempted
        self._warned &= attempted
        states = self.exabgp.sessions()
        self.session = "up" if any(s == "established" for s in states.values()) else "down"
        # Routes held while no session is up reach no router: nothing is announced in fact.
        self.observed = announced if self.session == "up" else set()

    def _apply(self, act: Callable[[str], None], verb: str, prefix: str, attempted: set[tuple[str, str]]) -> None:
        again = (verb, prefix) in self._retrying
        attempted.add((verb, prefix))
        try:
            act(prefix)
        except CommandFailed as exc:
            if not again:
                logger.warning("%s %s failed: %s", verb, prefix, exc)
            return
        if not again:
            logger.info("%s %s", verb, prefix)
        elif (verb, prefix) not in self._warned:
            self._warned.add((verb, prefix))
            logger.warning("%s %s: ExaBGP accepts it but its adj-RIB-out does not change "
                           "(is the address family configured for the neighbor?)", verb, prefix)

    def report(self) -> None:
        try:
            self.control.report(self.observed, self.session)
        except ControlPlaneError as exc:
            if self._control_ok:
                logger.warning("could not report: %s", exc)

    def step(self) -> None:
        self.fetch()
        try:
            self.converge()
        except CommandFailed as exc:
            logger.warning("ExaBGP: %s", exc)
            return
        self.report()

    def run(self) -> int:
        logger.info("anycast agent for PoP %s polling %s", self.control.pop, self.control.base)
        try:
            while True:
                started = self.clock()
                self.step()
                self.sleep(max(0.0, self.interval - (self.clock() - started)))
        except ExaBGPGone as exc:
            logger.info("%s; exiting", exc)
            return 0


# --- command line -----------------------------------------------------------------------------

def read_token(path: str | None) -> str:
    if path:
        with open(path, encoding="utf-8") as handle:
            token = handle.read().strip()
    else:
        token = os.environ.get("STEERING_TOKEN", "").strip()
    if not token:
        raise ValueError("no token: pass --token-file PATH or set STEERING_TOKEN (an operator token)")
    return token


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m steering.dataplane.exabgp.agent",
                                     description="Run by ExaBGP as an API process: announce what the control plane wants.")
    parser.add_argument("--pop", required=True, help="this PoP's slug, e.g. bom1")
    parser.add_argument("--api", default=os.environ.get("STEERING_URL", "http://127.0.0.1:8000"),
                        help="the control plane's URL (default $STEERING_URL or http://127.0.0.1:8000)")
    parser.add_argument("--token-file", help="file holding an operator API token (else $STEERING_TOKEN)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between polls (default 1)")
    args = parser.parse_args(argv)
    # stderr goes to ExaBGP's log; stdout is the API pipe and carries commands only.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s anycast-agent[{args.pop}] %(message)s")
    try:
        control = ControlPlane(args.api, read_token(args.token_file), args.pop)
    except (OSError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    agent = Agent(ExaBGP(sys.stdin, sys.stdout), control, interval=max(0.1, args.interval))
    return agent.run()


if __name__ == "__main__":
    sys.exit(main())
