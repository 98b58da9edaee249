"""Fleet as code: export the desired configuration, plan a fleet file against it, apply it as one
audited operation, and say where the live fleet drifted from the last file applied.

The file format and the diff are pure (steering.fleetfile); this module reads the live fleet
from the database, checks a plan's changes against the models and the capacity guard, and
applies them through the topology services (do_create, do_update, do_delete), each writing its
Change row, all in one transaction with one Operation (`fleet_apply`) that keeps the file.
A plan is a preview: it takes no lock and writes nothing.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import CheckConstraint
from django.utils import timezone

from steering import capacity, whatif
from steering.choices import AdminState, OperationKind, OperationStatus
from steering.fleetfile import KINDS, Fleet, InvalidFleet, build, fingerprint, load, to_document
from steering.fleetfile import text as fleet_text
from steering.fleetfile.diff import CREATE, DELETE, UPDATE, Change, diff, summary
from steering.fleetfile.normalise import canonical, field_names, object_key
from steering.fleetfile.normalise import schema as file_schema
from steering.models import (
    VIP,
    AnycastPrefix,
    Backend,
    ClientNetwork,
    Monitor,
    Operation,
    Pool,
    PoP,
    Region,
    SafetyRule,
    Service,
)
from steering.models import Change as ChangeRow
from steering.representation import weight_inputs
from steering.services import guard, notifications
from steering.services.allowlist import allowlist_error
from steering.services.audit import ChangeSet, bump_version
from steering.services.context import Actor
from steering.services.errors import CapacityGuardRefused, InvalidInput, ServiceError, StaleWrite, StateConflict
from steering.services.kernel import require_reason
from steering.services.operation_lifecycle import finish_immediately
from steering.services.topology import do_create, do_delete, do_update
from steering.validators import validate_monitor_path

MODELS: dict[str, type[models.Model]] = {
    "region": Region, "prefix": AnycastPrefix, "monitor": Monitor, "service": Service, "pop": PoP,
    "pool": Pool, "vip": VIP, "client_network": ClientNetwork, "backend": Backend, "safety_rule": SafetyRule,
}
# A safety rule names its pool by PoP and slug in the file; the row has only the pool.
VIA: dict[tuple[str, str], str] = {("safety_rule", "pop"): "pool__pop__slug"}
Ids = dict[str, dict[str, int]]  # kind -> key -> primary key
CHANGED_BY_LIMIT = 5


# --- the live fleet ----------------------------------------------------------------------------


def _lookup(kind: str, name: str) -> str:
    """The values() lookup of a file field: own fields as they are, references by the target's name."""
    target = KINDS[kind].refs.get(name)
    if target is None or kind == "backend":
        return name
    return VIA.get((kind, name), f"{name}__{KINDS[target].identity[-1]}")


def live_fleet() -> tuple[Fleet, Ids]:
    """The desired configuration as the database holds it now, and each object's id by its key."""
    document: dict[str, Any] = {"version": 1}
    ids: Ids = {kind: {} for kind in KINDS}
    for kind in KINDS.values():
        if kind.name == "backend":
            continue
        names = field_names(kind.name)
        lookups = [_lookup(kind.name, n) for n in names]
        rows = []
        for values in MODELS[kind.name]._default_manager.values("pk", *lookups).order_by("pk"):
            row = {n: values[lk] for n, lk in zip(names, lookups, strict=True)}
            ids[kind.name][object_key(kind.name, canonical(kind.name, row))] = values["pk"]
            rows.append(row)
        document[kind.section] = rows
    pools = {object_key("pool", row): row for row in document["pools"]}
    for row in pools.values():
        row["backends"] = []
    names = field_names("backend")
    for values in Backend.objects.values("pk", "pool__pop__slug", "pool__slug", *names).order_by("pk"):
        row = {n: values[n] for n in names}
        pool_key = f"{values['pool__pop__slug']}/{values['pool__slug']}"
        pools[pool_key]["backends"].append(row)
        ids["backend"][f"{pool_key}/{row['name']}"] = values["pk"]
    return build(document), ids


