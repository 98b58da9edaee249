"""The whole picture for the live map, with the version that deltas continue from."""

from __future__ import annotations

from typing import Any

from django.db.models import Q
from django.utils import timezone

from steering.choices import OPERATION_FINAL_STATES, STATE_STYLES
from steering.models import Operation, Pool
from steering.readmodels.version import current_version
from steering.representation import TYPES, represent_rows


def topology_snapshot() -> dict[str, Any]:
    # Read the version first: the data is then at least as new, and deltas carry whole objects,
    # so re-applying one the snapshot already includes is harmless.
    version = current_version()
    panic = set(Pool.objects.filter(in_panic=True).values_list("pk", flat=True))
    body: dict[str, Any] = {"version": version, "generated_at": timezone.now().isoformat()}
    for model, key in TYPES.values():
        qs = model._default_manager.all()
        if model is Operation:
            # Every unfinished operation (running, or a paused ramp waiting for an operator however
            # old) and the latest ones, not the whole history.
            recent = list(Operation.objects.order_by("-id").values_list("pk", flat=True)[:20])
            qs = qs.filter(~Q(status__in=OPERATION_FINAL_STATES) | Q(pk__in=recent))
        body[key] = represent_rows(model, qs.order_by("pk"), pools_in_panic=panic)
    body["states"] = [style.__dict__ for style in STATE_STYLES]
    return body
