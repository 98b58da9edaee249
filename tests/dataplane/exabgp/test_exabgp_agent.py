"""The anycast agent (steering.agents.exabgp) on its own: ExaBGP's text API over real pipes (a
scripted ExaBGP on the other end), the agent contract's control plane in memory or as a real HTTP
server on 127.0.0.1, and the loop's decisions: ACK only what ExaBGP's adj-RIB-out shows, NACK what
ExaBGP refuses, keep and restore the applied state (fail static).

The end-to-end proof with the real ExaBGP, BIRD and web server is
tests/dataplane/exabgp/test_exabgp_live.py; here are the cases that are awkward to provoke there
(ExaBGP refusing a command, a session that is down, interleaved JSON messages, redirects and
proxies)."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import stat
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pytest

from steering.agents.contract import ControlPlaneError, Desired, StateFile
from steering.agents.exabgp import (
    AnycastAgent,
    AnycastFollower,
    CommandFailed,
    ExaBGP,
    ExaBGPGone,
    Refused,
    Reporter,
    _follow,
    main,
    parse_adj_rib_out,
    parse_neighbor_summary,
    state_path,
)
from tests.support import ROOT, wait_for

A, B, HAND = "198.51.100.0/24", "203.0.113.0/24", "192.0.2.0/24"


class ScriptedExaBGP:
    """The ExaBGP end of the two pipes: answers like ExaBGP 4.2 with api.ack on.

    By default it makes its own pipes (`exabgp()` gives the agent's end); given `commands` and
    `answers` it serves those instead (an agent subprocess's stdout and stdin)."""

    def __init__(self, rib: set[str] | None = None, state: str = "established", *,
                 commands: TextIO | None = None, answers: TextIO | None = None) -> None:
        if commands is None or answers is None:
            to_exa_r, to_exa_w = os.pipe()
            to_agent_r, to_agent_w = os.pipe()
            commands, answers = os.fdopen(to_exa_r, "r"), os.fdopen(to_agent_w, "w")
            self.agent_reader: TextIO | None = os.fdopen(to_agent_r, "r")
            self.agent_writer: TextIO | None = os.fdopen(to_exa_w, "w")
        else:
            self.agent_reader = self.agent_writer = None
        self._in, self._out = commands, answers
        self.rib = set(rib or ())
        self.state = state
        self.refuse: set[str] = set()
        self.ignore: set[str] = set()   # answered `done` but never in the RIB (a family not configured)
        self.commands: list[str] = []
        self.chatter = ""   # a JSON line ExaBGP sends before its next answer
        _open.append(self)
        threading.Thread(target=self._serve, daemon=True).start()

    def _say(self, *lines: str) -> None:
        for line in lines:
            self._out.write(line + "\n")
        self._out.flush()

    def _serve(self) -> None:
        try:
            self._answer_each()
        except (OSError, ValueError):
            pass   # the test hung up or closed the pipes

    def _answer_each(self) -> None:
        for raw in self._in:
            command = raw.strip()
            self.commands.append(command)
            if self.chatter:
                self._say(self.chatter)
                self.chatter = ""
            words = command.split()
            if command == "show adj-rib out":
                self._say(*(f"neighbor 127.0.0.1 ipv4 unicast {p} next-hop 127.0.0.2" for p in sorted(self.rib)), "done")
            elif command == "show neighbor summary":
                self._say("Peer            AS        up/down state       |     #sent     #recvd",
                          f"127.0.0.1       65000     0:00:05 {self.state:<12}          5          1", "done")
            elif words[:2] in (["announce", "route"], ["withdraw", "route"]) and words[2] not in self.refuse:
                if words[2] not in self.ignore:
                    (self.rib.add if words[0] == "announce" else self.rib.discard)(words[2])
                self._say("done")
            else:
                self._say("error")

    def changes(self) -> list[str]:
        return [c for c in list(self.commands) if c.startswith(("announce", "withdraw"))]

    def exabgp(self, timeout: float = 5.0) -> ExaBGP:
        assert self.agent_reader is not None and self.agent_writer is not None
        return ExaBGP(self.agent_reader, self.agent_writer, timeout=timeout)

    def hang_up(self) -> None:
        self._out.close()

    def close(self) -> None:
        for pipe in (self.agent_writer, self._out, self.agent_reader, self._in):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass


_open: list[ScriptedExaBGP] = []


@pytest.fixture(autouse=True)
def _close_pipes() -> Iterator[None]:
    yield
    while _open:
        _open.pop().close()


def etag_of(spec: dict[str, Any]) -> str:
    return '"' + hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32] + '"'


@dataclass
class FakeControlPlane:
    """The control plane's side of the agent contract, in memory (what ContractClient offers).
    `publish` a PoP's announcements at a version; every ACK records the scripted RIB at that moment."""

    exa: ScriptedExaBGP | None = None
    down: bool = False
    doc: Desired | None = None
    acks: list[tuple[int, str, set[str]]] = field(default_factory=list)
    nacks: list[tuple[int, str]] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)
    fetches: list[tuple[int | None, str | None]] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def publish(self, version: int, desired: list[str], managed: list[str] | None = None) -> Desired:
        spec = {"pop": "bom1", "id": 1, "desired": desired, "reason": "test", "prefixes": [],
                "managed": desired if managed is None else managed}
        with self.cond:
            self.doc = Desired("anycast", "bom1", version, etag_of(spec), spec)
            self.cond.notify_all()
        return self.doc

    def bump(self, version: int) -> None:
        """A new version with the same announcements (something elsewhere changed)."""
        assert self.doc is not None
        with self.cond:
            self.doc = Desired("anycast", "bom1", version, self.doc.etag, self.doc.spec)
            self.cond.notify_all()

    def _check(self) -> None:
        if self.down:
            raise ControlPlaneError("connection refused")

    def fetch(self, *, after: int | None = None, etag: str | None = None, wait: int = 25) -> Desired | int | None:
        """As steering.api.longpoll answers: at once when the version moved past `after` or the spec
        differs from the one the agent runs (`etag`); the version alone (a 304 carrying our etag)
        when that spec is still current; None when the wait ran out."""
        def answerable() -> bool:
            return self.doc is not None and (after is None or self.doc.version > after
                                             or (etag is not None and self.doc.etag != etag))

        with self.cond:
            self._check()
            self.fetches.append((after, etag))
            if after is not None:
                self.cond.wait_for(lambda: self.down or answerable(), timeout=min(wait, 0.2))
                self._check()
            if not answerable():
                return None
            assert self.doc is not None
            return self.doc.version if etag == self.doc.etag else self.doc

    def ack(self, version: int, etag: str) -> Any:
        self._check()
        self.acks.append((version, etag, set(self.exa.rib) if self.exa else set()))

    def nack(self, version: int, error: str) -> Any:
        self._check()
        self.nacks.append((version, error))

    def report(self, **observations: Any) -> Any:
        self._check()
        self.reports.append(observations)

    def acked(self) -> list[int]:
        return [v for v, _e, _r in self.acks]