def export_document() -> tuple[dict[str, Any], str]:
    """The fleet file of the live fleet, and its fingerprint."""
    fleet, _ = live_fleet()
    return to_document(fleet), fingerprint(fleet)


def schema() -> dict[str, Any]:
    """The fleet file's JSON Schema (steering/fleetfile/schema.json)."""
    return file_schema()


def parse_file(data: Any) -> Fleet:
    """A fleet file as sent: its text (YAML or JSON) or the document itself; 400 with every error by path."""
    try:
        document = fleet_text.parse(data) if isinstance(data, str) else data
        return load(document)
    except InvalidFleet as exc:
        raise InvalidInput(exc.errors) from None


# --- checks a plan runs without writing --------------------------------------------------------


def _model_errors(change: Change, desired: Fleet) -> dict[str, list[str]]:
    """What the model's own validators and check constraints say about the object the file wants.

    References are left to the topology services (they exist only once the apply creates them)."""
    kind, model = change.kind, MODELS[change.kind]
    obj = desired[kind][change.key]
    refs = set(KINDS[kind].refs) | ({"pool"} if kind == "backend" else set())
    values = {n: obj.fields[n] for n in field_names(kind) if n not in refs}
    instance = model(**values)
    errors: dict[str, list[str]] = {}
    checked = [n for n in (change.fields if change.op == UPDATE else values) if n not in refs]
    exclude = {f.name for f in model._meta.concrete_fields} - set(checked)
    try:
        instance.clean_fields(exclude=exclude)
    except ValidationError as exc:
        for name, messages in exc.message_dict.items():
            errors.setdefault(name, []).extend(messages)
    for constraint in model._meta.constraints:
        if isinstance(constraint, CheckConstraint):
            try:
                constraint.validate(model, instance, exclude=refs | {"id"})
            except ValidationError as exc:
                errors.setdefault("__all__", []).extend(exc.messages)
    if kind == "backend" and "address" in checked and "address" not in errors:
        why = allowlist_error(values["address"])
        if why:
            errors["address"] = [why]
    if kind == "monitor" and "path" in checked and "path" not in errors:
        try:
            validate_monitor_path(values["path"])
        except ValidationError as exc:
            errors["path"] = list(exc.messages)
    return errors


def _at(path: str, errors: dict[str, list[str]]) -> dict[str, list[str]]:
    """Field errors of one object, keyed by where the object is in the file."""
    out: dict[str, list[str]] = {}
    for name, messages in errors.items():
        where = path or "/"
        if name not in ("__all__", "non_field_errors"):
            where = f"{path}/{name}"
        out.setdefault(where, []).extend(str(m) for m in messages)
    return out


def validate_changes(changes: list[Change], desired: Fleet) -> None:
    errors: dict[str, list[str]] = {}
    for change in changes:
        if change.op in (CREATE, UPDATE):
            errors.update(_at(change.path, _model_errors(change, desired)))
    if errors:
        raise InvalidInput(errors)


# --- the capacity what-if ----------------------------------------------------------------------


def _plain(impact: Any) -> dict[str, Any]:
    """The guard's answer as JSON (an Impact's as_json(), or the dict older guards answer)."""
    if isinstance(impact, dict):
        return impact
    return dict(impact.as_json())


def _part(subject: str, impact: Any) -> dict[str, Any]:
    """One group's what-if, named by what the file does to it. The guard judges a deletion the way
    it judges a drain (the backends leave new traffic), so it is asked about a drain."""
    return {**_plain(impact), "action": "fleet_apply", "subject": subject}


