"""What changes between two fleets, per object and field, in the order an apply can follow.

The order keeps every reference valid at each step: first the deletes nothing can refer to
(backends, VIPs, client networks, which frees their addresses for new ones), then creates and
updates kind by kind in dependency order (a new region before the PoP in it), then the remaining
deletes in reverse (a pool before its PoP, a primary before its backup pool).

A change that takes capacity away (a backend deleted or lowered, a pool, PoP or region deleted,
a VIP deleted or disabled) is marked `reduces_capacity`: the service asks the capacity guard about
those before it applies anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from steering.fleetfile.normalise import KINDS, Fleet, FleetObject, field_names, managed

CREATE, UPDATE, DELETE = "create", "update", "delete"
LEAVES = ("backend", "vip", "client_network")  # nothing refers to these


@dataclass(frozen=True)
class Change:
    op: str          # create | update | delete
    kind: str
    key: str
    fields: dict[str, dict[str, Any]]   # name -> {"from": before, "to": after}
    reduces_capacity: bool = False
    path: str = ""   # where the object is in the desired document ("" for a delete)

    def as_dict(self) -> dict[str, Any]:
        return {"op": self.op, "kind": self.kind, "key": self.key, "fields": self.fields,
                "reduces_capacity": self.reduces_capacity}


def _reduces(kind: str, op: str, fields: dict[str, dict[str, Any]]) -> bool:
    if op == CREATE:
        return False
    if op == DELETE:
        if kind == "vip":
            return bool(fields.get("enabled", {}).get("from"))
        return kind in ("backend", "pool", "pop", "region")
    if kind == "vip":
        return "enabled" in fields and fields["enabled"]["from"] and not fields["enabled"]["to"]
    if kind != "backend":
        return False
    weight, cap, backup = fields.get("weight"), fields.get("capacity_rps"), fields.get("backup")
    if weight and weight["to"] < weight["from"]:
        return True
    # capacity 0 declares none (never judged): 0 -> N sets a limit, N -> M < N lowers it.
    if cap and cap["to"] and (not cap["from"] or cap["to"] < cap["from"]):
        return True
    return bool(backup and backup["to"] and not backup["from"])


def _change(op: str, kind: str, key: str, before: FleetObject | None, after: FleetObject | None) -> Change | None:
    names = field_names(kind)
    fields: dict[str, dict[str, Any]] = {}
    for name in names:
        old = before.fields.get(name) if before else None
        new = after.fields.get(name) if after else None
        if op != UPDATE or old != new:
            fields[name] = {"from": old, "to": new}
    if op == UPDATE and not fields:
        return None
    return Change(op, kind, key, fields, _reduces(kind, op, fields), after.path if after else "")


def _pools_backups_first(keys: list[str], desired: Fleet) -> list[str]:
    """New pools ordered so a backup pool comes before the pools that use it (when it is new too)."""
    wanted, done, out = set(keys), set(), []

    def visit(key: str, trail: frozenset[str]) -> None:
        if key in done or key in trail:
            return
        f = desired["pool"][key].fields
        backup = f"{f['pop']}/{f['backup_pool']}" if f["backup_pool"] else None
        if backup in wanted:
            visit(backup, trail | {key})
        done.add(key)
        out.append(key)

    for key in sorted(keys):
        visit(key, frozenset())
    return out


def _pools_primaries_first(keys: list[str], current: Fleet) -> list[str]:
    """Deleted pools ordered so a pool goes before the backup pool it uses (when that goes too)."""
    return list(reversed(_pools_backups_first(keys, current)))


def diff(current: Fleet, desired: Fleet) -> list[Change]:
    """The changes that turn `current` into `desired`, in apply order. A kind either fleet leaves
    out (an optional section not in the file) is left as it is."""
    per_kind: dict[str, dict[str, list[Change]]] = {}
    for kind in KINDS:
        now, want = current.get(kind, {}), desired.get(kind, {})
        if not managed(kind, current, desired):
            now = want = {}
        creates = [c for k in sorted(set(want) - set(now)) if (c := _change(CREATE, kind, k, None, want[k]))]
        updates = [c for k in sorted(set(want) & set(now)) if (c := _change(UPDATE, kind, k, now[k], want[k]))]
        deletes = [c for k in sorted(set(now) - set(want)) if (c := _change(DELETE, kind, k, now[k], None))]
        if kind == "pool":
            by_key = {c.key: c for c in creates}
            creates = [by_key[k] for k in _pools_backups_first(list(by_key), desired)]
            by_key = {c.key: c for c in deletes}
            deletes = [by_key[k] for k in _pools_primaries_first(list(by_key), current)]
        per_kind[kind] = {CREATE: creates, UPDATE: updates, DELETE: deletes}
    ordered: list[Change] = []
    for kind in LEAVES:
        ordered += per_kind[kind][DELETE]
    for kind in KINDS:
        first, then = (CREATE, UPDATE) if kind == "pool" else (UPDATE, CREATE)
        ordered += per_kind[kind][first] + per_kind[kind][then]
    for kind in reversed(KINDS):
        if kind not in LEAVES:
            ordered += per_kind[kind][DELETE]
    return ordered


def summary(changes: list[Change]) -> dict[str, int]:
    counts = {CREATE: 0, UPDATE: 0, DELETE: 0}
    for change in changes:
        counts[change.op] += 1
    return counts
