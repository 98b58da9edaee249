"""The anycast agent: ExaBGP's API process, keeping one PoP's announcements on the desired state.

ExaBGP starts it (deploy/exabgp/exabgp.conf):

    process steering-agent {
        run /usr/bin/python3 -m steering.agents.exabgp --pop bom1 --api https://steering.example.net
            --token-file /etc/steering/agent-bom1.token --state-dir /var/lib/steering-agent;
        encoder json;
    }

(`steering-agent exabgp ...` is the same entry point.) Three threads:

- The follower (steering.agents.contract.Follower, layer "anycast") long-polls
  GET /api/v1/agent/desired/?layer=anycast&pop= for the PoP's announcements. Applying a version
  hands its prefix set to the ExaBGP loop and waits until ExaBGP's adj-RIB-out shows exactly that
  set: only then is the version ACKed (an ACK means "ExaBGP announces exactly this") and kept on
  disk. If ExaBGP answers `error` to an announce or withdraw, the version is NACKed with what ExaBGP
  said; the loop keeps working towards it (what ExaBGP accepts of it is announced, as before), so a
  withdrawal is never held back by an unrelated prefix ExaBGP refuses.
- The ExaBGP loop (the main thread) speaks the ExaBGP 4 text API on stdin/stdout: about every
  second, and at once when a version arrives, it reads `show adj-rib out`, writes `announce route
  <prefix> next-hop self` / `withdraw route <prefix> next-hop self` for the difference (it only ever
  withdraws prefixes the control plane manages, never routes configured in ExaBGP by hand) and
  reads the BGP session state (`show neighbor summary`).
- The reporter POSTs what is really announced (nothing while no session is established) and the
  session state to /api/v1/agent/report/ when they change, and every REPORT_HEARTBEAT_SECONDS.

Fail static: the last version ExaBGP announced in full is kept in --state-dir (StateFile). At
start-up it is announced again before the control plane is asked, so an agent (or an ExaBGP)
restarted while the control plane is down announces what it announced before; while the control
plane is unreachable the last state stays in force. Before any desired state exists (no state file,
no control plane) nothing is announced or withdrawn.

It talks to its --api URL (no proxies, no redirects) and its stdin/stdout, nothing else, with its
PoP's agent token, and uses only the Python standard library: it runs on PoP hosts beside ExaBGP.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

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

logger = logging.getLogger("steering.agents.exabgp")

LAYER = "anycast"
ANSWER_TIMEOUT_SECONDS = 10.0
# How long applying one version may take before it is refused (ExaBGP not answering, say).
APPLY_TIMEOUT_SECONDS = 30.0
# Passes in which ExaBGP says `done` to a route its adj-RIB-out still does not show before the
# version is refused (an address family not configured for the neighbor, typically).
UNSEEN_PASSES = 3
# The overview counts an agent connected when it reported within 5 s: stay well inside that.
REPORT_HEARTBEAT_SECONDS = 2.0
_SLUG = re.compile(r"^[-a-zA-Z0-9_]{1,50}$")
_INSTANCE = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")   # as the control plane accepts it


class ExaBGPGone(Exception):
    """ExaBGP closed our stdin or said it is shutting down: the agent ends with it."""


class CommandFailed(Exception):
    """ExaBGP did not answer a command in time (or answered `error`: Refused)."""


class Refused(CommandFailed):
    """ExaBGP answered `error`: the message says to what, with any lines ExaBGP sent before it."""


# --- ExaBGP's side -------------------------------------------------------------------------------

class ExaBGP:
    """Commands to ExaBGP on `writer` (our stdout); its answers, line by line, on `reader` (our stdin).

    With `exabgp.api.ack` (the default) every command is answered with its output lines then `done`
    or `error`. JSON lines are ExaBGP's own messages (neighbor state, shutdown), not answers.
    ExaBGP 4.2 says why it refused a command in its log only, not on the pipe.
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
                said = f": {' / '.join(output)}" if output else ""
                raise Refused(f"ExaBGP answered error to `{line}`{said}")
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


def normalise(word: str) -> str | None:
    """An IP prefix in its canonical form, or None when `word` is not one."""
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
            prefix = normalise(word)
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


