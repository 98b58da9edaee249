"""The PowerDNS remote-backend endpoint (HTTP connector, `post=1,post_json=1`) as a raw ASGI app.

PowerDNS POSTs `{"method": ..., "parameters": {...}}` to `<url>/<method>` and reads
`{"result": ...}`. Raw ASGI rather than Django's request stack: a lookup is a dict probe and a
random pick over the in-memory snapshot, so the framework would be most of its cost.

Also on GET: `/healthz` (snapshot version and age) and `/stats` (lookup latency percentiles
measured here, per lookup; `/stats?reset=1` starts a new window; used by bench/dns_bench.py).
"""

from __future__ import annotations

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

_FALSE = b'{"result":false}'
_TRUE = b'{"result":true}'
_HEADERS = [(b"content-type", b"application/json")]


@dataclass
class SnapshotHolder:
    """The current snapshot; replaced whole (one reference assignment) by the refresher thread."""

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


class RemoteBackendApp:
    def __init__(self, holder: SnapshotHolder, counter: AnswerCounter, latency: LatencyRecorder | None = None,
                 rng: random.Random | None = None) -> None:
        self.holder = holder
        self.counter = counter
        self.latency = latency or LatencyRecorder()
        self.rng = rng or random.Random()

    def handle(self, body: bytes) -> bytes:
        """One remote-backend call; unknown or unsupported methods answer `{"result": false}`."""
        try:
            message = json.loads(body)
            method = str(message.get("method", "")).lower()
            params = message.get("parameters") or {}
        except (ValueError, AttributeError):
            return _FALSE
        snapshot = self.holder.current
        if method == "lookup":
            if snapshot is None:
                return _FALSE
            answer = policy.lookup(snapshot, str(params.get("qname", "")), str(params.get("qtype", "")),
                                   remote=params.get("remote"), real_remote=params.get("real-remote"), rng=self.rng)
            if answer.service_id is not None and answer.regions:
                self.counter.add(answer.service_id, answer.regions)
            return json.dumps({"result": [r.as_remote() for r in answer.records]}, separators=(",", ":")).encode()
        if method == "initialize":
            return _TRUE
        if method == "getdomaininfo" and snapshot is not None:
            zone = snapshot.zones.get(policy.canonical_name(str(params.get("name", ""))))
            return json.dumps({"result": _domain_info(zone)}).encode() if zone else _FALSE
        if method == "getalldomains" and snapshot is not None:
            return json.dumps({"result": [_domain_info(z) for z in snapshot.zones.values()]}).encode()
        # getAllDomainMetadata, getDomainMetadata, getDomainKeys, ...: nothing to say (no DNSSEC, no metadata).
        return _FALSE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] == "POST":
            chunks = []
            more = True
            while more:
                event = await receive()
                chunks.append(event.get("body", b""))
                more = event.get("more_body", False)
            started = time.perf_counter()
            payload = self.handle(b"".join(chunks))
            self.latency.add(time.perf_counter() - started)
            await self._send(send, 200, payload)
        elif scope["method"] == "GET" and scope["path"] == "/healthz":
            snap = self.holder.current
            await self._send(send, 200 if snap else 503, json.dumps({
                "snapshot_version": snap.version if snap else None,
                "snapshot_age_seconds": round(time.time() - self.holder.built_at, 3) if snap else None,
                "services": len(snap.services) if snap else 0,
            }).encode())
        elif scope["method"] == "GET" and scope["path"] == "/stats":
            summary = self.latency.summary()
            if b"reset=1" in scope.get("query_string", b""):
                self.latency.reset()
            await self._send(send, 200, json.dumps(summary).encode())
        else:
            await self._send(send, 404, _FALSE)

    @staticmethod
    async def _send(send: Send, status: int, payload: bytes) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [*_HEADERS, (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})
