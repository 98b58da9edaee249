"""The freeze switch (ARC's gating switch): while it is on, every change through the API is
refused except an admin's with a reason. Turning it on or off is itself a change, audited as
changefreeze.on / changefreeze.off. The system's own work goes on: timers already running
complete, the prober records health, the agents apply and report."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from steering.choices import Role
from steering.models import ChangeFreeze
from steering.services.audit import ChangeSet
from steering.services.context import Actor
from steering.services.errors import ChangesFrozen, StateConflict
from steering.services.kernel import lock_for_write, require_reason, set_fields


def current() -> ChangeFreeze:
    """The switch as it stands (off when never set)."""
    return ChangeFreeze.objects.filter(pk=1).first() or ChangeFreeze(pk=1)


def do_set_freeze(frozen: bool, *, actor: Actor, reason: str) -> ChangeFreeze:
    reason = require_reason(reason)
    with transaction.atomic():
        row, _created = ChangeFreeze.objects.get_or_create(pk=1)
        locked = lock_for_write(row)
        if locked.frozen == frozen:
            raise StateConflict("Changes are already frozen." if frozen else "Changes are not frozen.",
                                code="already_frozen" if frozen else "not_frozen")
        values = ({"frozen": True, "reason": reason, "since": timezone.now(), "by": actor.name} if frozen
                  else {"frozen": False, "reason": "", "since": None, "by": ""})
        set_fields(locked, values, ChangeSet(actor, reason), "changefreeze.on" if frozen else "changefreeze.off")
    return locked


def refuse_if_frozen(role: str | None, reason: str) -> None:
    """Raise ChangesFrozen unless changes are allowed for this role and reason now."""
    switch = current()
    if not switch.frozen or (role == Role.ADMIN and reason.strip()):
        return
    since = switch.since.isoformat(timespec="seconds") if switch.since else "?"
    raise ChangesFrozen(
        f"Changes are frozen since {since} by {switch.by}: {switch.reason}. Only an admin, with a reason, "
        "may change anything until it is lifted.",
        extra={"freeze": {"since": since, "by": switch.by, "reason": switch.reason}})
