"""Anycast: an operator withdraws or announces a PoP's prefixes (the desired state).

The agent beside each PoP's ExaBGP turns the desired state into announce/withdraw and reports
what it announced (the data-plane integration); this module owns the decision and its audit.
A withdrawal moves the PoP's anycast traffic to the next nearest announcing PoPs, so it goes
through the capacity guard like a drain.
"""

from __future__ import annotations

from django.db import transaction

from steering.choices import AnnounceState, OperationKind
from steering.models import Operation, PoP
from steering.services import guard
from steering.services.audit import ChangeSet
from steering.services.confirmations import finish_when_applied, layers_for
from steering.services.context import Actor
from steering.services.errors import StateConflict
from steering.services.impact import Impact
from steering.services.kernel import enforce_guard, lock_for_write, read_current, require_reason, set_fields
from steering.services.operation_lifecycle import open_operation


def withdraw_impact(pop: PoP) -> Impact:
    return guard.assess_removal(pop, [], action="withdraw")


def set_announce(pop: PoP, state: str, changes: ChangeSet) -> None:
    """The PoP's desired announcement (`announce` or `withdraw`), audited as pop.<state>."""
    set_fields(pop, {"announce": state}, changes, f"pop.{state}", related=pop.region)


def do_withdraw(pop: PoP, *, actor: Actor, reason: str, force: bool = False, force_reason: str = "",
                dry_run: bool = False, expected_revision: int | None = None) -> tuple[Operation | None, Impact]:
    """Stop announcing the PoP's anycast prefixes."""
    reason = require_reason(reason)
    if dry_run:
        return None, withdraw_impact(read_current(pop, expected_revision))
    with transaction.atomic():
        locked = lock_for_write(pop, expected_revision)
        impact = withdraw_impact(locked)
        if locked.announce == AnnounceState.WITHDRAW:
            raise StateConflict(f"{locked} is already withdrawn.", code="already_withdrawn")
        forced = enforce_guard(impact, force=force, force_reason=force_reason)
        op = open_operation(OperationKind.WITHDRAW, locked, actor=actor, reason=reason, forced=forced,
                            params={"impact": impact.as_json(), "force_reason": force_reason})
        changes = ChangeSet(actor, reason, operation_id=op.pk, forced=op.forced, force_reason=force_reason)
        set_announce(locked, AnnounceState.WITHDRAW, changes)
        finish_when_applied(op, changes, {"announce": AnnounceState.WITHDRAW}, layers_for(locked, anycast_only=True))
        return op, impact


@transaction.atomic
def do_announce(pop: PoP, *, actor: Actor, reason: str,
                expected_revision: int | None = None) -> tuple[Operation, Impact]:
    """Announce the PoP's anycast prefixes again (capacity only returns: no guard)."""
    reason = require_reason(reason)
    locked = lock_for_write(pop, expected_revision)
    if locked.announce == AnnounceState.ANNOUNCE:
        raise StateConflict(f"{locked} is already announcing.", code="already_announcing")
    op = open_operation(OperationKind.ANNOUNCE, locked, actor=actor, reason=reason)
    changes = ChangeSet(actor, reason, operation_id=op.pk)
    set_announce(locked, AnnounceState.ANNOUNCE, changes)
    impact = guard.returning(locked, "announce", 0, explained=f"{locked} announces its anycast prefixes again.",
                             note="announcing returns capacity; nothing is overloaded by it")
    finish_when_applied(op, changes, {"announce": AnnounceState.ANNOUNCE}, layers_for(locked, anycast_only=True))
    return op, impact