@dataclass
class Running:
    agent: AnycastAgent
    follower: AnycastFollower
    reporter: Reporter
    store: StateFile
    exa: ScriptedExaBGP
    result: list[int] = field(default_factory=list)

    def stop(self) -> None:
        self.exa.hang_up()
        wait_for(lambda: self.result, "the agent to end with ExaBGP")


def start_agent(exa: ScriptedExaBGP, control: FakeControlPlane, state_dir: Path, *,
                apply_timeout: float = 5.0) -> Running:
    """The agent as main() wires it: the ExaBGP loop, the follower (restore, then long-polls) and
    the reporter, each on a thread of its own."""
    agent = AnycastAgent(exa.exabgp(), interval=0.05, apply_timeout=apply_timeout)
    store = StateFile(state_path(state_dir, "bom1", "default"))
    follower = AnycastFollower(control, store, agent, wait=1)  # type: ignore[arg-type]
    reporter = Reporter(agent, control, heartbeat=0.3, sleep=lambda s: time.sleep(min(s, 0.05)))  # type: ignore[arg-type]
    running = Running(agent, follower, reporter, store, exa)
    threading.Thread(target=lambda: running.result.append(agent.run()), daemon=True).start()
    threading.Thread(target=_follow, args=(follower, lambda: agent.stopped), daemon=True).start()
    threading.Thread(target=reporter.run, args=(lambda: agent.stopped,), daemon=True).start()
    return running


