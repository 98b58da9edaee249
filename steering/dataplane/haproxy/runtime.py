"""A small HAProxy Runtime API client over the admin unix socket (no Django).

One command per connection: HAProxy answers and closes, so a reply is everything read until EOF
and nothing can interleave with another caller's command.
"""

from __future__ import annotations

import csv
import io
import re
import socket
from dataclasses import dataclass

from steering.dataplane.haproxy.model import DRAIN, MAINT, READY

# srv_admin_state bits (HAProxy include/haproxy/server-t.h)
ADMF_FMAINT = 0x01   # forced maintenance (`set server state maint`, `disabled` in the config)
ADMF_IMAINT = 0x02   # inherited from a tracked server
ADMF_CMAINT = 0x04   # `disabled` in the config: stays set after `state ready`, so not "maint" by itself
ADMF_FDRAIN = 0x08   # forced drain
ADMF_IDRAIN = 0x10   # inherited drain
ADMF_RMAINT = 0x20   # DNS resolution failed


class RuntimeAPIError(Exception):
    """HAProxy refused a command or could not be reached."""


@dataclass(frozen=True)
class ServerState:
    backend: str
    name: str
    address: str
    port: int
    op_state: int        # 0 stopped, 1 starting, 2 running, 3 stopping
    admin_state: int     # ADMF_* bits
    weight: int          # srv_uweight: the weight we set
    initial_weight: int

    @property
    def state(self) -> str:
        """ready | drain | maint, as we drive it."""
        if self.admin_state & (ADMF_FMAINT | ADMF_IMAINT | ADMF_RMAINT):
            return MAINT
        if self.admin_state & (ADMF_FDRAIN | ADMF_IDRAIN):
            return DRAIN
        return READY


@dataclass(frozen=True)
class ServerStat:
    backend: str
    name: str
    scur: int            # current sessions
    stot: int            # sessions since start
    rate: int            # sessions over the last second
    hrsp_5xx: int        # HTTP 5xx responses since start (0 in TCP mode)
    status: str
    weight: int
    # Failed attempts since start (passive health): connection errors, broken responses, and the
    # attempts retried on this server or redispatched away from it.
    econ: int = 0
    eresp: int = 0
    wretr: int = 0
    wredis: int = 0
    lastchg: int = 0     # seconds since its status last changed (UP/DOWN)
    chkdown: int = 0     # times it went from UP to DOWN since start


