"""What the sweeper, abort and drain completion do with an operation, by its kind.

An operation that outlives its request (a drain, a weight ramp, a layered drain) has a handler
here. `steering.services.operations` dispatches through it: the sweeper calls each kind's
`advance`, an abort calls `roll_back`, and a backend becoming drained calls its operation's
`on_backends_drained`. Kinds without a handler (undrain, maintenance, announce, withdraw) finish
inside their own request and never need one.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass

from steering.choices import OperationKind
from steering.models import Operation
from steering.services import drains, layered, weights
from steering.services.audit import ChangeSet


@dataclass(frozen=True)
class OperationKindHandler:
    # Abort: undo what the operation did; returns how many backends went back to service.
    roll_back: Callable[[Operation, ChangeSet], int]
    # One sweeper pass over every running operation of the kind; returns how many moved on.
    advance: Callable[[datetime.datetime | None], int] | None = None
    # The name of that count in the sweeper's result.
    sweep_key: str = ""
    # Some of the operation's backends just became drained (it is running and locked).
    on_backends_drained: Callable[[Operation, ChangeSet], None] | None = None


HANDLERS: dict[str, OperationKindHandler] = {
    OperationKind.DRAIN: OperationKindHandler(roll_back=drains.roll_back,
                                              on_backends_drained=drains.on_backends_drained),
    OperationKind.WEIGHT: OperationKindHandler(roll_back=weights.roll_back, advance=weights.advance_ramps,
                                               sweep_key="ramp_steps"),
    OperationKind.LAYERED_DRAIN: OperationKindHandler(roll_back=layered.roll_back,
                                                      advance=layered.advance_layered_drains,
                                                      sweep_key="layered_steps",
                                                      on_backends_drained=layered.on_backends_drained),
}


def handler_for(kind: str) -> OperationKindHandler | None:
    return HANDLERS.get(kind)
