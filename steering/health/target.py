"""What to probe and what came back: plain data, no Django."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields


@dataclass(frozen=True)
class ProbeTarget:
    backend_id: int
    pool_id: int
    kind: str                 # tcp | http | https
    address: str
    port: int
    method: str = "GET"
    path: str = "/"
    host_header: str = ""
    expected_status: tuple[tuple[int, int], ...] = ((200, 399),)
    body_match: str = ""
    tls_verify: bool = True
    interval: float = 2.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 3

    def encode(self) -> str:
        # A positional JSON list: a few microseconds, where dataclasses.asdict (deep copies) costs
        # hundreds, and the schedule sync encodes every probed backend.
        return json.dumps([getattr(self, name) for name in _FIELDS], separators=(",", ":"))

    @classmethod
    def decode(cls, raw: str | bytes) -> ProbeTarget:
        values = json.loads(raw)
        data = dict(zip(_FIELDS, values, strict=True))
        data["expected_status"] = tuple((int(lo), int(hi)) for lo, hi in data["expected_status"])
        return cls(**data)


_FIELDS = tuple(f.name for f in fields(ProbeTarget))


@dataclass(frozen=True)
class ProbeResult:
    backend_id: int
    ok: bool
    result: str               # ok | status | body | timeout | refused | tls | error | allowlist
    latency_ms: float
    due: float                # the schedule slot (unix time) this probe answered
    started: float            # when it actually started (unix time): lag = started - due
    finished: float = 0.0
    status: int | None = None
    error: str = ""
    check: str = "tcp"
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def lag(self) -> float:
        return max(0.0, self.started - self.due)

    def evidence(self) -> dict[str, object]:
        """What a HealthEvent and its Change carry: enough to say why, nothing secret."""
        data: dict[str, object] = {"check": self.check, "result": self.result, "latency_ms": round(self.latency_ms, 2)}
        if self.status is not None:
            data["status"] = self.status
        if self.error:
            data["error"] = self.error[:300]
        return data

    def sample(self) -> str:
        """One entry of the recent-samples list (compact: 60 of these per backend in Redis)."""
        detail = str(self.status) if self.status is not None else self.error[:120].replace("|", "/")
        return f"{self.finished:.3f}|{int(self.ok)}|{self.latency_ms:.2f}|{self.result}|{detail}"


def decode_sample(raw: str | bytes) -> dict[str, object]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    t, ok, latency, result, detail = text.split("|", 4)
    return {"time": float(t), "ok": ok == "1", "latency_ms": float(latency), "result": result, "detail": detail}