def spec_prefixes(spec: dict[str, Any]) -> tuple[frozenset[str], frozenset[str]]:
    """(desired, managed) from an anycast desired-state spec; ApplyError when it is not one."""
    sets = []
    for key in ("desired", "managed"):
        items = spec.get(key, [] if key == "managed" else None)
        if not isinstance(items, list):
            raise ApplyError(f"the desired state has no `{key}` list of prefixes")
        prefixes = set()
        for item in items:
            prefix = normalise(str(item))
            if prefix is None:
                raise ApplyError(f"the desired state names {item!r} in `{key}`, which is not an IP prefix")
            prefixes.add(prefix)
        sets.append(frozenset(prefixes))
    return sets[0], sets[1]


# --- the loop ------------------------------------------------------------------------------------

@dataclass(eq=False)
class _Attempt:
    """One version being applied: its set, and (once the loop knows) "" for done or why not."""

    version: int
    desired: frozenset[str]
    outcome: str | None = None
    unseen: int = 0


class AnycastAgent:
    """The ExaBGP loop (`run`, on the thread that owns the pipes) and what the follower and the
    reporter ask of it (`apply`, `observation`), from their threads."""

    def __init__(self, exabgp: ExaBGP, *, interval: float = 1.0, apply_timeout: float = APPLY_TIMEOUT_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.exabgp = exabgp
        self.interval = interval
        self.apply_timeout = apply_timeout
        self.clock = clock
        self._cond = threading.Condition()
        self.target: frozenset[str] | None = None   # None until a desired state exists: touch nothing
        self.managed: set[str] = set()               # only grows: a prefix once managed stays ours to withdraw
        self.reason = ""
        self._attempt: _Attempt | None = None
        self._refused: frozenset[str] | None = None   # the set of the last attempt that failed
        self._wake = False
        self.passes = 0
        self.observed: frozenset[str] | None = None  # None until the first pass
        self.session: str | None = None
        self.stopped = False
        self._retrying: set[tuple[str, str]] = set()
        self._warned: set[tuple[str, str]] = set()

    # -- from the follower's thread --

    def apply(self, desired: Desired) -> None:
        """Make `desired` the loop's target and wait until ExaBGP's adj-RIB-out shows exactly it.
        ApplyError (a NACK) when ExaBGP refuses part of it, or it does not show in time; the
        target stays (ExaBGP announces what it accepts)."""
        prefixes, managed = spec_prefixes(desired.spec)
        attempt = _Attempt(desired.version, prefixes)
        with self._cond:
            if self.target != prefixes:
                logger.info("version %s: %s (%s)", desired.version, ", ".join(sorted(prefixes)) or "announce nothing",
                            desired.spec.get("reason", ""))
            self.managed |= managed | prefixes
            self.target = prefixes
            self.reason = str(desired.spec.get("reason", ""))
            self._attempt = attempt
            # A set ExaBGP just refused is tried again at the loop's pace (about once a second),
            # not as fast as the control plane offers it again.
            if prefixes != self._refused:
                self._wake = True
                self._cond.notify_all()
            self._cond.wait_for(lambda: attempt.outcome is not None or self.stopped, timeout=self.apply_timeout)
            if self._attempt is attempt:
                self._attempt = None
            outcome = attempt.outcome
            self._refused = None if outcome == "" else prefixes
        if outcome == "":
            return
        if outcome is None and self.stopped:
            raise ExaBGPGone("ExaBGP has gone: nothing to apply to")   # not a refusal: the agent is ending
        raise ApplyError(outcome or f"ExaBGP's adj-RIB-out did not show {sorted(prefixes)} within "
                                    f"{self.apply_timeout:g} s")

    # -- from the reporter's thread --

    def observation(self, *, differing_from: tuple[frozenset[str], str] | None = None,
                    timeout: float = 0.0) -> tuple[frozenset[str], str] | None:
        """(observed, session) after the first pass (None before), waiting up to `timeout` for one
        that differs from `differing_from`."""
        def current() -> tuple[frozenset[str], str] | None:
            if self.observed is None or self.session is None:
                return None
            return self.observed, self.session

        with self._cond:
            if timeout > 0:
                self._cond.wait_for(lambda: self.stopped or (current() is not None and current() != differing_from),
                                    timeout=timeout)
            return current()

    # -- the loop itself --

    def run(self) -> int:
        try:
            while True:
                started = self.clock()
                try:
                    self.step()
                except CommandFailed as exc:
                    logger.warning("ExaBGP: %s", exc)
                with self._cond:
                    self._cond.wait_for(lambda: self._wake,
                                        timeout=max(0.0, self.interval - (self.clock() - started)))
        except ExaBGPGone as exc:
            logger.info("%s; exiting", exc)
            return 0
        finally:
            with self._cond:
                self.stopped = True
                self._cond.notify_all()

    def step(self) -> None:
        """One pass: converge ExaBGP on the target, read the session, settle a pending attempt."""
        with self._cond:
            self._wake = False
            target, attempt, managed = self.target, self._attempt, frozenset(self.managed)
        announced = self.exabgp.announced()
        attempted: set[tuple[str, str]] = set()
        refused: list[str] = []
        accepted: list[str] = []
        if target is not None:
            for prefix in sorted(target - announced):
                self._change("announce", prefix, attempted, refused, accepted)
            for prefix in sorted((announced & managed) - target):
                self._change("withdraw", prefix, attempted, refused, accepted)
            if attempted:
                announced = self.exabgp.announced()
        # What had to be asked for twice in a row is said once, not every second.
        self._retrying = attempted
        self._warned &= attempted
        states = self.exabgp.sessions()
        session = "up" if any(s == "established" for s in states.values()) else "down"
        in_sync = target is not None and target <= announced and not (announced & managed) - target
        with self._cond:
            self.passes += 1
            # Routes held while no session is up reach no router: nothing is announced in fact.
            self.observed = frozenset(announced) if session == "up" else frozenset()
            self.session = session
            if attempt is not None and self._attempt is attempt:
                if refused:
                    attempt.outcome = "; ".join(refused)
                elif in_sync:
                    attempt.outcome = ""
                elif accepted:
                    attempt.unseen += 1
                    if attempt.unseen >= UNSEEN_PASSES:
                        attempt.outcome = (f"ExaBGP accepts {', '.join(f'`{c}`' for c in accepted)} but its adj-RIB-out "
                                           "does not change (is the address family configured for the neighbor?)")
            self._cond.notify_all()

    def _change(self, verb: str, prefix: str, attempted: set[tuple[str, str]], refused: list[str],
                accepted: list[str]) -> None:
        again = (verb, prefix) in self._retrying
        attempted.add((verb, prefix))
        try:
            (self.exabgp.announce if verb == "announce" else self.exabgp.withdraw)(prefix)
        except Refused as exc:
            refused.append(str(exc))
            if not again:
                logger.warning("%s %s refused: %s", verb, prefix, exc)
            return
        except CommandFailed as exc:
            if not again:
                logger.warning("%s %s failed: %s", verb, prefix, exc)
            return
        accepted.append(f"{verb} route {prefix} next-hop self")
        if not again:
            logger.info("%s %s", verb, prefix)
        elif (verb, prefix) not in self._warned:
            self._warned.add((verb, prefix))
            logger.warning("%s %s: ExaBGP accepts it but its adj-RIB-out does not change "
                           "(is the address family configured for the neighbor?)", verb, prefix)


# --- the control plane's side ------------------------------------------------------------------

class AnycastFollower(Follower):
    """The contract's Follower, with the rule an ACK of anycast needs: an ACK is sent only after a
    fresh pass of the loop shows ExaBGP announcing exactly the spec being acknowledged. That holds
    after `apply` by construction; it is checked again when the version moves without the spec
    changing, because the loop may meanwhile work towards another set (a version refused since)
    or ExaBGP may have lost a route."""

    def __init__(self, client: ContractClient, store: StateFile, agent: AnycastAgent, **kwargs: Any) -> None:
        super().__init__(client, store, agent.apply, **kwargs)
        self.agent = agent

    def _acknowledge(self, version: int, etag: str) -> None:
        if version <= self.acked:
            return
        current = self.current
        if current is None or current.etag != etag:
            return
        try:
            self.agent.apply(current)   # at once when ExaBGP already announces exactly this
        except ApplyError as exc:
            self._refuse(version, str(exc), etag)
            return
        super()._acknowledge(version, etag)


class Reporter:
    """What ExaBGP announces and the session state, to POST /api/v1/agent/report/: on a change,
    and every `heartbeat` seconds."""

    def __init__(self, agent: AnycastAgent, client: ContractClient, *, heartbeat: float = REPORT_HEARTBEAT_SECONDS,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.agent, self.client = agent, client
        self.heartbeat, self.clock, self.sleep = heartbeat, clock, sleep
        self.sent: tuple[frozenset[str], str] | None = None
        self.sent_at = float("-inf")
        self.failing = ""

    def step(self) -> None:
        wait = max(0.05, self.heartbeat - (self.clock() - self.sent_at))
        seen = self.agent.observation(differing_from=self.sent, timeout=wait)
        if seen is None or (seen == self.sent and self.clock() - self.sent_at < self.heartbeat):
            return
        observed, session = seen
        try:
            self.client.report(observed=sorted(observed), session=session)
        except ControlPlaneError as exc:
            if self.failing != str(exc):
                logger.warning("could not report: %s", exc)
            self.failing = str(exc)
            self.sleep(5.0 if exc.status in (401, 403) else 1.0)
            return
        if self.failing:
            logger.info("reporting again")
        self.sent, self.sent_at, self.failing = seen, self.clock(), ""

    def run(self, should_stop: Callable[[], bool]) -> None:
        while not should_stop():
            try:
                self.step()
            except Exception:  # a bug here must not stop the reports for good
                logger.exception("report failed")
                self.sleep(1.0)


# --- command line -------------------------------------------------------------------------------

def state_path(state_dir: str | os.PathLike[str], pop: str, instance: str) -> Path:
    return Path(state_dir) / f"anycast-{pop}-{instance}.json"


def _follow(follower: AnycastFollower, should_stop: Callable[[], bool]) -> None:
    try:
        kept = follower.restore()
        if kept is None:
            logger.info("no kept state: nothing announced until the control plane answers")
    except Exception:
        logger.exception("could not restore the kept state")
    follower.run(should_stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="steering-agent exabgp",
        description="Run by ExaBGP as its API process: announce what the control plane wants for this PoP.")
    parser.add_argument("--pop", required=True, help="this PoP's slug, e.g. bom1")
    parser.add_argument("--api", default=os.environ.get("STEERING_URL"), required=not os.environ.get("STEERING_URL"),
                        help="the control plane's URL (default $STEERING_URL)")
    parser.add_argument("--token-file", required=True,
                        help="file holding this PoP's agent token (manage.py create_token --agent --pop SLUG)")
    parser.add_argument("--state-dir", required=True,
                        help="where the last applied state is kept (fail static), e.g. /var/lib/steering-agent")
    parser.add_argument("--instance", default="default", help="this agent's name when several serve the PoP")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between passes over ExaBGP (default 1)")
    parser.add_argument("--wait", type=int, default=DEFAULT_WAIT_SECONDS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # stderr goes to ExaBGP's log; stdout is the API pipe and carries commands only.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s anycast-agent[{args.pop}] %(levelname)s %(message)s")
    try:
        if not _SLUG.match(args.pop):
            raise ValueError(f"--pop {args.pop!r} is not a PoP slug")
        if not _INSTANCE.match(args.instance):
            raise ValueError(f"--instance {args.instance!r}: 1-100 letters, digits, '.', '_', ':' or '-'")
        token = read_token(args.token_file)
        clients = [ContractClient(args.api, token, LAYER, pop=args.pop, instance=args.instance,
                                  user_agent="steering-exabgp-agent") for _ in range(2)]
        store = StateFile(state_path(args.state_dir, args.pop, args.instance))
    except (OSError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    agent = AnycastAgent(ExaBGP(sys.stdin, sys.stdout), interval=max(0.05, args.interval))
    follower = AnycastFollower(clients[0], store, agent, wait=max(0, args.wait))
    reporter = Reporter(agent, clients[1])

    def stopped() -> bool:
        return agent.stopped

    logger.info("anycast agent for PoP %s following %s (state in %s)", args.pop, clients[0].base, store.path)
    threading.Thread(target=_follow, args=(follower, stopped), name="anycast-follower", daemon=True).start()
    threading.Thread(target=reporter.run, args=(stopped,), name="anycast-reporter", daemon=True).start()
    return agent.run()


if __name__ == "__main__":
    sys.exit(main())
