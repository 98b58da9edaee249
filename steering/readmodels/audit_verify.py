"""Walk the audit log's hash chain in id order and name the first link that does not hold.

Streams the rows (a million Changes never sit in memory at once). What it can tell apart:
  content altered  the row's content no longer gives its stored hash;
  row missing      the row points at a hash the row before it does not have, and ids are
                   missing between them (or rows are missing before the first one);
  chain broken     the same, with no id missing: a row was rewritten and re-hashed, or forged.
A chain re-hashed from end to end by someone with database access still verifies: keep a copy of
the last hash elsewhere to catch that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from steering.models import Change
from steering.models.audit_chain import CHAINED_FIELDS, GENESIS, chain_hash

CONTENT_ALTERED = "content altered"
ROW_MISSING = "row missing"
CHAIN_BROKEN = "chain broken"


@dataclass(frozen=True)
class BrokenLink:
    id: int
    problem: str


@dataclass(frozen=True)
class ChainVerdict:
    ok: bool
    checked: int
    first_broken: BrokenLink | None


def verify_chain(*, chunk_size: int = 2000) -> ChainVerdict:
    previous_id: int | None = None
    previous_hash = GENESIS
    checked = 0
    rows = Change.objects.order_by("id").values("id", "hash", *CHAINED_FIELDS)
    for row in rows.iterator(chunk_size=chunk_size):
        checked += 1
        problem = _problem(row, previous_id, previous_hash)
        if problem is not None:
            return ChainVerdict(ok=False, checked=checked, first_broken=BrokenLink(id=row["id"], problem=problem))
        previous_id, previous_hash = row["id"], row["hash"]
    return ChainVerdict(ok=True, checked=checked, first_broken=None)


def _problem(row: dict[str, Any], previous_id: int | None, previous_hash: str) -> str | None:
    if chain_hash(row) != row["hash"]:
        return CONTENT_ALTERED
    if row["prev_hash"] == previous_hash:
        return None
    if previous_id is None:
        return ROW_MISSING  # the first row left points past rows that are gone
    # Ids run on by one on SQLite; on PostgreSQL a rolled-back insert also skips one, which alone breaks nothing.
    return ROW_MISSING if row["id"] > previous_id + 1 else CHAIN_BROKEN
