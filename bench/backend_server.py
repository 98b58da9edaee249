"""Many loopback HTTP backends in one process: N listeners on 127.10.x.y:PORT (uvloop).

Answers every request `200 OK` and closes; counts requests by the first path segment
(`/ours...` vs `/haproxy...`) so the bench can tell the two probers apart.
Commands on stdin, one per line, each answered with one JSON line on stdout:
  stats            -> {"ours": n, "haproxy": n, "other": n}
  kill I           -> closes listener I (new connections are refused); {"killed": I, "t": unix}
  revive I         -> listens again; {"revived": I}
  quit
It exits by itself after --max-seconds, so no load outlives the bench.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import uvloop

COUNTS = {"ours": 0, "haproxy": 0, "other": 0}
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK"


def address(i: int) -> str:
    return f"127.10.{i // 250}.{i % 250 + 1}"


class Http(asyncio.Protocol):
    __slots__ = ("transport", "buf")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if b"\r\n\r\n" not in self.buf and b"\n\n" not in self.buf:
            return
        path = self.buf.split(b" ", 2)[1] if self.buf.count(b" ") >= 2 else b""
        key = "ours" if path.startswith(b"/ours") else "haproxy" if path.startswith(b"/haproxy") else "other"
        COUNTS[key] += 1
        self.transport.write(RESPONSE)  # type: ignore[attr-defined]
        self.transport.close()


async def main(count: int, port: int, max_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    servers: dict[int, asyncio.AbstractServer] = {}

    async def listen(i: int) -> None:
        servers[i] = await loop.create_server(Http, address(i), port, backlog=256, reuse_address=True)

    for i in range(count):
        await listen(i)
    print(json.dumps({"ready": count}), flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    deadline = loop.time() + max_seconds
    while loop.time() < deadline:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=deadline - loop.time())
        except TimeoutError:
            break
        words = line.decode().split()
        if not words or words[0] == "quit":
            break
        if words[0] == "stats":
            out: dict[str, object] = dict(COUNTS)
        elif words[0] == "kill":
            i = int(words[1])
            servers.pop(i).close()
            out = {"killed": i, "t": time.time()}
        elif words[0] == "revive":
            await listen(int(words[1]))
            out = {"revived": int(words[1])}
        else:
            out = {"error": line.decode()}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--max-seconds", type=float, default=600)
    args = parser.parse_args()
    uvloop.run(main(args.count, args.port, args.max_seconds))
