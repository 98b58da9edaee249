"""The plain drain as an operation kind: when it is done, and how an abort rolls it back.

(Starting one is `steering.services.actions.do_drain`; its backends become drained at their
deadline in `steering.services.operations.complete_drains`, which then calls `on_backends_drained`.)
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.utils import timezone

from steering.choices import AdminState, DataplaneLayer, OperationStatus
from steering.models import Backend, Operation
from steering.services.audit import ChangeSet
from steering.services.confirmations import layer_names
from steering.services.kernel import return_to_service
from steering.services.operation_lifecycle import drain_progress, finish_operation, move_target_state


def on_backends_drained(op: Operation, changes: ChangeSet) -> None:
    """Some of the drain's backends are drained: progress, and the end once none is left."""
    progress = drain_progress(op)
    unconfirmed = op.progress.get("unconfirmed", [])
    op.progress = {**progress, **({"unconfirmed": unconfirmed} if unconfirmed else {})}
    op.save(update_fields=["progress"])
    if progress["backends_left"] == 0:
        # Done in the desired state; "succeeded" only if every data plane said it applied it.
        status = OperationStatus.UNCONFIRMED if unconfirmed else OperationStatus.SUCCEEDED
        result: dict[str, Any] = {"drained": progress["backends_done"]}
        if unconfirmed:
            result["unconfirmed"] = unconfirmed
        elif settings.STEERING_DATAPLANE_CONFIRM:
            pops = sorted(set(Backend.objects.filter(operation=op).values_list("pool__pop_id", flat=True)))
            result["confirmed"] = layer_names({DataplaneLayer.LOCAL: list(pops)})
        if finish_operation(op, status, result):
            move_target_state(op, AdminState.DRAINING, AdminState.DRAINED, changes)
    changes.touch(op)


def roll_back(op: Operation, changes: ChangeSet) -> int:
    """Abort: the backends still draining return to service, the site to ready. Returns how many."""
    now = timezone.now()
    restored = 0
    for backend in Backend.objects.select_for_update().filter(operation=op, admin_state=AdminState.DRAINING):
        return_to_service(backend, changes, now=now)
        restored += 1
    move_target_state(op, AdminState.DRAINING, AdminState.READY, changes)
    return restored
