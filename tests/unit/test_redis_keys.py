"""Redis names live in one module (steering.redis_keys), and they never change: running systems
have data under them."""

from __future__ import annotations

import ast
from pathlib import Path

import steering
from steering import redis_keys

STEERING = Path(steering.__file__).parent

# What running systems have in Redis: renaming one orphans its data (or splits a lock in two).
PINNED = {
    "STATE_VERSION": "steering:state_version",
    "STATE_VERSION_CHANNEL": "steering:state_version:events",
    "CHANNEL_LAYER_PREFIX": "steering:asgi",
    "LIVE_GROUP": "live",
    "LIVE_CONNS": "steering:live:conns:{user_id}",
    "LIVE_DELTAS": "steering:live:deltas",
    "AGENTS_SEEN": "steering:agents:seen",
    "BACKEND_STATS": "steering:stats:backend:{id}",
    "HAPROXY_STATUS": "steering:haproxy:agent:{pop}",
    "ANYCAST_AGENT": "steering:anycast:agent:{slug}",
    "GSLB_ANSWERS_PREFIX": "steering:gslb:answers:",
    "GSLB_HEARTBEAT": "steering:gslb:heartbeat",
    "PROBE_PREFIX": "steering:probe:",
    "PROBE_DUE": "steering:probe:due",
    "PROBE_CFG": "steering:probe:cfg",
    "PROBE_INTERVAL": "steering:probe:interval",
    "PROBE_STALE_AT": "steering:probe:stale_at",
    "PROBE_SYNCED": "steering:probe:synced",
    "PROBE_SYNC_LOCK": "steering:probe:sync-lock",
    "PROBE_SEQ": "steering:probe:seq",
    "PROBE_STATE": "steering:probe:state:{id}",
    "PROBE_SAMPLES": "steering:probe:samples:{id}",
    "PROBE_POOL": "steering:probe:pool:{id}",
    "PROBE_TRANSITIONS": "steering:probe:transitions:stream",
    "PROBE_TRANSITIONS_GROUP": "recorder",
    "PROBE_TRANSITIONS_SCHEDULED": "steering:probe:transitions:scheduled",
    "PROBE_TRANSITIONS_LOCK": "steering:probe:transitions:lock",
    "METRICS_PREFIX": "steering:metrics:",
    "METRICS_PROBES": "steering:metrics:probes",
    "METRICS_PROBE_LATENCY": "steering:metrics:latency",
    "METRICS_PROBE_LAG": "steering:metrics:lag",
    "METRICS_PROBE_GAUGES": "steering:metrics:gauges",
    "METRICS_OUTLIER": "steering:metrics:outlier",
    "OUTLIER_TRACKS": "steering:outlier:tracks",
    "OUTLIER_HELD": "steering:outlier:held",
    "OUTLIER_LOCK": "steering:outlier:lock",
    "SWEEP_HEARTBEAT": "steering:sweeper:last",
    "REDBEAT_PREFIX": "steering:redbeat:",
    "REDBEAT_LOCK": "steering:redbeat:lock",
    "CACHE_PREFIX": "steering",
    "THROTTLE_PREFIX": "throttle:",
    "THROTTLE": "throttle:%(scope)s:%(ident)s",
    "SIGNIN_USER": "throttle:login:user:{digest}",
    "SIGNIN_ADDRESS": "throttle:login:ip:{address}",
    "SIGNIN_UNTIL_SUFFIX": ":until",
}


def test_every_name_is_pinned_and_unchanged() -> None:
    names = {n: v for n, v in vars(redis_keys).items() if n.isupper() and isinstance(v, str)}
    assert names == PINNED


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def test_no_other_module_spells_a_key() -> None:
    """A string (or f-string) starting with "steering:" outside redis_keys is a key name kept in
    the wrong place (docstrings may name keys)."""
    files = sorted(p for p in STEERING.rglob("*.py") if p.name != "redis_keys.py" and "migrations" not in p.parts)
    assert len(files) > 50, "found no modules: the check would be vacuous"
    spelled = []
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):  # an f-string's literal parts are Constants too
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
                    and node.value.startswith("steering:")):
                spelled.append(f"{path.relative_to(STEERING.parent)}:{node.lineno} {node.value!r}")
    assert spelled == []