# --- parsing what ExaBGP prints ------------------------------------------------------------------

def test_it_reads_the_adj_rib_out_and_the_neighbor_summary() -> None:
    assert parse_adj_rib_out([
        "neighbor 127.0.0.1 ipv4 unicast 198.51.100.0/24 next-hop 127.0.0.2",
        "neighbor 127.0.0.1 local-ip 127.0.0.2 local-as 65001 peer-as 65000 router-id 127.0.0.2 family-allowed "
        "in-open ipv4 unicast 203.0.113.0/24 next-hop 127.0.0.2",
        "something else entirely",
    ]) == {A, B}
    assert parse_neighbor_summary([
        "Peer            AS        up/down state       |     #sent     #recvd",
        "127.0.0.1       65000     0:00:05 established           5          1",
        "127.0.0.9       65000        down active                0          0",
    ]) == {"127.0.0.1": "established", "127.0.0.9": "active"}


# --- apply, ACK, NACK ----------------------------------------------------------------------------

def test_it_acks_a_version_once_exabgp_announces_exactly_it_and_withdraws_only_managed_prefixes(
        tmp_path: Path) -> None:
    exa = ScriptedExaBGP(rib={B, HAND})
    control = FakeControlPlane(exa)
    doc = control.publish(5, [A], managed=[A, B])
    running = start_agent(exa, control, tmp_path)
    wait_for(lambda: control.acked() == [5], "the ACK of version 5")
    assert control.acks == [(5, doc.etag, {A, HAND})], "ACKed only once the RIB showed exactly the desired set"
    assert f"announce route {A} next-hop self" in exa.commands
    assert f"withdraw route {B} next-hop self" in exa.commands   # managed: ours to withdraw
    assert HAND in exa.rib, "a route configured in ExaBGP by hand is not ours to withdraw"
    kept = running.store.load()
    assert kept is not None and kept.version == 5 and kept.spec["desired"] == [A]
    assert stat.S_IMODE(os.stat(running.store.path).st_mode) == 0o600

    changes = len(exa.changes())
    control.bump(6)   # the version moves, the announcements do not
    wait_for(lambda: control.acked() == [5, 6], "the ACK of version 6")
    assert len(exa.changes()) == changes, "nothing to announce or withdraw for an unchanged spec"
    wait_for(lambda: control.reports and control.reports[-1] == {"observed": [HAND, A], "session": "up"},
             "a report of what ExaBGP announces")
    running.stop()
    assert running.result == [0]


def test_a_refused_announce_is_nacked_with_exabgps_words_and_the_rest_still_applied(tmp_path: Path) -> None:
    exa = ScriptedExaBGP()
    exa.refuse.add(A)
    control = FakeControlPlane(exa)
    control.publish(7, [A, B])
    running = start_agent(exa, control, tmp_path)
    wait_for(lambda: control.nacks, "the NACK")
    assert control.nacks[0] == (7, f"ExaBGP answered error to `announce route {A} next-hop self`")
    assert exa.rib == {B}, "what ExaBGP accepts of the version is announced"
    assert control.acks == [] and running.store.load() is None, "a refused version is neither ACKed nor kept"

    # Long-polls after the refusal run out with nothing new: nothing is acknowledged...
    wait_for(lambda: len([f for f in control.fetches if f[0] == 7]) >= 3, "long-polls after the refusal")
    assert control.acks == [] and len(control.nacks) == 1
    # ...and once ExaBGP takes the route, the next version is applied and ACKed.
    exa.refuse.clear()
    control.bump(8)
    wait_for(lambda: control.acked() == [8], "the ACK of version 8")
    assert control.acks[0][2] == {A, B}
    running.stop()