def _pool_what_if(pool_key: str, changes: list[Change], desired: Fleet, ids: Ids) -> dict[str, Any]:
    """A pool's backends lowered, deleted or turned backup (and the new ones it gains), as one weight change."""
    pool = Pool.objects.select_related("pop").get(pk=ids["pool"][pool_key])
    fleet, bases = guard.build_fleet([pool])
    backends = {b.pk: b for b in Backend.objects.filter(pool=pool).select_related("pool")}
    now = timezone.now()
    weights: dict[int, int] = {}
    capacities: dict[int, float] = {}
    words = []
    for change in changes:
        pk = ids["backend"][change.key]
        name = change.key.rsplit("/", 1)[-1]
        backup = change.fields.get("backup")
        if change.op == DELETE or (backup and backup["to"]):
            weights[pk] = 0
            words.append(f"{'delete' if change.op == DELETE else 'backup'} {name}")
            continue
        b = backends[pk]
        weight = int(change.fields.get("weight", {}).get("to", b.weight))
        inputs = weight_inputs(b, pool_in_panic=pool.in_panic, now=now)
        weights[pk] = capacity.effective_weight(dataclasses.replace(inputs, weight=weight))
        if "capacity_rps" in change.fields:
            capacities[pk] = float(change.fields["capacity_rps"]["to"]) or guard.UNLIMITED
        words.append(f"lower {name}")
    # Backends the file adds to this pool take their share after the apply (none before it).
    added: list[whatif.BackendNode] = []
    for key, obj in desired["backend"].items():
        if key not in ids["backend"] and f"{obj.fields['pop']}/{obj.fields['pool']}" == pool_key:
            node_id = -(len(added) + 1)
            added.append(whatif.BackendNode(node_id, pool.pk, key, 0,
                                            float(obj.fields["capacity_rps"]) or guard.UNLIMITED, obj.fields["backup"]))
            weights[node_id] = int(obj.fields["weight"])
    nodes = tuple(dataclasses.replace(n, capacity=capacities[n.id]) if n.id in capacities else n
                  for n in fleet.backends) + tuple(added)
    result = whatif.assess_weights(dataclasses.replace(fleet, backends=nodes), weights)
    if added:
        words.append(f"add {len(added)}")
    return _part(f"pool {pool_key}: {', '.join(words)}",
                 guard.report(pool, "drain", result, bases, len(changes)))


def _dns_what_if(service_key: str, region_key: str, ids: Ids) -> dict[str, Any]:
    """A service's last enabled VIP in a region goes: DNS stops sending that region's clients there."""
    service = Service.objects.get(pk=ids["service"][service_key])
    region = Region.objects.get(pk=ids["region"][region_key])
    fleet, bases = guard.build_fleet(Pool.objects.filter(service=service).select_related("pop"))
    subject = f"DNS: {service_key} no longer answers with region {region_key}"
    node = next((s for s in fleet.services if s.id == service.pk), None)
    if node is None or node.anycast:
        note = ("anycast: clients reach the nearest announcing PoP whatever DNS answers"
                if node is not None else f"{service_key} has no pools: no traffic moves")
        return _part(subject, guard.report(region, "drain", whatif.Assessment(0.0, 0.0, (), (note,)), bases, 0))
    services = tuple(dataclasses.replace(s, regions={r: v for r, v in s.regions.items() if r != region.pk})
                     for s in fleet.services)
    result = whatif.assess(dataclasses.replace(fleet, services=services), whatif.Action("drain", "region", region.pk))
    return _part(subject, guard.report(region, "drain", result, bases, 0))


