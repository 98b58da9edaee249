"""The agent on its own: ExaBGP's text API over real pipes (a scripted ExaBGP on the other end),
the control plane as a real HTTP server on 127.0.0.1, and the loop's decisions.

The end-to-end proof with the real ExaBGP and BIRD is tests/test_exabgp_live.py; here are the
cases that are awkward to provoke there (ExaBGP refusing a command, a session that is down,
interleaved JSON messages, redirects and proxies)."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from steering.dataplane.exabgp.agent import (
    Agent,
    CommandFailed,
    ControlPlane,
    ControlPlaneError,
    ExaBGP,
    ExaBGPGone,
    main,
    parse_adj_rib_out,
    parse_neighbor_summary,
    read_token,
)

A, B, HAND = "198.51.100.0/24", "203.0.113.0/24", "192.0.2.0/24"


class ScriptedExaBGP:
    """The ExaBGP end of the two pipes: answers like ExaBGP 4.2 with api.ack on."""

    def __init__(self, rib: set[str] | None = None, state: str = "established") -> None:
        to_exa_r, to_exa_w = os.pipe()
        to_agent_r, to_agent_w = os.pipe()
        self._in = os.fdopen(to_exa_r, "r")
        self._out = os.fdopen(to_agent_w, "w")
        self.agent_reader = os.fdopen(to_agent_r, "r")
        self.agent_writer = os.fdopen(to_exa_w, "w")
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

    def exabgp(self, timeout: float = 5.0) -> ExaBGP:
        return ExaBGP(self.agent_reader, self.agent_writer, timeout=timeout)

    def hang_up(self) -> None:
        self._out.close()

    def close(self) -> None:
        for pipe in (self.agent_writer, self._out, self.agent_reader, self._in):
            try:
                pipe.close()
            except OSError:
                pass


_open: list[ScriptedExaBGP] = []


@pytest.fixture(autouse=True)
def _close_pipes() -> Iterator[None]:
    yield
    while _open:
        _open.pop().close()


class FakeControl:
    pop = "bom1"
    base = "http://127.0.0.1:1"

    def __init__(self, desired: list[str] | None, managed: list[str] | None = None) -> None:
        self.answer = None if desired is None else {"desired": desired, "managed": managed or desired, "reason": "r"}
        self.reports: list[tuple[list[str], str]] = []

    def desired(self) -> dict[str, Any]:
        if self.answer is None:
            raise ControlPlaneError("connection refused")
        return self.answer

    def report(self, observed: Any, session: str) -> None:
        if self.answer is None:
            raise ControlPlaneError("connection refused")
        self.reports.append((sorted(observed), session))


def agent(exa: ScriptedExaBGP, control: FakeControl) -> Agent:
    return Agent(exa.exabgp(), control, interval=0)  # type: ignore[arg-type]


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


# --- the loop ------------------------------------------------------------------------------------

def test_it_announces_what_is_desired_and_withdraws_only_managed_prefixes() -> None:
    exa = ScriptedExaBGP(rib={B, HAND})
    control = FakeControl([A], managed=[A, B])
    a = agent(exa, control)
    a.step()
    assert exa.rib == {A, HAND}, "the hand-configured route is not ours to withdraw"
    assert f"announce route {A} next-hop self" in exa.commands
    assert f"withdraw route {B} next-hop self" in exa.commands
    assert control.reports == [([HAND, A], "up")]   # observed is what ExaBGP announces, ours or not
    commands = len(exa.commands)
    a.step()   # converged: only the two reads, no announce/withdraw
    assert exa.commands[commands:] == ["show adj-rib out", "show neighbor summary"]


def test_it_keeps_the_last_desired_state_while_the_control_plane_is_away() -> None:
    exa = ScriptedExaBGP()
    control = FakeControl([A, B])
    a = agent(exa, control)
    a.step()
    assert exa.rib == {A, B}
    control.answer = None           # away
    exa.rib.discard(B)              # and ExaBGP lost a route meanwhile (say it was restarted)
    a.step()
    assert exa.rib == {A, B}, "the last known desired state stays in force"
    assert a.desired == {A, B}


def test_before_the_first_answer_it_announces_nothing() -> None:
    exa = ScriptedExaBGP(rib={B})
    a = agent(exa, FakeControl(None))
    a.step()
    assert exa.rib == {B} and a.desired is None
    assert not any(c.startswith(("announce", "withdraw")) for c in exa.commands)


def test_nothing_counts_as_observed_while_no_session_is_up() -> None:
    exa = ScriptedExaBGP(state="active")
    control = FakeControl([A])
    agent(exa, control).step()
    assert exa.rib == {A}                       # ExaBGP holds it, to send once the session is up
    assert control.reports == [([], "down")]    # but no router has it


def test_a_refused_announce_does_not_stop_the_others() -> None:
    exa = ScriptedExaBGP()
    exa.refuse.add(A)
    control = FakeControl([A, B])
    agent(exa, control).step()
    assert exa.rib == {B}
    assert control.reports == [([B], "up")]


def test_a_route_exabgp_keeps_ignoring_is_warned_about_once(caplog: pytest.LogCaptureFixture) -> None:
    v6 = "2001:db8::/32"
    exa = ScriptedExaBGP()
    exa.ignore.add(v6)
    control = FakeControl([A, v6])
    a = agent(exa, control)
    with caplog.at_level("INFO", logger="steering.exabgp.agent"):
        for _ in range(4):
            a.step()
    assert exa.commands.count(f"announce route {v6} next-hop self") == 4   # it keeps asking
    assert exa.commands.count(f"announce route {A} next-hop self") == 1
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"announce {v6}")]
    assert len(said) == 2 and "address family" in said[1]       # "announce", then one warning
    assert control.reports[-1] == ([A], "up")


def test_it_skips_exabgps_own_messages_and_ends_with_it() -> None:
    exa = ScriptedExaBGP()
    pipe = exa.exabgp()
    exa.chatter = json.dumps({"type": "state", "neighbor": {"state": "up"}})
    assert pipe.command("show adj-rib out") == []
    exa.chatter = json.dumps({"type": "notification", "notification": "shutdown"})
    with pytest.raises(ExaBGPGone):
        pipe.command("show adj-rib out")


def test_it_returns_when_exabgp_closes_the_pipe() -> None:
    exa = ScriptedExaBGP()
    control = FakeControl([A])
    a = Agent(exa.exabgp(), control, interval=0, sleep=lambda _s: exa.hang_up())  # type: ignore[arg-type]
    assert a.run() == 0
    assert exa.rib == {A}


def test_an_unanswered_command_times_out() -> None:
    r, w = os.pipe()
    sink_r, sink_w = os.pipe()
    with os.fdopen(r) as reader, os.fdopen(sink_w, "w") as writer:
        pipe = ExaBGP(reader, writer, timeout=0.2)
        with pytest.raises(CommandFailed):
            pipe.command("show adj-rib out")
        os.close(w)
    os.close(sink_r)


# --- the control plane over HTTP -----------------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    seen: list[dict[str, Any]] = []
    redirect_to = ""

    def _answer(self, status: int, body: Any, **headers: str) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        _Handler.seen.append({"path": self.path, "auth": self.headers["Authorization"]})
        if _Handler.redirect_to:
            self._answer(302, {}, Location=_Handler.redirect_to)
        else:
            self._answer(200, {"desired": [A], "managed": [A], "reason": "ok"})

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Handler.seen.append({"path": self.path, "body": body})
        self._answer(200, {})

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[str]:
    _Handler.seen, _Handler.redirect_to = [], ""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_it_talks_to_the_api_url_only(api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")   # would refuse; the agent must not use it
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    control = ControlPlane(api + "/", "s3cret", "bom1")
    assert control.desired()["desired"] == [A]
    control.report({B, A}, "up")
    assert _Handler.seen[0] == {"path": "/api/v1/anycast/desired/?pop=bom1", "auth": "Bearer s3cret"}
    assert _Handler.seen[1] == {"path": "/api/v1/anycast/report/",
                                "body": {"pop": "bom1", "observed": [A, B], "session": "up"}}


def test_it_does_not_follow_redirects(api: str) -> None:
    _Handler.redirect_to = "http://127.0.0.1:9/elsewhere"
    with pytest.raises(ControlPlaneError, match="302"):
        ControlPlane(api, "t", "bom1").desired()


def test_an_unreachable_api_is_a_control_plane_error() -> None:
    with pytest.raises(ControlPlaneError):
        ControlPlane("http://127.0.0.1:9", "t", "bom1", timeout=1).desired()
    with pytest.raises(ValueError):
        ControlPlane("file:///etc/passwd", "t", "bom1")


def test_the_token_comes_from_a_file_or_the_environment(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("abc\n")
    assert read_token(str(token_file)) == "abc"
    monkeypatch.setenv("STEERING_TOKEN", "from-env")
    assert read_token(None) == "from-env"
    monkeypatch.delenv("STEERING_TOKEN")
    with pytest.raises(ValueError, match="token"):
        read_token(None)
    assert main(["--pop", "bom1", "--api", "http://127.0.0.1:9"]) == 2


def test_it_runs_as_a_module_with_the_standard_library_only() -> None:
    # PoP hosts have Python and ExaBGP, not Django: importing the agent must not need it.
    code = ("import sys; import steering.dataplane.exabgp.agent; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('django', 'rest_framework', 'redis')]; "
            "sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"})
    assert done.returncode == 0, done.stderr