def test_a_route_exabgp_accepts_but_never_shows_is_nacked(tmp_path: Path) -> None:
    v6 = "2001:db8::/32"
    exa = ScriptedExaBGP()
    exa.ignore.add(v6)
    control = FakeControlPlane(exa)
    control.publish(3, [A, v6])
    running = start_agent(exa, control, tmp_path)
    wait_for(lambda: control.nacks, "the NACK")
    version, error = control.nacks[0]
    assert version == 3 and f"announce route {v6} next-hop self" in error and "address family" in error
    assert exa.rib == {A} and control.acks == []
    running.stop()


def test_going_back_to_the_applied_spec_after_a_refusal_reapplies_it_before_the_ack(tmp_path: Path) -> None:
    exa = ScriptedExaBGP()
    control = FakeControlPlane(exa)
    control.publish(1, [A])
    running = start_agent(exa, control, tmp_path)
    wait_for(lambda: control.acked() == [1], "the ACK of version 1")
    exa.refuse.add(B)
    control.publish(2, [B])            # A withdrawn, B refused: the loop works towards [B]
    wait_for(lambda: control.nacks, "the NACK of version 2")
    assert exa.rib == set()
    # The control plane offers version 2 again at once (it is not what the agent runs); ExaBGP is
    # asked again at the loop's pace, and the refusal is said once.
    tries = exa.changes().count(f"announce route {B} next-hop self")
    wait_for(lambda: exa.changes().count(f"announce route {B} next-hop self") >= tries + 2, "the refused set retried")
    assert control.nacks == [(2, f"ExaBGP answered error to `announce route {B} next-hop self`")]
    control.publish(3, [A])            # the spec of version 1 again: same etag as the one kept
    wait_for(lambda: control.acked() == [1, 3], "the ACK of version 3")
    assert control.acks[-1][2] == {A}, "ExaBGP announced A again before version 3 was ACKed"
    running.stop()


# --- fail static -----------------------------------------------------------------------------------

def test_a_restarted_agent_announces_the_kept_state_while_the_control_plane_is_down(tmp_path: Path) -> None:
    exa = ScriptedExaBGP()
    control = FakeControlPlane(exa)
    control.publish(4, [A, B])
    running = start_agent(exa, control, tmp_path)
    wait_for(lambda: control.acked() == [4], "the ACK of version 4")
    running.stop()

    control.down = True
    fresh = ScriptedExaBGP()        # a restarted ExaBGP: its RIB is empty
    control.exa = fresh
    again = start_agent(fresh, control, tmp_path)
    wait_for(lambda: fresh.rib == {A, B}, "the kept state announced again")
    wait_for(lambda: len(fresh.commands) > 20, "a few passes with the control plane down")
    assert fresh.rib == {A, B} and fresh.changes() == [f"announce route {A} next-hop self",
                                                       f"announce route {B} next-hop self"]

    control.down = False             # back: the next change arrives
    control.publish(9, [B])
    wait_for(lambda: control.acked()[-1:] == [9], "the ACK of version 9")
    assert fresh.rib == {B}
    again.stop()


def test_before_any_desired_state_it_announces_nothing(tmp_path: Path) -> None:
    exa = ScriptedExaBGP(rib={B})
    control = FakeControlPlane(exa, down=True)
    running = start_agent(exa, control, tmp_path)
    wait_for(lambda: exa.commands.count("show adj-rib out") >= 5, "a few passes")
    assert exa.rib == {B} and exa.changes() == []
    assert running.agent.target is None
    running.stop()


def test_it_keeps_the_last_state_while_the_control_plane_is_away(tmp_path: Path) -> None:
    exa = ScriptedExaBGP()
    control = FakeControlPlane(exa)
    control.publish(2, [A, B])
    running = start_agent(exa, control, tmp_path)
    wait_for(lambda: control.acked() == [2], "the ACK")
    control.down = True
    exa.rib.discard(B)               # ExaBGP lost a route meanwhile
    wait_for(lambda: exa.rib == {A, B}, "the last desired state put back")
    running.stop()


# --- reports ---------------------------------------------------------------------------------------

