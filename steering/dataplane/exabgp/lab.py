"""A BGP lab on loopback: one BIRD 2 "router" and one ExaBGP per PoP, each running our agent
(steering.agents.exabgp).

Used by the integration tests and the demo. BIRD listens passively on 127.0.0.1 at an unprivileged
port and imports everything; each PoP's ExaBGP connects to it from its own 127.0.0.x address
(`connect <port>` in the neighbor: ExaBGP 4.2's per-neighbor peer port) with its own AS, so
`birdc show route protocol pop_<slug>` is what that PoP announces. ExaBGP runs in the foreground,
unprivileged (no listening socket, no privilege drop, no CLI pipes), its files in a work dir.
Standard library only; nothing here talks beyond 127.0.0.0/8.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[3]
ROUTER_ID = "127.0.0.1"
ROUTER_AS = 65000
FIRST_POP_AS = 65101


def bird_binary() -> str | None:
    return shutil.which("bird") or next((p for p in ("/usr/sbin/bird",) if os.path.exists(p)), None)


def birdc_binary() -> str | None:
    return shutil.which("birdc") or next((p for p in ("/usr/sbin/birdc",) if os.path.exists(p)), None)


def exabgp_binary() -> str | None:
    beside = Path(sys.executable).parent / "exabgp"   # installed from PyPI into the same virtualenv
    return str(beside) if beside.exists() else shutil.which("exabgp")


def free_port(host: str = ROUTER_ID) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _loopback(address: str) -> str:
    if not ipaddress.ip_address(address).is_loopback:
        raise ValueError(f"{address} is not a loopback address: the lab stays on 127.0.0.0/8")
    return address


def protocol_name(pop_slug: str) -> str:
    return "pop_" + re.sub(r"[^A-Za-z0-9_]", "_", pop_slug)


@dataclass(frozen=True)
class Speaker:
    """One PoP's ExaBGP as BIRD sees it."""

    pop: str
    address: str          # 127.0.0.x, its router id too
    asn: int

    @property
    def protocol(self) -> str:
        return protocol_name(self.pop)


def render_bird(speakers: Sequence[Speaker], *, port: int, asn: int = ROUTER_AS, router_id: str = ROUTER_ID) -> str:
    lines = [
        f"router id {router_id};",
        "log stderr all;",
        "protocol device { scan time 60; }",
    ]
    for s in speakers:
        lines += [
            f"protocol bgp {s.protocol} {{",
            f"  local {_loopback(router_id)} port {port} as {asn};",
            f"  neighbor {_loopback(s.address)} as {s.asn};",
            "  multihop;",       # loopback is no directly connected LAN: no next-hop resolution either
            "  passive;",        # ExaBGP connects; BIRD only listens
            "  hold time 9;",
            "  ipv4 { import all; export none; };",
            "}",
        ]
    return "\n".join(lines) + "\n"


def render_exabgp(speaker: Speaker, *, agent: Sequence[str], router_port: int, router_as: int = ROUTER_AS,
                  router: str = ROUTER_ID) -> str:
    run = " ".join(agent)
    return f"""process steering-agent {{
    run {run};
    encoder json;
}}

neighbor {_loopback(router)} {{
    router-id {speaker.address};
    local-address {_loopback(speaker.address)};
    local-as {speaker.asn};
    peer-as {router_as};
    connect {router_port};
    hold-time 9;
    family {{
        ipv4 unicast;
    }}
    api {{
        processes [ steering-agent ];
    }}
}}
"""


def exabgp_env(**extra: str) -> dict[str, str]:
    """ExaBGP 4.2 settings by environment: foreground, unprivileged, logging to stdout, no listener."""
    import pwd

    env = dict(os.environ)
    env.update({
        "exabgp.daemon.daemonize": "false",
        "exabgp.daemon.drop": "false",
        # Started as root, ExaBGP 4.2 still switches to this user after starting its API process;
        # as `nobody` it could neither read the work dir nor start the agent again if it died.
        "exabgp.daemon.user": pwd.getpwuid(os.getuid()).pw_name,
        "exabgp.tcp.bind": "",                    # do not listen on :179, only connect out
        "exabgp.api.cli": "false",                # no named pipes
        "exabgp.api.ack": "true",                 # the agent reads `done` / `error` after each command
        "exabgp.log.destination": "stdout",
        "exabgp.log.level": "INFO",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])),
    })
    env.update(extra)
    return env


def agent_command(pop: str, api: str, token_file: Path, state_dir: Path, *, instance: str | None = None,
                  interval: float = 1.0) -> list[str]:
    """ExaBGP's `run` line for our agent (steering.agents.exabgp) with this PoP's agent token."""
    return [sys.executable, "-m", "steering.agents.exabgp", "--pop", pop, "--api", api,
            "--token-file", str(token_file), "--state-dir", str(state_dir),
            *(("--instance", instance) if instance else ()), "--interval", f"{interval:g}"]


def _stop(proc: subprocess.Popen[Any] | None, timeout: float = 10.0, *, leader_first: bool = False) -> None:
    """SIGTERM the process group (or only its leader, which then ends its own children), SIGKILL
    whatever is left of the group after `timeout`."""
    if proc is None:
        return
    if proc.poll() is None:
        if leader_first:
            proc.terminate()
        else:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)   # stragglers, e.g. a helper respawned during shutdown
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait(timeout=10)


