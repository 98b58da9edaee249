"""What the HAProxy agent holds HAProxy to besides servers' states and weights (no Django):

- HAProxy's own live-traffic watch (`observe layer4 ... on-error mark-down`, render.py) judges each
  server alone: when every server of a pool fails connections at once (a network flap), it marks
  them all DOWN. `beyond_the_bound` names the servers to put back so that no more of a pool is out
  than outlier ejection itself may take out (bound.py: the pool's share cap and minimum healthy
  capacity, servers ejected by the control plane counted). The ones HAProxy took out first stay
  out; the most recent are put back first (ties: the higher backend id first, so what stays out is
  what outlier ejection would pick: same severity, lower id first).
- A pool's passive settings (retries, redispatch, retry-on, observe, error-limit) are config
  lines no Runtime API command changes. `settings_differ` compares the ones the running HAProxy
  was started with (the `proc.steering_passive_<id>` variables render.py writes) with the desired
  ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from steering.dataplane.haproxy.bound import Member, choose
from steering.dataplane.haproxy.model import READY, PopSpec
from steering.dataplane.haproxy.render import passive_settings, passive_var, pool_modes
from steering.dataplane.haproxy.runtime import Runtime, ServerStat
from steering.dataplane.haproxy.stats import observed_down


@dataclass(frozen=True)
class PutBack:
    proxy: str
    server: str
    backend_id: int
    why: str


def beyond_the_bound(spec: PopSpec, rows: Sequence[ServerStat], down_since: Mapping[int, float]) -> list[PutBack]:
    """The servers HAProxy has DOWN beyond their pool's bound, to put back.

    `down_since`: when the agent first saw each backend DOWN (its clock); a backend missing from it
    counts as the newest. Only primaries we want serving count as HAProxy's verdicts (a server we
    drained, a backup, one at weight 0 is out for another reason and left alone)."""
    status = {(r.backend, r.name): r for r in rows}
    out: list[PutBack] = []
    for pool in spec.pools:
        primaries = [s for s in pool.servers if not s.backup and s.backend_id is not None]
        members = [Member(s.backend_id, float(s.capacity), s.state == READY and s.weight > 0, s.ejected)
                   for s in primaries if s.backend_id is not None]
        down = [(s, row) for s in primaries if s.state == READY and s.weight > 0 and not s.ejected
                and (row := status.get((pool.proxy, s.name))) is not None and observed_down(row.status)]
        if not down:
            continue
        # First out stays out: by when we saw it down, then by how long HAProxy says it has been.
        down.sort(key=lambda item: (down_since.get(item[0].backend_id or 0, math.inf), -item[1].lastchg,
                                    item[0].backend_id))
        choice = choose(members, [s.backend_id for s, _ in down if s.backend_id is not None], pool)
        held = set(choice.held)
        why = (f"HAProxy's observe had {len(down)} of the {len(members)} backends of pool {pool.slug} out: "
               f"{choice.why_held}")
        out += [PutBack(pool.proxy, s.name, s.backend_id, why) for s, _ in down
                if s.backend_id is not None and s.backend_id in held]
    return out


def _described(have: str | None, want: str) -> str:
    if have is None:
        return ("its config does not say which passive settings it has (not rendered by steering, or "
                f"before this check); wanted {want}")
    old = dict(part.partition(":")[::2] for part in have.split("/"))
    new = dict(part.partition(":")[::2] for part in want.split("/"))
    changed = [f"{k} {old.get(k) or '-'} → {new.get(k) or '-'}" for k in new if old.get(k) != new.get(k)]
    return ", ".join(changed) or f"runs {have}, wanted {want}"


def settings_differ(spec: PopSpec, runtime: Runtime, *, unknown_differs: bool = True) -> list[str]:
    """For each pool whose passive settings, as rendered, differ from those of the running HAProxy:
    its name and what differs (one `get var` per pool; a pool HAProxy lacks reads as not rendered).

    `unknown_differs=False`: a config that does not say (written by hand for a host's own HAProxy)
    is taken as the host's choice, not as a refusal; one that says, and says otherwise, differs."""
    modes = pool_modes(spec)
    out: list[str] = []
    for pool in spec.pools:
        want = passive_settings(pool, modes[pool.id])
        have = runtime.get_var(passive_var(pool.id))
        if have is None and not unknown_differs:
            continue
        if have != want:
            out.append(f"pool {pool.slug} ({pool.proxy}): {_described(have, want)}")
    return out