def test_nothing_counts_as_observed_while_no_session_is_up(tmp_path: Path) -> None:
    exa = ScriptedExaBGP(state="active")
    control = FakeControlPlane(exa)
    control.publish(1, [A])
    running = start_agent(exa, control, tmp_path)
    wait_for(lambda: control.acked() == [1], "the ACK")   # ExaBGP holds it, to send once the session is up
    wait_for(lambda: control.reports, "a report")
    assert control.reports[-1] == {"observed": [], "session": "down"}   # but no router has it
    exa.state = "established"
    wait_for(lambda: control.reports[-1] == {"observed": [A], "session": "up"}, "the report of the session up")
    count = len(control.reports)
    wait_for(lambda: len(control.reports) > count, "a heartbeat with nothing changed")
    running.stop()


# --- ExaBGP's pipe ---------------------------------------------------------------------------------

def test_it_skips_exabgps_own_messages_and_ends_with_it() -> None:
    exa = ScriptedExaBGP()
    pipe = exa.exabgp()
    exa.chatter = json.dumps({"type": "state", "neighbor": {"state": "up"}})
    assert pipe.command("show adj-rib out") == []
    with pytest.raises(Refused, match="error to `bogus`"):
        pipe.command("bogus")
    exa.chatter = json.dumps({"type": "notification", "notification": "shutdown"})
    with pytest.raises(ExaBGPGone):
        pipe.command("show adj-rib out")


def test_an_unanswered_command_times_out() -> None:
    r, w = os.pipe()
    sink_r, sink_w = os.pipe()
    with os.fdopen(r) as reader, os.fdopen(sink_w, "w") as writer:
        pipe = ExaBGP(reader, writer, timeout=0.2)
        with pytest.raises(CommandFailed) as caught:
            pipe.command("show adj-rib out")
        assert not isinstance(caught.value, Refused)
        os.close(w)
    os.close(sink_r)


# --- the command line, against a control plane over HTTP -------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    seen: list[dict[str, Any]] = []
    redirect_to = ""
    spec: dict[str, Any] = {}

    def _answer(self, status: int, body: Any, **headers: str) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        path, _, query = self.path.partition("?")
        params = dict(urllib.parse.parse_qsl(query))
        _Handler.seen.append({"path": path, "query": params, "auth": self.headers["Authorization"]})
        if _Handler.redirect_to:
            self._answer(302, {}, Location=_Handler.redirect_to)
        elif "after" in params:
            threading.Event().wait(0.2)
            self._answer(304, None, **{"X-Steering-Version": params["after"]})
        else:
            self._answer(200, {"layer": "anycast", "pop": "bom1", "version": 3, "etag": etag_of(_Handler.spec),
                               "spec": _Handler.spec})

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Handler.seen.append({"path": self.path, "body": body, "auth": self.headers["Authorization"]})
        self._answer(200, {})

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[str]:
    _Handler.seen, _Handler.redirect_to = [], ""
    _Handler.spec = {"pop": "bom1", "id": 1, "desired": [A], "managed": [A], "reason": "ok", "prefixes": []}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def agent_process(api: str, tmp_path: Path, *extra: str, **env: str) -> subprocess.Popen[str]:
    token_file = tmp_path / "agent.token"
    token_file.write_text("s3cret\n")
    return subprocess.Popen(
        [sys.executable, "-m", "steering.agents.exabgp", "--pop", "bom1", "--api", api, "--token-file", str(token_file),
         "--state-dir", str(tmp_path / "state"), "--instance", "edge-1", "--interval", "0.1", "--wait", "1", *extra],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**{k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}, **env})


