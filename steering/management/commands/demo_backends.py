"""Serve the demo fleet's backends on loopback, so the prober sees real listeners.

One asyncio process listens on every backend's address:port (127.1.x.y, loopback only) and
answers any HTTP request `200 OK` with the backend's name; an L4 pool's TCP checks just connect.
The demo traffic generator asks for `?ms=N` (answer after N ms, so sessions stay open long
enough to see, and a drain has something to wait for) and `?status=N` (answer with that status).
`make run` starts it beside the web server and workers. Backends outside loopback are never
served (the probe allowlist keeps them out of the fleet anyway).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import signal
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from django.core.management.base import BaseCommand

from steering.models import Backend

MAX_DELAY_MS = 60_000


def _response(name: str, status: int = 200) -> bytes:
    body = f"{'ok' if status < 400 else 'error'} {name}\n".encode()
    reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Status"
    return (b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (status, reason.encode(), len(body), body))


def _asked(request: bytes) -> tuple[float, int]:
    """(delay in seconds, status) from the request line's query: ?ms=800&status=503."""
    try:
        target = request.split(b"\r\n", 1)[0].split(b" ")[1].decode("latin-1")
        query = parse_qs(urlsplit(target).query)
        delay = min(max(int(query.get("ms", ["0"])[0]), 0), MAX_DELAY_MS) / 1000
        status = int(query.get("status", ["200"])[0])
        return delay, status if 100 <= status <= 599 else 200
    except (IndexError, ValueError):
        return 0.0, 200


class _Http(asyncio.Protocol):
    def __init__(self, name: str) -> None:
        self.name = name
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" in self.buffer and self.transport is not None:
            delay, status = _asked(self.buffer)
            self.buffer = b""
            answer = _response(self.name, status)
            if delay:
                asyncio.get_running_loop().call_later(delay, self._answer, answer)
            else:
                self._answer(answer)

    def _answer(self, answer: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(answer)
            self.transport.close()


class Command(BaseCommand):
    help = "Listen on every loopback backend's address:port and answer health checks (the demo fleet)."

    def handle(self, *args: Any, **options: Any) -> None:
        endpoints = []
        for name, address, port in Backend.objects.values_list("name", "address", "port"):
            try:
                if ipaddress.ip_address(address).is_loopback:
                    endpoints.append((name, address, port))
            except ValueError:
                continue  # names are not served: the demo uses addresses
        asyncio.run(self._serve(endpoints))

    async def _serve(self, endpoints: list[tuple[str, str, int]]) -> None:
        loop = asyncio.get_running_loop()
        servers = []
        for name, address, port in endpoints:
            try:
                servers.append(await loop.create_server(functools.partial(_Http, name), address, port,
                                                        reuse_address=True))
            except OSError as exc:
                self.stderr.write(f"cannot listen on {address}:{port} ({name}): {exc}")
        self.stdout.write(f"demo backends: listening on {len(servers)} of {len(endpoints)} loopback endpoints")
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        for server in servers:
            server.close()
