"""The PowerDNS remote-backend endpoint (HTTP connector, `post=1,post_json=1`) as a raw ASGI app.

PowerDNS POSTs `{"method": ..., "parameters": {...}}` to `<url>/<method>` (our URL ends in
`/dns`) and reads `{"result": ...}`. Raw ASGI rather than a framework: a lookup is a dict probe
and a random pick over the in-memory snapshot, so a framework would be most of its cost.

Routes:
- POST /dns, /dns/<method>   a remote-backend call. Bodies over MAX_BODY_BYTES (64 KiB; PowerDNS
                             sends a few hundred bytes) are 413; a body that is not a JSON object
                             with a string `method` and an object `parameters` is 400.
- GET  /healthz              snapshot version and age (503 until there is a snapshot), and what
                             the agent says about the control plane.
- GET  /stats                lookup latency percentiles measured here, per call (bench/dns_bench.py).
- POST /stats/reset          starts a new latency window. Only with `Authorization: Bearer <the
                             agent's token>` (the same token the agent holds): 401 without it, 403
                             when the app was given no token. A GET cannot reset anything.
Everything else is 404 (a wrong method on a known path 405). Standard library only: no Django.
"""

from __future__ import annotations

import hmac
import json
import random
import time
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from steering.gslb import policy
from steering.gslb.counters import AnswerCounter

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# PowerDNS's remote-backend calls are a few hundred bytes; 64 KiB is generous and bounds memory.
MAX_BODY_BYTES = 64 * 1024
BACKEND_PREFIX = "/dns"
# Parameters the policy reads as text: anything else there is malformed (400), not a crash (500).
_TEXT_PARAMETERS = ("qname", "qtype", "remote", "real-remote", "local", "name")

_FALSE = b'{"result":false}'
_TRUE = b'{"result":true}'
_HEADERS = [(b"content-type", b"application/json")]


class BadRequest(Exception):
    """The request is not a remote-backend call (answered 400 with this message)."""


@dataclass
class SnapshotHolder:
    """The current snapshot; replaced whole (one reference assignment) by the agent's thread."""

    current: policy.Snapshot | None = None
    built_at: float = 0.0


class LatencyRecorder:
    """The last `size` lookup durations (seconds) in a ring; percentiles on demand."""

    def __init__(self, size: int = 200_000) -> None:
        self.size = size
        self.reset()

    def reset(self) -> None:
        self._ring = array("d", bytes(8 * self.size))
        self.count = 0

    def add(self, seconds: float) -> None:
        self._ring[self.count % self.size] = seconds
        self.count += 1

    def summary(self) -> dict[str, Any]:
        n = min(self.count, self.size)
        values = sorted(self._ring[:n])
        if not values:
            return {"lookups": 0}

        def pct(p: float) -> float:
            return round(values[min(n - 1, int(p * n))] * 1e6, 1)

        return {"lookups": self.count, "p50_us": pct(0.50), "p90_us": pct(0.90), "p99_us": pct(0.99),
                "max_us": round(values[-1] * 1e6, 1)}


def _domain_info(zone: policy.Zone) -> dict[str, Any]:
    return {"id": zone.id, "zone": zone.name, "kind": "native", "serial": zone.serial, "notified_serial": 0,
            "last_check": 0, "masters": []}