def _combine(parts: list[dict[str, Any]]) -> dict[str, Any]:
    verdicts = {p["verdict"] for p in parts}
    verdict = "outage" if "outage" in verdicts else "overload" if "overload" in verdicts else "safe"
    unsafe = [p for p in parts if not p["safe"]]
    if not parts:
        explain = "Nothing in this file takes capacity away."
    elif not unsafe:
        explain = "The receivers can absorb the moved traffic."
    else:
        explain = " ".join(f"{p['subject']}: {p['explain']}" for p in unsafe)
    bases = {p["basis"] for p in parts}
    return {
        "action": "fleet_apply",
        "target": {"type": "fleet", "id": 0, "name": "fleet"},
        "basis": bases.pop() if len(bases) == 1 else ("mixed" if bases else "configured"),
        "verdict": verdict,
        "safe": verdict == "safe",
        "backends_affected": sum(int(p.get("backends_affected", 0)) for p in parts),
        "moved_rps": round(sum(float(p.get("moved_rps", 0.0)) for p in parts), 1),
        "unplaced_rps": round(sum(float(p.get("unplaced_rps", 0.0)) for p in parts), 1),
        "receivers": [r for p in parts for r in p.get("receivers", [])],
        "notes": [f"{p['subject']}: {n}" for p in parts for n in p.get("notes", [])],
        "explain": explain,
        "parts": parts,
    }


def what_if(changes: list[Change], current: Fleet, desired: Fleet, ids: Ids) -> dict[str, Any]:
    """The guard's what-if for everything in the plan that takes capacity away, grouped the way
    traffic moves: a region or PoP deleted as a site leaving, a pool's backends together, a
    service's DNS answer in a region. Each is judged against the live fleet."""
    reducing = [c for c in changes if c.reduces_capacity]
    parts: list[dict[str, Any]] = []
    gone_regions = sorted(c.key for c in reducing if c.kind == "region")
    gone_pops = sorted(c.key for c in reducing if c.kind == "pop"
                       and current["pop"][c.key].fields["region"] not in gone_regions)
    covered = set(gone_pops) | {k for k, p in current["pop"].items() if p.fields["region"] in gone_regions}
    for key in gone_regions:
        region = Region.objects.get(pk=ids["region"][key])
        removed = Backend.objects.filter(pool__pop__region=region, admin_state=AdminState.READY).select_related("pool")
        parts.append(_part(f"region {key} deleted", guard.assess_removal(region, removed, action="drain")))
    for key in gone_pops:
        pop = PoP.objects.get(pk=ids["pop"][key])
        removed = Backend.objects.filter(pool__pop=pop, admin_state=AdminState.READY).select_related("pool")
        parts.append(_part(f"PoP {key} deleted", guard.assess_removal(pop, removed, action="drain")))
    by_pool: dict[str, list[Change]] = defaultdict(list)
    for c in reducing:
        if c.kind == "backend":
            b = current["backend"][c.key].fields
            if b["pop"] not in covered:
                by_pool[f"{b['pop']}/{b['pool']}"].append(c)
    for pool_key in sorted(by_pool):
        parts.append(_pool_what_if(pool_key, by_pool[pool_key], desired, ids))
    lost = set()
    for c in reducing:
        if c.kind == "vip":
            v = current["vip"][c.key].fields
            lost.add((v["service"], v["region"]))
    still = {(v.fields["service"], v.fields["region"]) for v in desired["vip"].values() if v.fields["enabled"]}
    for service_key, region_key in sorted(lost - still):
        if service_key in desired["service"] and region_key in desired["region"]:
            parts.append(_dns_what_if(service_key, region_key, ids))
    return _combine(parts)


# --- plan ----------------------------------------------------------------------------------


def _plan_body(live: Fleet, desired: Fleet, changes: list[Change], impact: dict[str, Any]) -> dict[str, Any]:
    return {
        "fingerprint": fingerprint(live),
        "file_fingerprint": fingerprint(desired),
        "summary": summary(changes),
        "changes": [c.as_dict() for c in changes],
        "impact": impact,
        "safe": impact["safe"],
    }


def plan(desired: Fleet) -> dict[str, Any]:
    """What applying `desired` would change, and the what-if of what it takes away. Read-only."""
    live, ids = live_fleet()
    changes = diff(live, desired)
    validate_changes(changes, desired)
    return _plan_body(live, desired, changes, what_if(changes, live, desired, ids))


