"""Change rows and the state version, written inside the caller's transaction.

Every ChangeSet bumps the state version first, which holds the StateVersion row lock (an
IMMEDIATE transaction on SQLite) until commit: Change rows are written one transaction at a
time, so the row with the highest id is the one a new row chains to (steering/models/audit_chain.py).
The version is read through steering.readmodels.version; after commit a ChangeSet publishes through
steering.services.effects, which never imports this module back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.db.models import F
from django.utils import timezone

from steering.choices import ChangeAction, ChangeSource
from steering.models import Change, StateVersion
from steering.models.audit_chain import CHAINED_FIELDS, GENESIS, chain_hash
from steering.representation import snapshot as snapshot  # a Change's before/after: services take it from here
from steering.services import effects
from steering.services.context import Actor
from steering.services.errors import WaitPeriod


def object_type(obj: models.Model) -> str:
    return obj._meta.model_name or obj.__class__.__name__.lower()


def _changed_fields(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[str] | None:
    """The fields an update changed (None for a create or delete: all of them). Lets the data
    planes' waiting agents tell a change that concerns them from one that does not."""
    if before is None or after is None:
        return None
    return sorted(k for k in set(before) | set(after) if k != "revision" and before.get(k) != after.get(k))


def bump_version() -> int:
    """Increment the state version in this transaction; the row lock orders commits."""
    updated = StateVersion.objects.filter(pk=1).update(value=F("value") + 1)
    if not updated:
        StateVersion.objects.get_or_create(pk=1, defaults={"value": 0})
        StateVersion.objects.filter(pk=1).update(value=F("value") + 1)
    return int(StateVersion.objects.values_list("value", flat=True).get(pk=1))


def _last_hash() -> str:
    """The hash of the newest Change; only read under bump_version()'s lock, so no writer slips between."""
    return Change.objects.order_by("-id").values_list("hash", flat=True).first() or GENESIS


@dataclass
class ChangeSet:
    """The Change rows and live deltas of one action, sharing one state version."""

    actor: Actor
    reason: str = ""
    operation_id: int | None = None
    forced: bool = False
    force_reason: str = ""
    version: int = 0
    changes: list[Change] = field(default_factory=list)
    deltas: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not transaction.get_connection().in_atomic_block:
            raise RuntimeError("A ChangeSet must be opened inside the action's transaction.")
        self.version = bump_version()
        # Publish once, after commit: a rolled-back action sends nothing.
        transaction.on_commit(self._publish)

    def record(
        self,
        action: str,
        obj: models.Model,
        *,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        related: models.Model | None = None,
        reason: str | None = None,
        operation_id: int | None = None,
    ) -> Change:
        if action not in ChangeAction.values:
            # Every action is in one table (steering.choices.ChangeAction): never improvised.
            raise ValueError(f"{action!r} is not an audit action: add it to steering.choices.ChangeAction")
        if before is not None:
            self._wait_period(obj, self.operation_id if operation_id is None else operation_id)
        change = Change(
            time=timezone.now(),
            actor_id=self.actor.user_id,
            actor_name=self.actor.name,
            source=self.actor.source,
            request_id=self.actor.request_id,
            action=action,
            object_type=object_type(obj),
            object_id=obj.pk,
            object_repr=str(obj)[:300],
            related_type=object_type(related) if related is not None else "",
            related_id=related.pk if related is not None else None,
            related_repr=str(related)[:300] if related is not None else "",
            operation_id=self.operation_id if operation_id is None else operation_id,
            reason=self.reason if reason is None else reason,
            forced=self.forced,
            force_reason=self.force_reason if self.forced else "",
            before=before,
            after=after,
            version=self.version,
            token_id=self.actor.token_id,
            token_name=self.actor.token_name,
            prev_hash=_last_hash(),
        )
        change.hash = chain_hash({name: getattr(change, name) for name in CHAINED_FIELDS})
        change.save(force_insert=True)
        self.changes.append(change)
        self.deltas.append(
            {"op": "delete" if after is None else "upsert", "type": object_type(obj), "id": obj.pk,
             "fields": _changed_fields(before, after)}
        )
        return change

    def _wait_period(self, obj: models.Model, operation_id: int | None) -> None:
        """Refuse a person's change to `obj` within STEERING_CHANGE_WAIT_SECONDS of the previous
        person's change to it (one choke point: every change of every action is recorded here,
        under the object's row lock). Rows of this action, of the same request, or of the same
        operation (an abort undoing its own drain at once is not a flap) do not count."""
        wait = settings.STEERING_CHANGE_WAIT_SECONDS
        if not wait or self.actor.source == ChangeSource.SYSTEM:
            return
        kind = object_type(obj)
        if any(c.object_type == kind and c.object_id == obj.pk for c in self.changes):
            return
        last = (Change.objects.filter(object_type=kind, object_id=obj.pk).exclude(source=ChangeSource.SYSTEM)
                .order_by("-time").values("time", "actor_name", "action", "request_id", "operation_id").first())
        if (last is None or (self.actor.request_id and last["request_id"] == self.actor.request_id)
                or (operation_id is not None and last["operation_id"] == operation_id)):
            return
        ago = (timezone.now() - last["time"]).total_seconds()
        if ago >= wait:
            return
        left = round(wait - ago, 1)
        raise WaitPeriod(
            f"{kind} {obj} was changed {max(ago, 0):.1f} s ago by {last['actor_name']} ({last['action']}); "
            f"changes to one object are at least {wait} s apart: try again in {left} s.",
            extra={"retry_after_seconds": left, "last_change": {"actor": last["actor_name"], "action": last["action"]}})

    def touch(self, obj: models.Model) -> None:
        """Announce a changed object that has no Change row of its own (e.g. an operation's progress)."""
        self.deltas.append({"op": "upsert", "type": object_type(obj), "id": obj.pk})

    def _publish(self) -> None:
        effects.publish_after_commit(self.version, self.deltas)
