"""The fleet as it was at a past instant, for postmortems (`GET /api/v1/topology/?at=`).

Rebuilt from the audit log alone: the picture of now, with every Change newer than `at` undone,
newest first. Every write of the topology (and every health transition: the prober's Change rows
carry the backend before and after, like its HealthEvent) writes a Change in its own transaction
(ARCHITECTURE.md §5), so undoing them in turn gives what was committed at `at`:

- an update: the fields it changed get their value from before it (a per-field undo, so a Change
  whose before/after is not a snapshot of the row, e.g. a data plane's repair, undoes nothing);
- a create: the object was not there yet;
- a delete: the object was there, as its `before` snapshot says.

Operations are not audited row by row (their progress moves without a Change); one is in the
picture when it was created by `at`, and one that finished after `at` is shown unfinished, with
its progress unknown (empty): history keeps when it ended, not how far it had come.

Changes are append-only (database triggers) and never pruned, so history reaches back to the
first one; an instant before it, or in the future, is refused (ReplayRefused), never answered
with a picture that may be wrong. A bounded number of queries whatever the fleet's size: one per
object type, one for the changes, a few for the bounds.

The answer is marked historical (`replayed`, `at`, `as_of`) and has no `version`: it is not a
picture the live feed's deltas continue from.
"""

from __future__ import annotations

import datetime
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from django.db import models
from django.db.models import Q
from django.utils import timezone

from steering.choices import OPERATION_FINAL_STATES, STATE_STYLES, OperationStatus
from steering.models import Change, Operation
from steering.representation import SKIP_FIELDS, TYPES, add_effective_weight, jsonable, represent_rows

# The live snapshot lists every unfinished operation and this many of the latest (steering.topology).
RECENT_OPERATIONS = 20
# Operation fields an audited operation change (pause, resume, abort, extend...) may undo.
_OPERATION_FIELDS = frozenset({"status", "result", "expires_at", "expired_at", "not_before", "deadline"})


class ReplayRefused(ValueError):
    """`at` cannot be answered from history: in the future, or before history begins."""

    def __init__(self, message: str, *, history_starts: datetime.datetime | None) -> None:
        super().__init__(message)
        self.history_starts = history_starts


@dataclass(frozen=True)
class _Undo:
    object_type: str
    object_id: int
    before: Any
    after: Any


def history_starts() -> datetime.datetime | None:
    """The time of the oldest Change: the furthest back the fleet can be rebuilt (None: no history)."""
    return Change.objects.order_by("time", "id").values_list("time", flat=True).first()


def check_instant(at: datetime.datetime, *, now: datetime.datetime | None = None) -> datetime.datetime:
    """`at` if history can answer it; else ReplayRefused saying why (and how far back it goes)."""
    now = now or timezone.now()
    starts = history_starts()
    if at > now:
        raise ReplayRefused(f"{at.isoformat()} is in the future (the server's time is {now.isoformat()}): "
                            "only the past can be replayed.", history_starts=starts)
    if starts is None:
        raise ReplayRefused("There is no history yet: no change has been recorded.", history_starts=None)
    if at < starts:
        raise ReplayRefused(f"History goes back to {starts.isoformat()} (the first recorded change); "
                            f"{at.isoformat()} is before it.", history_starts=starts)
    return starts


def topology_at(at: datetime.datetime, *, now: datetime.datetime | None = None) -> dict[str, Any]:
    """The topology snapshot's shape as it was at `at` (see the module's docstring)."""
    starts = check_instant(at, now=now)
    as_of = (Change.objects.filter(time__lte=at).order_by("-time", "-id")
             .values("id", "time", "version").first())
    tables: dict[str, dict[int, dict[str, Any]]] = {}
    for type_key, (model, _key) in TYPES.items():
        if model is not Operation:
            rows = represent_rows(model, model._default_manager.order_by("pk"), pools_in_panic=set())
            tables[type_key] = {row["id"]: row for row in rows}
    undone = _undo_changes(tables, _changes_after(at))
    tables["operation"] = _operations_at(at, undone["operation"])
    panic = {pk for pk, pool in tables["pool"].items() if pool.get("in_panic")}
    for row in tables["backend"].values():
        add_effective_weight(row, pool_in_panic=row["pool_id"] in panic, now=at)
    body: dict[str, Any] = {
        "replayed": True,
        "at": at.isoformat(),
        "generated_at": timezone.now().isoformat(),
        "history_starts": starts.isoformat(),
        "as_of": None if as_of is None else {
            "change_id": as_of["id"], "time": as_of["time"].isoformat(), "version": as_of["version"]},
        "undone": sum(len(v) for v in undone.values()),
    }
    for type_key, (_model, key) in TYPES.items():
        body[key] = [tables[type_key][pk] for pk in sorted(tables[type_key])]
    body["states"] = [style.__dict__ for style in STATE_STYLES]
    return body