# --- apply ---------------------------------------------------------------------------------


def _lock(changes: Iterable[Change], ids: Ids) -> None:
    """Row locks on what the apply updates or deletes, kind by kind in id order (no deadlock between applies)."""
    wanted: dict[str, list[int]] = defaultdict(list)
    for c in changes:
        if c.op != CREATE and c.key in ids[c.kind]:
            wanted[c.kind].append(ids[c.kind][c.key])
    for kind in KINDS:
        if wanted[kind]:
            list(MODELS[kind]._default_manager.select_for_update().filter(pk__in=wanted[kind])
                 .order_by("pk").values_list("pk", flat=True))


def _refuse_under_ramp(changes: list[Change], ids: Ids) -> None:
    """A weight the file changes while a weight ramp moves it would be overwritten by the ramp's next step."""
    targets = {ids["backend"][c.key]: c.key for c in changes
               if c.kind == "backend" and c.op == UPDATE and "weight" in c.fields}
    if not targets:
        return
    running = Operation.objects.filter(kind=OperationKind.WEIGHT, target_type="backend", target_id__in=targets,
                                       status__in=[OperationStatus.RUNNING, OperationStatus.PAUSED]).first()
    if running is not None:
        raise StateConflict(f"{targets[running.target_id]} has a weight ramp (operation {running.pk}); abort it or "
                            "let it finish before the fleet file changes its weight.", code="ramp_in_progress")


class FleetGuardRefused(CapacityGuardRefused):
    """409 capacity_guard with the plan's combined impact (its parts are the guard's own impacts)."""

    def __init__(self, impact: dict[str, Any]) -> None:
        ServiceError.__init__(self, impact["explain"], extra={"impact": impact})


def _guard(impact: dict[str, Any], *, force: bool, force_reason: str) -> bool:
    """Refuse what takes away capacity the receivers cannot absorb, unless forced with a reason."""
    if impact["safe"]:
        return False
    if not force:
        raise FleetGuardRefused(impact)
    if not force_reason.strip():
        raise InvalidInput({"force_reason": ["Forcing past the capacity guard needs its own reason."]})
    return True


