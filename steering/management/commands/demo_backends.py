"""Serve the demo fleet's backends on loopback, so the prober sees real listeners.

One asyncio process listens on every backend's address:port (127.1.x.y, loopback only) and
answers any HTTP request `200 OK` with the backend's name; an L4 pool's TCP checks just connect.
`make run` starts it beside the web server and workers. Backends outside loopback are never
served (the probe allowlist keeps them out of the fleet anyway).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import signal
from typing import Any

from django.core.management.base import BaseCommand

from steering.models import Backend


def _response(name: str) -> bytes:
    body = f"ok {name}\n".encode()
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (
        len(body), body)


class _Http(asyncio.Protocol):
    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" in self.buffer and self.transport is not None:
            self.transport.write(self.answer)
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
            answer = _response(name)
            try:
                servers.append(await loop.create_server(functools.partial(_Http, answer), address, port,
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