def _changes_after(at: datetime.datetime) -> Iterable[_Undo]:
    """Changes of the topology's objects newer than `at`, newest first, in one query."""
    rows = (Change.objects.filter(time__gt=at, object_type__in=list(TYPES)).order_by("-time", "-id")
            .values_list("object_type", "object_id", "before", "after"))
    for object_type, object_id, before, after in rows.iterator(chunk_size=2000):
        yield _Undo(object_type, object_id, before, after)


def _fields(model: type[models.Model]) -> dict[str, models.Field[Any, Any]]:
    """The row's keys in the snapshot form (foreign keys by their column), with their fields."""
    return {f.attname: f for f in model._meta.concrete_fields if f.name not in SKIP_FIELDS}


def _undo_changes(tables: dict[str, dict[int, dict[str, Any]]],
                  changes: Iterable[_Undo]) -> dict[str, dict[int, list[_Undo]]]:
    """Undo each change in `tables` (newest first); the changes undone, by type and object."""
    fields = {type_key: _fields(model) for type_key, (model, _key) in TYPES.items()}
    undone: dict[str, dict[int, list[_Undo]]] = {type_key: {} for type_key in TYPES}
    for change in changes:
        undone[change.object_type].setdefault(change.object_id, []).append(change)
        if change.object_type == "operation":
            continue  # operations are placed by their own times (_operations_at)
        table = tables[change.object_type]
        before = change.before if isinstance(change.before, dict) else None
        after = change.after if isinstance(change.after, dict) else None
        if before is None and after is not None:
            table.pop(change.object_id, None)  # created after `at`: not there yet
        elif before is not None and after is None:
            # Deleted after `at`: there, as it was just before the delete.
            table[change.object_id] = _row_from(before, change.object_id, fields[change.object_type])
        elif before is not None and after is not None and change.object_id in table:
            _undo_fields(table[change.object_id], before, after, fields[change.object_type])
    return undone


def _undo_fields(row: dict[str, Any], before: dict[str, Any], after: dict[str, Any],
                 fields: Collection[str]) -> None:
    for name, value in before.items():
        if name in fields and (name not in after or after[name] != value):
            row[name] = value


def _row_from(snapshot: dict[str, Any], pk: int, fields: dict[str, models.Field[Any, Any]]) -> dict[str, Any]:
    """A row from a snapshot; a field it predates gets its default (a snapshot keeps the fields of its day)."""
    row = {name: snapshot[name] if name in snapshot else jsonable(field.get_default())
           for name, field in fields.items()}
    row["id"] = pk
    return row


def _operations_at(at: datetime.datetime, undone: dict[int, list[_Undo]]) -> dict[int, dict[str, Any]]:
    """The operations the live snapshot would have listed at `at`: unfinished then, and the latest."""
    created = Operation.objects.filter(created_at__lte=at)
    recent = list(created.order_by("-id").values_list("pk", flat=True)[:RECENT_OPERATIONS])
    open_then = Q(finished_at__isnull=True) | Q(finished_at__gt=at)
    rows = represent_rows(Operation, created.filter(open_then | Q(pk__in=recent)).order_by("pk"), pools_in_panic=set())
    out: dict[int, dict[str, Any]] = {}
    for row in rows:
        for change in undone.get(row["id"], []):
            if isinstance(change.before, dict) and isinstance(change.after, dict):
                _undo_fields(row, change.before, change.after, _OPERATION_FIELDS)
        finished = row.get("finished_at")
        if finished is None or datetime.datetime.fromisoformat(finished) > at:
            _reopen(row, at)
        out[row["id"]] = row
    return out


def _reopen(row: dict[str, Any], at: datetime.datetime) -> None:
    """An operation still going at `at`: not finished, status as it then was, progress not kept."""
    row["finished_at"] = None
    not_before = row.get("not_before")
    if not_before is not None and datetime.datetime.fromisoformat(not_before) > at:
        row["status"] = OperationStatus.SCHEDULED.value
    elif row["status"] in OPERATION_FINAL_STATES or row["status"] == OperationStatus.SCHEDULED:
        row["status"] = OperationStatus.RUNNING.value
    row["progress"] = {}
    if row["status"] != OperationStatus.PAUSED:
        row["result"] = {}

