"""The checks themselves: tcp connect, http and https (GET or HEAD), over asyncio. No Django.

A small HTTP/1.1 client written as an asyncio Protocol, one request per connection with
`Connection: close`: it reads the status line and headers, and only as much body as the body
match needs (64 KiB at most), then closes. It does no pooling, redirects, cookies or
decompression: a health check wants none of them, and skipping them is what makes a probe
cost tens of microseconds of CPU (bench/README.md compares it with HAProxy's own checks).

Every check is bounded by its own timeout, so a hung backend costs only its own time.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import ssl
import time
from collections.abc import Sequence
from urllib.parse import quote

from steering.health.fastcheck import start_check
from steering.health.httpbody import dechunk, is_chunked
from steering.health.target import ProbeResult, ProbeTarget

MAX_BODY = 64 * 1024
MAX_HEAD = 16 * 1024
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_TLS: dict[bool, ssl.SSLContext] = {}


def tls_context(verify: bool) -> ssl.SSLContext:
    """One context per mode, built once: creating a context loads the CA store (milliseconds)."""
    ctx = _TLS.get(verify)
    if ctx is None:
        ctx = ssl.create_default_context()
        if not verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        _TLS[verify] = ctx
    return ctx


class _HttpCheck(asyncio.Protocol):
    def __init__(self, request: bytes, want_body: bytes | None, done: asyncio.Future[tuple[int, bytes]]) -> None:
        self.request = request
        self.want_body = want_body
        self.done = done
        self.buf = bytearray()
        self.status = 0
        self.header_end = -1
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.header_end < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self._finish(ValueError("response headers too long"))
                return
            self.header_end = end + 4
            line = bytes(self.buf[: self.buf.find(b"\r\n")])
            parts = line.split(b" ", 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
                self._finish(ValueError(f"not an HTTP response: {line[:60]!r}"))
                return
            self.status = int(parts[1])
            if self.want_body is None:
                self._finish(None)
                return
        if self.want_body is not None and (
            self.want_body in self.buf[self.header_end:] or len(self.buf) - self.header_end >= MAX_BODY
        ):
            self._finish(None)

    def eof_received(self) -> bool | None:
        self._finish(None if self.status else ConnectionError("connection closed before a response"))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(exc or (None if self.status else ConnectionError("connection closed before a response")))

    def _finish(self, exc: BaseException | None) -> None:
        if not self.done.done():
            if exc is None:
                body = bytes(self.buf[self.header_end:]) if self.header_end >= 0 else b""
                if self.want_body is not None and self.want_body not in body and is_chunked(bytes(self.buf[:self.header_end])):
                    body = dechunk(body)
                self.done.set_result((self.status, body))
            else:
                self.done.set_exception(exc)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class _Connect(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


# RFC 3986 path and query: unreserved characters (always kept by quote), sub-delims, ":", "@",
# "/" and "?"; "%" stays for escapes already there (a "%" that starts none is escaped first).
# Everything else (non-ASCII as UTF-8, spaces, controls, "#") is percent-encoded.
PATH_SAFE = "/?:@!$&'()*+,;=%"
_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_HEADER_VALUE = re.compile(r"[\x21-\x7e]+")


def request_target(path: str) -> str:
    """The monitor's path as it goes on the request line: percent-encoded per RFC 3986."""
    return quote(_STRAY_PERCENT.sub("%25", path), safe=PATH_SAFE)


def build_request(target: ProbeTarget) -> bytes:
    """The request bytes. Raises ValueError for what cannot be sent (a Host with spaces or
    controls: header injection); the engine counts that as this target's failed probe."""
    host = target.host_header or (f"[{target.address}]" if ":" in target.address else target.address)
    if not _HEADER_VALUE.fullmatch(host):
        raise ValueError(f"the Host header {host[:60]!r} cannot be sent: it must be printable ASCII without spaces")
    return (f"{target.method} {request_target(target.path)} HTTP/1.1\r\nHost: {host}\r\n"
            "User-Agent: steering-prober/1\r\nAccept: */*\r\nConnection: close\r\n\r\n").encode("ascii")


def allowed(ip: str, networks: Sequence[Network]) -> bool:
    addr = ipaddress.ip_address(ip)
    return any(addr.version == net.version and addr in net for net in networks)


