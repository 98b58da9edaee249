"""The hot path: plain tcp and http checks on raw non-blocking sockets driven by loop callbacks.

No task, future or Protocol object per probe: a socket, a connect, one send, reads until the
status line and headers (and the body match, if any) are in, then an abortive close (SO_LINGER
0, as HAProxy closes its checks: no TIME_WAIT pile-up at thousands of probes per second).
One timer per probe bounds it. https goes through checks.py (asyncio's TLS transport).
Measured in bench/README.md: this path is what gets a probe down to tens of microseconds.
Once started, a check reports exactly once whatever goes wrong: an exception in one of its
steps is its own failure (`_crashed`), never a lost result that would hold its shard up.
"""

from __future__ import annotations

import _socket
import asyncio
import errno
import functools
import ipaddress
import socket
import struct
import time
from collections.abc import Callable, Sequence

from steering.health.httpbody import contains
from steering.health.target import ProbeResult, ProbeTarget

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024
_LINGER_ABORT = struct.pack("ii", 1, 0)
_STREAM_NONBLOCK = socket.SOCK_STREAM | socket.SOCK_NONBLOCK


@functools.lru_cache(maxsize=65536)
def literal_verdict(address: str, networks: tuple[Network, ...]) -> tuple[str | None, str]:
    """(ip, "") for an IP literal inside the allowlist, (None, why) outside, ("", "") for a name.
    Cached: the same few thousand addresses are checked every interval."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "", ""
    if any(ip.version == net.version and ip in net for net in networks):
        return ip.compressed, ""
    return None, f"{ip.compressed} is outside the probe allowlist"


# address -> verdict per allowlist, found by the allowlist object's identity (each shard passes
# one tuple for all its probes) and then by its value (every shard has a new tuple): hashing the
# networks for literal_verdict's key on every probe cost more than the check itself. Keeping the
# allowlist object in the entry keeps its id from being reused.
_by_id: dict[int, tuple[object, dict[str, tuple[str | None, str]]]] = {}
_by_value: dict[tuple[str, ...], dict[str, tuple[str | None, str]]] = {}


def _verdict(address: str, networks: Sequence[Network]) -> tuple[str | None, str]:
    if not isinstance(networks, tuple):  # a list could change under the cache
        return literal_verdict(address, tuple(networks))
    entry = _by_id.get(id(networks))
    if entry is None or entry[0] is not networks:
        if len(_by_id) >= 64:
            _by_id.clear()
        value = tuple(str(n) for n in networks)
        if value not in _by_value:
            if len(_by_value) >= 16:
                _by_value.clear()
            _by_value[value] = {}
        entry = _by_id[id(networks)] = (networks, _by_value[value])
    cache = entry[1]
    verdict = cache.get(address)
    if verdict is None:
        if len(cache) >= 65536:
            cache.clear()
        verdict = cache[address] = literal_verdict(address, networks)
    return verdict


def expected_text(target: ProbeTarget) -> str:
    return ",".join(f"{lo}-{hi}" if lo != hi else str(lo) for lo, hi in target.expected_status)


class RawCheck:
    __slots__ = ("loop", "target", "due", "started", "t0", "on_done", "sock", "fd", "timer", "buf", "status",
                 "header_end", "want", "request", "finished", "io")

    def __init__(self, loop: asyncio.AbstractEventLoop, target: ProbeTarget, due: float,
                 on_done: Callable[[ProbeResult], None], request: bytes) -> None:
        self.loop, self.target, self.due, self.on_done, self.request = loop, target, due, on_done, request
        self.started = time.time()
        self.t0 = time.perf_counter()
        self.buf = b""
        self.status = 0
        self.header_end = -1
        self.want = target.body_match.encode() if target.body_match and target.method != "HEAD" else None
        self.finished = False
        self.sock: _socket.socket | None = None
        self.fd = -1
        self.timer: asyncio.TimerHandle | None = None
        self.io = 0  # 1: a writer is registered for fd, 2: a reader (each add/remove costs a loop call)

    def start(self, ip: str, *, own_timer: bool = True) -> None:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        try:
            # The C socket type, non-blocking from birth: no Python-level socket wrapper to build
            # and tear down, no setblocking() system call.
            sock = _socket.socket(family, _STREAM_NONBLOCK)
        except OSError as exc:
            self.finish(False, "error", exc.strerror or str(exc))
            return
        self.sock, self.fd = sock, sock.fileno()
        try:
            err = sock.connect_ex((ip, self.target.port))
            if err not in (0, errno.EINPROGRESS):
                self.fail_errno(err)
                return
            if own_timer:
                self.timer = self.loop.call_later(self.target.timeout, self.on_timeout)
            self.loop.add_writer(self.fd, self.on_connected)
            self.io = 1
        except Exception as exc:
            self._crashed(exc)

    def _crashed(self, exc: Exception) -> None:
        self.finish(False, "error", f"the probe could not run: {type(exc).__name__}: {exc}"[:300])

    def fail_errno(self, err: int) -> None:
        if err == errno.ECONNREFUSED:
            self.finish(False, "refused", "connection refused")
        elif err in (errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH):
            self.finish(False, "error", errno.errorcode.get(err, str(err)))
        else:
            self.finish(False, "error", f"{errno.errorcode.get(err, err)}")

    def on_timeout(self) -> None:
        self.timer = None
        self.finish(False, "timeout", "timed out")

    def on_connected(self) -> None:
        assert self.sock is not None
        try:
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.fail_errno(err)
                return
            if self.target.kind == "tcp":
                self.finish(True, "ok", "")
                return
            try:
                self.sock.send(self.request)  # a few hundred bytes: always fits an empty send buffer
            except OSError as exc:
                self.fail_errno(exc.errno or 0)
                return
            # The reader goes on before the writer comes off: uvloop keeps one poll handle per fd
            # while either is registered, so the switch is one epoll change instead of a handle
            # torn down and built again.
            self.loop.add_reader(self.fd, self.on_readable)
            self.loop.remove_writer(self.fd)
            self.io = 2
        except Exception as exc:
            self._crashed(exc)

    def on_readable(self) -> None:
        assert self.sock is not None
        try:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as exc:
                self.fail_errno(exc.errno or 0)
                return
            if not data:
                if self.status:
                    self.verdict()
                else:
                    self.finish(False, "error", "connection closed before a response")
                return
            self.buf += data
            if self.header_end < 0:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buf) > MAX_HEAD:
                        self.finish(False, "error", "response headers too long")
                    return
                self.header_end = end + 4
                parts = self.buf[: self.buf.find(b"\r\n")].split(b" ", 2)
                if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
                    self.finish(False, "error", f"not an HTTP response: {self.buf[:60]!r}")
                    return
                self.status = int(parts[1])
            if self.want is None or self.want in self.buf[self.header_end:] or len(self.buf) - self.header_end >= MAX_BODY:
                self.verdict()
        except Exception as exc:
            self._crashed(exc)

    def verdict(self) -> None:
        t = self.target
        if not any(lo <= self.status <= hi for lo, hi in t.expected_status):
            self.finish(False, "status", f"status {self.status}, expected {expected_text(t)}")
        elif self.want is not None and not contains(self.want, self.buf[:self.header_end], self.buf[self.header_end:]):
            self.finish(False, "body", f"body does not contain {t.body_match[:60]!r}")
        else:
            self.finish(True, "ok", "")

    def finish(self, ok: bool, result: str, error: str) -> None:
        if self.finished:
            return
        self.finished = True
        try:
            if self.timer is not None:
                self.timer.cancel()
            if self.sock is not None:
                if self.io == 2:
                    self.loop.remove_reader(self.fd)
                elif self.io == 1:
                    self.loop.remove_writer(self.fd)
                self.io = 0
                try:
                    self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ABORT)
                except OSError:
                    pass
                self.sock.close()
        finally:  # the result is reported even if letting go of the socket failed
            latency = (time.perf_counter() - self.t0) * 1000.0
            self.on_done(ProbeResult(self.target.backend_id, ok, result, latency, self.due, self.started,
                                     time.time(), status=self.status or None, error=error, check=self.target.kind))


def start_check(loop: asyncio.AbstractEventLoop, target: ProbeTarget, networks: Sequence[Network], due: float,
                on_done: Callable[[ProbeResult], None], request: bytes, *, own_timer: bool = True) -> RawCheck | None:
    """Start a tcp/http check on the fast path; None when it needs the general path (TLS, a name).

    `own_timer=False`: the caller times the check out (expire_checks), e.g. one timer for a group
    of checks started together, instead of one timer per check."""
    if target.kind == "https":
        return None
    ip, why = _verdict(target.address, networks)
    if ip == "":
        return None
    check = RawCheck(loop, target, due, on_done, request)
    if ip is None:
        check.finish(False, "allowlist", why)
    else:
        check.start(ip, own_timer=own_timer)
    return check


def expire_checks(checks: Sequence[RawCheck]) -> None:
    """The timeout of checks started together with own_timer=False: those still running fail."""
    for check in checks:
        if not check.finished:
            check.on_timeout()
