"""Audit what the data-plane reconciler repaired (ARCHITECTURE.md §5: no change without its Change).

The repair itself happened in HAProxy (outside any transaction); this records it, one Change per
repaired server, actor system:reconciler, in one transaction and one state version.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from django.db import transaction

from steering.models import Backend, Change, PoP
from steering.services.audit import ChangeSet
from steering.services.context import Actor

RECONCILER = Actor.system("reconciler")


class Repaired(Protocol):
    """What a reconciler reports per repaired server (steering.dataplane.haproxy.apply.Difference)."""

    @property
    def proxy(self) -> str: ...
    @property
    def server(self) -> str: ...
    @property
    def observed(self) -> dict[str, Any] | None: ...
    @property
    def desired(self) -> dict[str, Any] | None: ...
    @property
    def backend_id(self) -> int | None: ...


def _describe(state: dict[str, Any] | None) -> str:
    if state is None:
        return "absent"
    return f"{state['state']} weight {state['weight']}"


@transaction.atomic
def do_record_dataplane_repair(pop_slug: str, repaired: Sequence[Repaired], *, plane: str = "haproxy",
                               actor: Actor = RECONCILER) -> list[Change]:
    if not repaired:
        return []
    pop = PoP.objects.get(slug=pop_slug)
    backends = Backend.objects.select_related("pool").in_bulk([r.backend_id for r in repaired if r.backend_id])
    cs = ChangeSet(actor, "")
    for r in repaired:
        target = backends.get(r.backend_id) if r.backend_id else None
        reason = (f"{plane} {pop.slug}: {r.proxy}/{r.server} was {_describe(r.observed)}, "
                  f"desired {_describe(r.desired)}; repaired (drift, not a pending change)")
        cs.record("dataplane.repair", target or pop, related=pop if target else None, reason=reason,
                  before={plane: {"server": f"{r.proxy}/{r.server}", **(r.observed or {"state": "absent"})}},
                  after={plane: {"server": f"{r.proxy}/{r.server}", **(r.desired or {"state": "absent"})}})
    return cs.changes
