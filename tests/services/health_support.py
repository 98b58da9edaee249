"""Real loopback backends for the health tests: an HTTP(S) server whose behaviour can be switched
(healthy, wrong status, wrong body, hang, dead), a self-signed certificate made at test time,
and Redis cleanup. Everything a test starts, it stops (context managers)."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support import free_port


class Backend:
    """An asyncio HTTP/1.1 server on 127.0.0.1 in its own thread.

    mode: "ok" (200, body "status: healthy"), "503", "404", "body" (200, other body),
    "chunked" (200, "status: healthy" sent chunked, split inside "healthy" across writes),
    "hang" (accepts, never answers). stop() closes the listener (connections are refused);
    start() listens again on the same port.
    """

    def __init__(self, port: int | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.port = port or free_port()
        self.tls = tls
        self.mode = "ok"
        self.requests: list[bytes] = []
        self.sni: list[str | None] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: asyncio.Server | None = None
        if tls is not None:
            tls.sni_callback = lambda sock, name, ctx: self.sni.append(name)  # type: ignore[assignment,misc]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests.append(head)
            if self.mode == "hang":
                await asyncio.sleep(3600)
            if self.mode == "chunked":
                writer.write(b"HTTP/1.1 200 X\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
                for part in (b"status: hea", b"lthy"):
                    writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                    await writer.drain()
                    await asyncio.sleep(0.01)  # separate segments, so the reader sees the split too
                writer.write(b"0\r\n\r\n")
                await writer.drain()
                return
            status, body = {"ok": (200, b"status: healthy"), "503": (503, b"busy"), "404": (404, b"nope"),
                            "body": (200, b"status: degraded")}[self.mode]
            writer.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                         % (status, len(body), body))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def start(self) -> Backend:
        async def listen() -> asyncio.Server:
            return await asyncio.start_server(self._handle, "127.0.0.1", self.port, ssl=self.tls, reuse_address=True)

        self.server = asyncio.run_coroutine_threadsafe(listen(), self.loop).result(5)
        return self

    def stop(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None

            async def close() -> None:
                server.close()
                for task in asyncio.all_tasks():
                    if task is not asyncio.current_task():
                        task.cancel()

            asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)

    def shutdown(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@contextmanager
def backends(n: int = 1, tls: ssl.SSLContext | None = None) -> Iterator[list[Backend]]:
    started = [Backend(tls=tls).start() for _ in range(n)]
    try:
        yield started
    finally:
        for b in started:
            b.shutdown()


def openssl() -> str:
    binary = shutil.which("openssl")
    if binary is None:  # a missing tool is a failure, never a skip
        pytest.fail("openssl is needed to make a self-signed certificate (apt-get install openssl)")
    return binary


@contextmanager
def self_signed_server_context() -> Iterator[ssl.SSLContext]:
    """A server TLS context with a certificate nobody signed (CN localhost, SAN 127.0.0.1)."""
    tmp = Path(tempfile.mkdtemp(prefix="steering-tls-"))
    try:
        subprocess.run(
            [openssl(), "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(tmp / "key.pem"), "-out", str(tmp / "cert.pem"), "-days", "1", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
            check=True, capture_output=True, timeout=30,
        )
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
        yield ctx
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def clean_probe_redis() -> None:
    """Drop the prober's keys (schedule, counters, samples, metrics) so tests do not see each other."""
    from steering import redis_keys
    from steering.redisconn import sync_client

    r = sync_client()
    for pattern in (f"{redis_keys.PROBE_PREFIX}*", f"{redis_keys.METRICS_PREFIX}*"):
        keys = list(r.scan_iter(match=pattern, count=1000))
        if keys:
            r.delete(*keys)