async def resolve_allowed(address: str, port: int, networks: Sequence[Network]) -> tuple[str | None, str]:
    """The address to connect to, or (None, why not). A name is resolved once per probe
    (steering.resolve) and EVERY address it gives must be allowed; the probe then connects to the
    address that was checked, never to a second lookup's answer (no DNS rebinding)."""
    from steering.resolve import Unresolvable, resolve_host_async

    try:
        ips = await resolve_host_async(address)
    except Unresolvable as exc:
        return None, str(exc)
    outside = [i for i in ips if not allowed(i, networks)]
    if outside:
        shown = outside[0] if outside[0] == address else f"{address} resolves to {outside[0]},"
        return None, f"{shown} outside the probe allowlist"
    return ips[0], ""


def _classify(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, TimeoutError):
        return "timeout", "timed out"
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return "tls", f"TLS: {getattr(exc, 'verify_message', '') or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "refused", "connection refused"
    if isinstance(exc, OSError):
        return "error", exc.strerror or str(exc) or type(exc).__name__
    return "error", str(exc) or type(exc).__name__


async def _http(target: ProbeTarget, ip: str) -> tuple[int, bytes]:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[int, bytes]] = loop.create_future()
    want = target.body_match.encode() if target.body_match and target.method != "HEAD" else None
    tls = tls_context(target.tls_verify) if target.kind == "https" else None
    sni = (target.host_header or target.address) if tls is not None else None
    try:
        transport, _ = await loop.create_connection(
            lambda: _HttpCheck(build_request(target), want, done), ip, target.port, ssl=tls, server_hostname=sni,
        )
    except BaseException:
        done.cancel()  # timed out mid-connect: nobody will await the verdict, so it must not hold an error
        raise
    try:
        return await done
    finally:
        if not transport.is_closing():
            transport.abort()


def judge(target: ProbeTarget, status: int, body: bytes) -> tuple[bool, str, str]:
    """(ok, result, error) for an HTTP answer. HEAD has no body, so a body match is not applied."""
    if not any(low <= status <= high for low, high in target.expected_status):
        wanted = ",".join(f"{lo}-{hi}" if lo != hi else str(lo) for lo, hi in target.expected_status)
        return False, "status", f"status {status}, expected {wanted}"
    if target.body_match and target.method != "HEAD" and target.body_match.encode() not in body:
        return False, "body", f"body does not contain {target.body_match[:60]!r}"
    return True, "ok", ""


def failed(target: ProbeTarget, due: float, exc: BaseException, started: float | None = None) -> ProbeResult:
    """The result of a probe that could not be built or run (a bad monitor or backend): a failure
    of this target alone, with what went wrong as its evidence."""
    now = time.time()
    return ProbeResult(target.backend_id, False, "error", 0.0, due, now if started is None else started, now,
                       error=f"the probe could not run: {type(exc).__name__}: {exc}"[:300], check=target.kind)


async def probe(target: ProbeTarget, networks: Sequence[Network], *, due: float) -> ProbeResult:
    """Run one check, bounded by the target's timeout. Never raises (but for cancellation).

    tcp and http to an address go through fastcheck's raw-socket path; https and names here."""
    try:
        return await _probe(target, networks, due=due)
    except Exception as exc:  # a bad target fails its own probe and nothing else
        return failed(target, due, exc)


async def _probe(target: ProbeTarget, networks: Sequence[Network], *, due: float) -> ProbeResult:
    loop = asyncio.get_running_loop()
    fast: asyncio.Future[ProbeResult] = loop.create_future()
    if start_check(loop, target, networks, due, fast.set_result, build_request(target)) is not None:
        return await fast
    started = time.time()
    t0 = time.perf_counter()
    status: int | None = None
    check = target.kind
    try:
        async with asyncio.timeout(target.timeout):  # a slow resolver counts against the check's time
            ip, why = await resolve_allowed(target.address, target.port, networks)
        if ip is None:
            return ProbeResult(target.backend_id, False, "allowlist", 0.0, due, started, time.time(),
                               error=why, check=check)
        async with asyncio.timeout(target.timeout):
            if target.kind == "tcp":
                transport, _ = await asyncio.get_running_loop().create_connection(_Connect, ip, target.port)
                transport.close()
                ok, result, error = True, "ok", ""
            else:
                status, body = await _http(target, ip)
                ok, result, error = judge(target, status, body)
    except (TimeoutError, OSError, ssl.SSLError, ValueError, ConnectionError) as exc:
        ok = False
        result, error = _classify(exc)
    latency = (time.perf_counter() - t0) * 1000.0
    return ProbeResult(target.backend_id, ok, result, latency, due, started, time.time(),
                       status=status, error=error, check=check)