def test_the_agent_follows_the_contract_over_http_with_its_token_only(api: str, tmp_path: Path) -> None:
    # Proxies from the environment would refuse: the agent must not use them.
    proc = agent_process(api, tmp_path, http_proxy="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")
    assert proc.stdout is not None and proc.stdin is not None
    exa = ScriptedExaBGP(commands=proc.stdout, answers=proc.stdin)
    try:
        wait_for(lambda: any(s["path"] == "/api/v1/agent/ack/" for s in _Handler.seen), "the agent's ACK")
        wait_for(lambda: any(s["path"] == "/api/v1/agent/report/" and s["body"]["observed"] for s in _Handler.seen),
                 "the agent's report of what ExaBGP announces")
        assert exa.rib == {A}
        first = next(s for s in _Handler.seen if s["path"] == "/api/v1/agent/desired/")
        assert first == {"path": "/api/v1/agent/desired/", "auth": "Bearer s3cret",
                         "query": {"layer": "anycast", "pop": "bom1", "instance": "edge-1"}}
        ack = next(s for s in _Handler.seen if s["path"] == "/api/v1/agent/ack/")
        assert ack["body"] == {"layer": "anycast", "pop": "bom1", "instance": "edge-1", "version": 3,
                               "etag": etag_of(_Handler.spec)}
        report = next(s for s in _Handler.seen if s["path"] == "/api/v1/agent/report/" and s["body"]["observed"])
        assert report["body"] == {"layer": "anycast", "pop": "bom1", "instance": "edge-1",
                                  "observed": [A], "session": "up"}
        assert all(s["auth"] == "Bearer s3cret" for s in _Handler.seen)
        wait_for(lambda: any(s["query"].get("after") == "3" for s in _Handler.seen if "query" in s),
                 "a long-poll after version 3")
        kept = json.loads((tmp_path / "state" / "anycast-bom1-edge-1.json").read_text())
        assert kept["version"] == 3 and kept["spec"]["desired"] == [A]
        assert stat.S_IMODE(os.stat(tmp_path / "state" / "anycast-bom1-edge-1.json").st_mode) == 0o600
    finally:
        exa.hang_up()     # ExaBGP goes: the agent ends with it
        try:
            assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()


def test_it_does_not_follow_redirects(api: str, tmp_path: Path) -> None:
    _Handler.redirect_to = "http://127.0.0.1:9/elsewhere"
    proc = agent_process(api, tmp_path)
    assert proc.stdout is not None and proc.stdin is not None
    exa = ScriptedExaBGP(commands=proc.stdout, answers=proc.stdin)
    try:
        wait_for(lambda: exa.commands.count("show adj-rib out") >= 3, "a few passes")
        assert exa.changes() == [], "no desired state: nothing announced"
        assert not any(s["path"] == "/api/v1/agent/ack/" for s in _Handler.seen)
    finally:
        exa.hang_up()
        proc.wait(timeout=30)
        log = proc.stderr.read() if proc.stderr else ""
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    assert "HTTP 302" in log, log


def test_a_bad_configuration_ends_the_agent_with_2(tmp_path: Path) -> None:
    token = tmp_path / "token"
    assert main(["--pop", "bom1", "--api", "http://127.0.0.1:9", "--token-file", str(token),
                 "--state-dir", str(tmp_path)]) == 2   # no token file
    token.write_text("\n")
    assert main(["--pop", "bom1", "--api", "http://127.0.0.1:9", "--token-file", str(token),
                 "--state-dir", str(tmp_path)]) == 2   # an empty one
    token.write_text("t\n")
    assert main(["--pop", "bom1", "--api", "file:///etc/passwd", "--token-file", str(token),
                 "--state-dir", str(tmp_path)]) == 2
    assert main(["--pop", "bom1", "--api", "http://127.0.0.1:9", "--token-file", str(token),
                 "--state-dir", str(tmp_path), "--instance", "a b"]) == 2
    with pytest.raises(SystemExit):
        main(["--pop", "bom1", "--api", "http://127.0.0.1:9", "--token-file", str(token)])   # no --state-dir


@pytest.mark.parametrize("module", ["steering.agents.exabgp", "steering.dataplane.exabgp.agent"])
def test_it_imports_neither_django_nor_a_database_redis_or_celery_client(module: str) -> None:
    # PoP hosts have Python and ExaBGP, not Django: importing the agent must not need it.
    code = (f"import sys, {module}; "
            "assert not any(m.split('.')[0] in ('django', 'redis', 'psycopg', 'celery', 'rest_framework') "
            "for m in sys.modules), sorted(m for m in sys.modules if m.split('.')[0] in "
            "('django', 'redis', 'psycopg', 'celery', 'rest_framework'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"})
    assert done.returncode == 0, done.stderr
