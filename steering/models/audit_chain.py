"""The audit log's hash chain (after CloudTrail's digest chain): tampering leaves a mark.

Each Change stores `prev_hash`, the `hash` of the Change written before it (the highest id at
the time; "" for the first), and its own `hash`: SHA-256 over a canonical JSON of
CHAINED_FIELDS, prev_hash included. Editing a row's content no longer matches its hash;
deleting a row leaves the next one pointing at a hash no row has.

Left out of the hash: `id`, which the database assigns after the hash is computed (the chain
itself orders the rows), and `actor_id`, which ON DELETE SET NULL clears when a user is removed
(`actor_name`, which is covered, keeps who it was).

Pure functions, no models: the migration that backfills the chain uses the same ones.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Mapping
from typing import Any

GENESIS = ""

CHAINED_FIELDS = (
    "time", "actor_name", "source", "request_id", "action", "object_type", "object_id", "object_repr",
    "related_type", "related_id", "related_repr", "operation_id", "reason", "forced", "force_reason",
    "before", "after", "version", "token_id", "token_name", "prev_hash",
)


def _stable_json(value: Any) -> Any:
    """The value as it reads back from either database: JSON types only, integral floats as ints.

    PostgreSQL's jsonb prints 1e+20 as 100000000000000000000, which reads back as an int."""
    value = json.loads(json.dumps(value))

    def walk(item: Any) -> Any:
        if isinstance(item, float) and item.is_integer():
            return int(item)
        if isinstance(item, dict):
            return {key: walk(inner) for key, inner in item.items()}
        if isinstance(item, list):
            return [walk(inner) for inner in item]
        return item

    return walk(value)


def canonical_json(values: Mapping[str, Any]) -> str:
    """CHAINED_FIELDS of one Change, from the instance about to be written or a row read back."""
    payload: dict[str, Any] = {}
    for name in CHAINED_FIELDS:
        value = values[name]
        if name == "time":
            if not isinstance(value, datetime.datetime):
                raise TypeError(f"a Change's time is an aware datetime, not {value!r}")
            value = value.astimezone(datetime.UTC).isoformat(timespec="microseconds")
        elif name in ("before", "after") and value is not None:
            value = _stable_json(value)
        payload[name] = value
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def chain_hash(values: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(values).encode("ascii")).hexdigest()