class Runtime:
    def __init__(self, socket_path: str, timeout: float = 5.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def command(self, line: str) -> str:
        if "\n" in line or ";" in line:
            raise ValueError(f"one command at a time: {line!r}")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.socket_path)
                sock.sendall(line.encode() + b"\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as exc:
            raise RuntimeAPIError(f"HAProxy runtime API at {self.socket_path}: {exc}") from exc
        return b"".join(chunks).decode(errors="replace")

    def _expect(self, line: str, *ok: str) -> str:
        """Run a command whose success is an empty reply or one of `ok`; anything else is an error."""
        reply = self.command(line).strip()
        if reply and not any(reply.startswith(o) for o in ok):
            raise RuntimeAPIError(f"{line!r}: {reply}")
        return reply

    # --- reading -------------------------------------------------------------------------

    def show_servers_state(self, backend: str | None = None) -> list[ServerState]:
        reply = self.command(f"show servers state {backend}" if backend else "show servers state")
        lines = [x for x in reply.splitlines() if x.strip()]
        if not lines or not lines[0].strip().isdigit():
            raise RuntimeAPIError(f"show servers state {backend or ''}: {reply.strip()}")
        header: list[str] = []
        states = []
        for line in lines[1:]:
            if line.startswith("#"):
                header = line[1:].split()
                continue
            row = dict(zip(header, line.split(), strict=False))
            states.append(ServerState(
                backend=row["be_name"], name=row["srv_name"], address=row["srv_addr"],
                port=int(row.get("srv_port", "0") or 0), op_state=int(row["srv_op_state"]),
                admin_state=int(row["srv_admin_state"]), weight=int(row["srv_uweight"]),
                initial_weight=int(row["srv_iweight"]),
            ))
        return states

    def show_stat(self) -> list[ServerStat]:
        """Per-server counters (frontend and backend summary rows are left out)."""
        reply = self.command("show stat")
        if not reply.startswith("# "):
            raise RuntimeAPIError(f"show stat: {reply.strip()[:200]}")
        rows = csv.DictReader(io.StringIO(reply[2:]))

        def num(row: dict[str, str], key: str) -> int:
            value = row.get(key) or ""
            return int(value) if value.isdigit() else 0

        return [
            ServerStat(backend=r["pxname"], name=r["svname"], scur=num(r, "scur"), stot=num(r, "stot"),
                       rate=num(r, "rate"), hrsp_5xx=num(r, "hrsp_5xx"), status=r.get("status", ""),
                       weight=num(r, "weight"), econ=num(r, "econ"), eresp=num(r, "eresp"), wretr=num(r, "wretr"),
                       wredis=num(r, "wredis"), lastchg=num(r, "lastchg"), chkdown=num(r, "chkdown"))
            for r in rows
            if r.get("svname") not in ("FRONTEND", "BACKEND", None) and r.get("pxname")
        ]

    # --- writing -------------------------------------------------------------------------

    def set_state(self, backend: str, server: str, state: str) -> None:
        if state not in (READY, DRAIN, MAINT):
            raise ValueError(f"unknown server state {state!r}")
        self._expect(f"set server {backend}/{server} state {state}")

    def set_weight(self, backend: str, server: str, weight: int) -> None:
        if not 0 <= weight <= 256:
            raise ValueError(f"weight {weight} out of 0..256")
        self._expect(f"set server {backend}/{server} weight {weight}")

    def add_server(self, backend: str, server: str, address: str, port: int, *, weight: int,
                   backup: bool = False, extra: str = "") -> None:
        """A dynamic server: HAProxy registers it in maintenance; the caller enables it. `extra`:
        more server words (a pool's `check observe ...`); a dynamic server's check starts
        disabled, so it is enabled here."""
        from steering.dataplane.haproxy.render import server_address

        words = f"add server {backend}/{server} {server_address(address, port)} weight {weight}"
        words += (" backup" if backup else "") + (f" {extra}" if extra else "")
        self._expect(words, "New server registered.")
        if " check" in f" {extra}":
            self._expect(f"enable health {backend}/{server}")

    def shutdown_sessions(self, backend: str, server: str) -> None:
        self._expect(f"shutdown sessions server {backend}/{server}")

    def del_server(self, backend: str, server: str) -> None:
        """HAProxy deletes only a server in maintenance with no sessions left."""
        self._expect(f"del server {backend}/{server}", "Server deleted.")

    def set_addr(self, backend: str, server: str, address: str, port: int) -> None:
        reply = self.command(f"set server {backend}/{server} addr {address} port {port}").strip()
        if reply and "changed" not in reply and "no need" not in reply:
            raise RuntimeAPIError(f"set server {backend}/{server} addr: {reply}")

    def get_var(self, name: str) -> str | None:
        """A process-wide variable's value (`get var proc.x`), None when the config sets none."""
        reply = self.command(f"get var {name}").strip()
        if reply.startswith("Variable not found"):
            return None
        match = re.fullmatch(r"\S+: type=\S+ value=<(.*)>", reply, re.S)
        if match is None:
            raise RuntimeAPIError(f"get var {name}: {reply[:200]}")
        return match.group(1)

    def set_health(self, backend: str, server: str, health: str) -> None:
        """Force a checked server's health (`up` puts back a server its observe took out)."""
        if health not in ("up", "down", "stopping"):
            raise ValueError(f"unknown health {health!r}")
        self._expect(f"set server {backend}/{server} health {health}")

    def worker_pid(self) -> int:
        """The serving process's pid (`show info`): it changes on every reload and restart."""
        for line in self.command("show info").splitlines():
            if line.startswith("Pid:"):
                return int(line.split(":", 1)[1])
        raise RuntimeAPIError("show info: no Pid line")

    def backends(self) -> list[str]:
        """Every proxy with a backend side (`show backend`)."""
        return [x.strip() for x in self.command("show backend").splitlines() if x.strip() and not x.startswith("#")]