class _Applier:
    """Turns each change into a topology service call, resolving names to the rows they name."""

    def __init__(self, desired: Fleet, ids: Ids, actor: Actor, reason: str, operation_id: int) -> None:
        self.desired, self.ids, self.actor, self.reason = desired, ids, actor, reason
        self.operation_id = operation_id  # each write's Change names the apply: the audit shows which file made it
        self.made: dict[tuple[str, str], models.Model] = {}
        self.deferred: list[tuple[models.Model, str]] = []

    def row(self, kind: str, key: str) -> models.Model:
        if (kind, key) not in self.made:
            self.made[kind, key] = MODELS[kind]._default_manager.get(pk=self.ids[kind][key])
        return self.made[kind, key]

    def exists(self, kind: str, key: str) -> bool:
        return (kind, key) in self.made or key in self.ids[kind]

    def value(self, kind: str, name: str, fields: dict[str, Any]) -> Any:
        target = KINDS[kind].refs.get(name)
        value = fields[name]
        if target is None or value is None:
            return value
        if target == "pool":
            value = f"{fields['pop']}/{value}"
        return self.row(target, value)

    def data(self, kind: str, names: Iterable[str], fields: dict[str, Any]) -> dict[str, Any]:
        wanted = list(names)
        if kind == "safety_rule" and "pop" in wanted:  # the row keeps the pool alone: a new PoP is a new pool
            wanted = [n for n in wanted if n != "pop"] + ([] if "pool" in wanted else ["pool"])
        return {name: self.value(kind, name, fields) for name in wanted}

    def apply(self, change: Change) -> None:
        try:
            self._apply(change)
        except InvalidInput as exc:
            raise InvalidInput(_at(change.path or f"({change.kind} {change.key})", exc.errors)) from None

    def _apply(self, change: Change) -> None:
        kind, model = change.kind, MODELS[change.kind]
        if change.op == DELETE:
            row = self.row(kind, change.key)
            if isinstance(row, Pool):
                # Pools that back each other and both go: unlink the one left (the others went first).
                for primary in Pool.objects.filter(backup_pool=row).order_by("pk"):
                    do_update(primary, {"backup_pool": None}, actor=self.actor, reason=self.reason,
                              operation_id=self.operation_id)
            do_delete(row, actor=self.actor, reason=self.reason, operation_id=self.operation_id)
            return
        fields = self.desired[kind][change.key].fields
        if change.op == UPDATE:
            do_update(self.row(kind, change.key), self.data(kind, change.fields, fields),
                      actor=self.actor, reason=self.reason, operation_id=self.operation_id)
            return
        names = list(field_names(kind))
        backup = f"{fields['pop']}/{fields['backup_pool']}" if kind == "pool" and fields["backup_pool"] else None
        later = backup is not None and not self.exists("pool", backup)
        if later:
            names.remove("backup_pool")  # pools backing each other: linked once both exist
        data = self.data(kind, names, fields)
        if kind == "backend":
            data["pool"] = self.row("pool", f"{fields['pop']}/{fields['pool']}")
        self.made[kind, change.key] = do_create(model, data, actor=self.actor, reason=self.reason,
                                                operation_id=self.operation_id)
        if later and backup is not None:
            self.deferred.append((self.made[kind, change.key], backup))

    def link_deferred(self) -> None:
        for pool, backup_key in self.deferred:
            do_update(pool, {"backup_pool": self.row("pool", backup_key)}, actor=self.actor, reason=self.reason,
                      operation_id=self.operation_id)


def do_apply(desired: Fleet, *, actor: Actor, reason: str, force: bool = False, force_reason: str = "",
             expected_fingerprint: str | None = None) -> tuple[Operation, dict[str, Any]]:
    """Make the live fleet what `desired` says, as one operation in one transaction.

    412 when `expected_fingerprint` (the plan's, sent as If-Match) is not the live fleet's any more;
    409 capacity_guard when what it takes away cannot be absorbed, unless forced with a reason."""
    reason = require_reason(reason)
    with transaction.atomic():
        live, ids = live_fleet()
        _lock(diff(live, desired), ids)
        bump_version()  # the state version's row lock: no other change commits until this one has
        live, ids = live_fleet()
        before = fingerprint(live)
        if expected_fingerprint is not None and expected_fingerprint != before:
            raise StaleWrite("The fleet changed since the plan was made; plan again.",
                             extra={"current_fingerprint": before})
        changes = diff(live, desired)
        _lock(changes, ids)
        validate_changes(changes, desired)
        _refuse_under_ramp(changes, ids)
        impact = what_if(changes, live, desired, ids)
        forced = _guard(impact, force=force, force_reason=force_reason)
        body = _plan_body(live, desired, changes, impact)
        op = Operation.objects.create(
            kind=OperationKind.FLEET_APPLY, status=OperationStatus.RUNNING, target_type="fleet", target_id=0,
            target_repr="fleet", actor_id=actor.user_id, actor_name=actor.name, source=actor.source,
            request_id=actor.request_id, reason=reason, forced=forced,
            # Not under "impact": an action's impact has one target; this one combines the plan's parts.
            params={"fleet_impact": impact, "force_reason": force_reason, "file_fingerprint": body["file_fingerprint"]},
        )
        notifications.operation_changed(op)
        op.steps = [{"name": f"{what} {n}", "status": "done"} for what, n in body["summary"].items() if n]
        applier = _Applier(desired, ids, actor, reason, op.pk)
        for change in changes:
            applier.apply(change)
        applier.link_deferred()
        after, after_ids = live_fleet()
        result = {**body["summary"], "changes": len(changes), "fingerprint_before": before,
                  "fingerprint_after": fingerprint(after), "file_fingerprint": body["file_fingerprint"]}
        # The file as applied and the ids it gave each object: what drift compares against.
        op.params = {**op.params, "fleet": to_document(desired), "ids": after_ids}
        op.save(update_fields=["params", "steps"])
        audit = ChangeSet(actor, reason, operation_id=op.pk, forced=forced, force_reason=force_reason)
        finish_immediately(op, audit, result)
        row = audit.record("fleet.apply", op, before=None, after=result)
        # Changes after this one were made by hand since the apply (drift names them).
        Operation.objects.filter(pk=op.pk).update(result={**result, "last_change_id": row.pk})
    op.refresh_from_db()
    return op, body