def _wait(condition: Callable[[], Any], what: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise RuntimeError(f"gave up waiting for {what}")


class Bird:
    """BIRD 2 in the foreground, its control socket and log in `workdir`."""

    def __init__(self, workdir: Path, speakers: Sequence[Speaker], *, port: int | None = None) -> None:
        self.workdir = workdir
        self.speakers = list(speakers)
        self.port = port or free_port()
        self.socket = str(workdir / "bird.ctl")
        self.config = workdir / "bird.conf"
        self.log_path = workdir / "bird.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, timeout: float = 20.0) -> Bird:
        bird, birdc = bird_binary(), birdc_binary()
        if not bird or not birdc:
            raise FileNotFoundError("bird/birdc not found (Debian package bird2)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(render_bird(self.speakers, port=self.port))
        subprocess.run([bird, "-p", "-c", str(self.config)], check=True, capture_output=True)  # parse only
        self._log = open(self.log_path, "ab")  # noqa: SIM115  (closed in stop())
        self.proc = subprocess.Popen([bird, "-f", "-c", str(self.config), "-s", self.socket,
                                      "-P", str(self.workdir / "bird.pid")],
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        _wait(lambda: self.proc is not None and (self.proc.poll() is not None or self._status_ok()),
              "BIRD's control socket", timeout)
        if self.proc.poll() is not None:
            raise RuntimeError(f"bird exited: {self.log()}")
        return self

    def birdc(self, *command: str) -> str:
        birdc = birdc_binary()
        assert birdc is not None
        done = subprocess.run([birdc, "-s", self.socket, *command], capture_output=True, text=True, timeout=10)
        return done.stdout

    def _status_ok(self) -> bool:
        return os.path.exists(self.socket) and "Daemon is up" in self.birdc("show", "status")

    def routes(self, protocol: str | None = None) -> set[str]:
        """Prefixes in BIRD's table (from one BGP protocol when named): `birdc show route`."""
        out = self.birdc("show", "route", *(("protocol", protocol) if protocol else ()))
        found: set[str] = set()
        for line in out.splitlines():
            word = line.split(maxsplit=1)[0] if line.strip() and not line[0].isspace() else ""
            if "/" in word:
                try:
                    found.add(str(ipaddress.ip_network(word, strict=False)))
                except ValueError:
                    continue
        return found

    def established(self, protocol: str) -> bool:
        return "Established" in self.birdc("show", "protocols", protocol)

    def established_since(self, protocol: str) -> float | None:
        """When the session with `protocol` became Established, in seconds of BIRD's day (None when
        it is not Established). BIRD converts its monotonic timestamp to wall-clock time on every
        `show protocols`, so one unbroken session reads a millisecond apart from call to call; a
        flap moves it by at least BIRD's error-wait time (a second or more): compare with
        `same_session`."""
        for line in self.birdc("show", "protocols", protocol).splitlines():
            fields = line.split()
            if fields[:1] == [protocol] and fields[-1:] == ["Established"] and len(fields) >= 6:
                hours, minutes, seconds = fields[-2].split(":")
                return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        _stop(self.proc)
        if self._log is not None:
            self._log.close()


class ExaBGPProcess:
    """One PoP's ExaBGP, with our agent as its API process."""

    def __init__(self, workdir: Path, speaker: Speaker, *, agent: Sequence[str], router_port: int,
                 env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.speaker = speaker
        self.config = workdir / f"exabgp-{speaker.pop}.conf"
        self.log_path = workdir / f"exabgp-{speaker.pop}.log"
        self.agent = list(agent)
        self.router_port = router_port
        self.env = env or exabgp_env()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> ExaBGPProcess:
        exabgp = exabgp_binary()
        if not exabgp:
            raise FileNotFoundError("exabgp not found (pip install exabgp, see requirements-dev.txt)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(render_exabgp(self.speaker, agent=self.agent, router_port=self.router_port))
        self._log = open(self.log_path, "ab")  # noqa: SIM115  (closed in stop())
        self.proc = subprocess.Popen([exabgp, str(self.config)], cwd=self.workdir, env=self.env,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def agent_pids(self) -> list[int]:
        """The anycast agent(s) ExaBGP runs now: its live children whose command line names our module."""
        if self.proc is None:
            return []
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                status = (entry / "status").read_text()
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            ppid = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:")), 0)
            if ppid == self.proc.pid and "steering.agents.exabgp" in cmdline and "State:\tZ" not in status:
                found.append(int(entry.name))
        return found

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        # ExaBGP ends its API processes itself; a group-wide SIGTERM would race it into respawning one.
        _stop(self.proc, leader_first=True)
        if self._log is not None:
            self._log.close()


def same_session(before: float | None, after: float | None) -> bool:
    """Two `Bird.established_since` readings of one unbroken session (see there)."""
    return before is not None and after is not None and abs(before - after) < 0.25


def speakers_for(pop_slugs: Sequence[str], *, first_address: int = 2) -> list[Speaker]:
    """127.0.0.2, .3, ... and AS 65101, 65102, ... in the order given."""
    return [Speaker(slug, f"127.0.0.{first_address + i}", FIRST_POP_AS + i) for i, slug in enumerate(pop_slugs)]