def parse_call(body: bytes) -> tuple[str, dict[str, Any]]:
    """(method in lower case, parameters) of a remote-backend call; BadRequest when malformed."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise BadRequest("the body is not JSON") from exc
    if not isinstance(message, dict):
        raise BadRequest("the body is not a JSON object")
    method = message.get("method")
    if not isinstance(method, str) or not method or len(method) > 64:
        raise BadRequest("`method` must be a name")
    params = message.get("parameters")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise BadRequest("`parameters` must be an object")
    for key in _TEXT_PARAMETERS:
        if params.get(key) is not None and not isinstance(params[key], str):
            raise BadRequest(f"`parameters.{key}` must be a string")
    return method.lower(), params


def _bearer(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"authorization":
            kind, _, credential = value.partition(b" ")
            return credential.strip() if kind.lower() == b"bearer" else None
    return None


class RemoteBackendApp:
    """`admin_token`: the bearer token that may reset /stats (None: nobody may).
    `status`: extra fields for /healthz (the agent's view of the control plane)."""

    def __init__(self, holder: SnapshotHolder, counter: AnswerCounter, latency: LatencyRecorder | None = None,
                 rng: random.Random | None = None, *, admin_token: str | None = None,
                 status: Callable[[], dict[str, Any]] | None = None) -> None:
        self.holder = holder
        self.counter = counter
        self.latency = latency or LatencyRecorder()
        self.rng = rng or random.Random()
        self._admin_token = admin_token.encode() if admin_token else None
        self._status = status

    def handle(self, body: bytes) -> bytes:
        """One remote-backend call; unknown or unsupported methods answer `{"result": false}`.
        Raises BadRequest when the body is not a remote-backend call at all."""
        method, params = parse_call(body)
        snapshot = self.holder.current
        if method == "lookup":
            if snapshot is None:
                return _FALSE
            answer = policy.lookup(snapshot, params.get("qname") or "", params.get("qtype") or "",
                                   remote=params.get("remote"), real_remote=params.get("real-remote"), rng=self.rng)
            if answer.service_id is not None and answer.regions:
                self.counter.add(answer.service_id, answer.regions)
            return json.dumps({"result": [r.as_remote() for r in answer.records]}, separators=(",", ":")).encode()
        if method == "initialize":
            return _TRUE
        if method == "getdomaininfo" and snapshot is not None:
            zone = snapshot.zones.get(policy.canonical_name(params.get("name") or ""))
            return json.dumps({"result": _domain_info(zone)}).encode() if zone else _FALSE
        if method == "getalldomains" and snapshot is not None:
            return json.dumps({"result": [_domain_info(z) for z in snapshot.zones.values()]}).encode()
        # getAllDomainMetadata, getDomainMetadata, getDomainKeys, ...: nothing to say (no DNSSEC, no metadata).
        return _FALSE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if path == BACKEND_PREFIX or path.startswith(BACKEND_PREFIX + "/"):
            if method != "POST":
                await self._error(send, 405, "remote-backend calls are POSTs")
                return
            body = await self._read_body(scope, receive, send)
            if body is None:
                return
            started = time.perf_counter()
            try:
                payload = self.handle(body)
            except BadRequest as exc:
                await self._error(send, 400, str(exc))
                return
            self.latency.add(time.perf_counter() - started)
            await self._send(send, 200, payload)
        elif path == "/healthz" and method in ("GET", "HEAD"):
            snap = self.holder.current
            await self._send(send, 200 if snap else 503, json.dumps({
                "snapshot_version": snap.version if snap else None,
                "snapshot_age_seconds": round(time.time() - self.holder.built_at, 3) if snap else None,
                "services": len(snap.services) if snap else 0,
                **(self._status() if self._status else {}),
            }).encode())
        elif path == "/stats" and method in ("GET", "HEAD"):
            if b"reset" in scope.get("query_string", b""):
                await self._error(send, 405, "a GET does not reset: POST /stats/reset with "
                                             "Authorization: Bearer <the agent token>")
                return
            await self._send(send, 200, json.dumps(self.latency.summary()).encode())
        elif path == "/stats/reset":
            if method != "POST":
                await self._error(send, 405, "POST /stats/reset")
                return
            if await self._read_body(scope, receive, send) is None:
                return
            given = _bearer(scope)
            if self._admin_token is None:
                await self._error(send, 403, "this server was started without a token: nobody may reset")
            elif given is None or not hmac.compare_digest(given, self._admin_token):
                await self._error(send, 401, "send Authorization: Bearer <the agent token>", bearer=True)
            else:
                summary = self.latency.summary()
                self.latency.reset()
                await self._send(send, 200, json.dumps(summary).encode())
        else:
            await self._send(send, 404, _FALSE)

    async def _read_body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The request body, or None once a 413 was sent (or the client went away)."""
        for name, value in scope.get("headers", ()):
            if name.lower() == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await self._error(send, 400, "bad Content-Length")
                    return None
                if declared > MAX_BODY_BYTES:
                    await self._error(send, 413, f"bodies are limited to {MAX_BODY_BYTES} bytes")
                    return None
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await receive()
            if event["type"] == "http.disconnect":
                return None
            chunk = event.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:  # chunked, or more than it declared
                await self._error(send, 413, f"bodies are limited to {MAX_BODY_BYTES} bytes")
                return None
            chunks.append(chunk)
            if not event.get("more_body", False):
                return b"".join(chunks)

    @classmethod
    async def _error(cls, send: Send, status: int, detail: str, *, bearer: bool = False) -> None:
        extra = [(b"www-authenticate", b"Bearer")] if bearer else []
        await cls._send(send, status, json.dumps({"result": False, "error": detail}).encode(), extra)

    @staticmethod
    async def _send(send: Send, status: int, payload: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [*_HEADERS, (b"content-length", str(len(payload)).encode()), *(extra or [])]})
        await send({"type": "http.response.body", "body": payload})