# --- drift ---------------------------------------------------------------------------------


def _attname(kind: str, name: str) -> str:
    if (kind, name) in VIA:
        return "pool_id"
    return f"{name}_id" if name in KINDS[kind].refs and kind != "backend" else name


def _relevant(row: ChangeRow, attnames: set[str]) -> bool:
    if row.before is None or row.after is None or not attnames:
        return True
    return any(row.before.get(a) != row.after.get(a) for a in attnames)


def drift() -> dict[str, Any]:
    """Where the live fleet differs from the last file applied, and who changed each object since."""
    live, ids = live_fleet()
    op = Operation.objects.filter(kind=OperationKind.FLEET_APPLY, status=OperationStatus.SUCCEEDED).order_by("-pk").first()
    if op is None or "fleet" not in op.params:
        return {"state": "never_applied", "operation": None, "fingerprint": fingerprint(live), "differences": []}
    applied = build(op.params["fleet"])
    applied_ids: Ids = op.params.get("ids", {})
    since = int(op.result.get("last_change_id", 0))
    changes = diff(applied, live)  # from the file to what is live now
    wanted: dict[str, set[int]] = defaultdict(set)
    for c in changes:
        for pk in (ids[c.kind].get(c.key), applied_ids.get(c.kind, {}).get(c.key)):
            if pk is not None:
                wanted[c.kind].add(pk)
    rows: dict[tuple[str, int], list[ChangeRow]] = defaultdict(list)
    for kind, pks in wanted.items():
        model_name = MODELS[kind]._meta.model_name
        for row in ChangeRow.objects.filter(object_type=model_name, object_id__in=pks, pk__gt=since).order_by("-pk"):
            rows[kind, row.object_id].append(row)
    words = {CREATE: "added", UPDATE: "changed", DELETE: "removed"}
    differences = []
    for c in changes:
        attnames = {_attname(c.kind, n) for n in c.fields} if c.op == UPDATE else set()
        mine = dict.fromkeys(pk for pk in (ids[c.kind].get(c.key), applied_ids.get(c.kind, {}).get(c.key)) if pk)
        history = sorted((r for pk in mine for r in rows[c.kind, pk] if _relevant(r, attnames)),
                         key=lambda r: r.pk, reverse=True)[:CHANGED_BY_LIMIT]
        differences.append({
            "kind": c.kind, "key": c.key, "difference": words[c.op],
            "fields": {n: {"file": v["from"], "live": v["to"]} for n, v in c.fields.items()},
            "changed_by": [{"change_id": r.pk, "time": r.time.isoformat(), "actor": r.actor_name, "source": r.source,
                            "action": r.action, "reason": r.reason} for r in history],
        })
    return {
        "state": "drifted" if differences else "in_sync",
        "operation": {"id": op.pk, "created_at": op.created_at.isoformat(), "actor": op.actor_name,
                      "reason": op.reason, "file_fingerprint": op.params.get("file_fingerprint")},
        "fingerprint": fingerprint(live),
        "differences": differences,
    }

