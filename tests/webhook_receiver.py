"""A real HTTP receiver for webhook tests: http.server on 127.0.0.1 (a free port) in a thread,
recording every request and answering with the status codes it is told to, in order."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # names in lower case (HTTP's are case-insensitive)
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    url: str
    requests: list[Received] = field(default_factory=list)
    # Status codes for the next requests, in order; once used up, `default` answers.
    script: list[int] = field(default_factory=list)
    default: int = 200

    def of_type(self, event_type: str) -> list[Received]:
        return [r for r in self.requests if r.headers.get("x-steering-event") == event_type]


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """What a receiver does (docs/operator-guide.md, "Notifications: webhooks"): HMAC-SHA256 of "<timestamp>.<body>", compared in constant time."""
    timestamp = headers["x-steering-timestamp"]
    expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["x-steering-signature"])


@contextmanager
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                state.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                code = state.script.pop(0) if state.script else state.default
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok" if code < 300 else b"receiver says no")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/steering"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
