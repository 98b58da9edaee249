"""What steerctl prints: the API's JSON with --json, otherwise a few lines a person reads in a deploy log.

Human output leads with the answer (verdict, operation state), then the numbers behind it
(moved req/s, each overloaded receiver's load against its capacity), so a failed pipeline step
explains itself without a second command.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from steering.cli.client import ApiError, CliError, GuardRefused, StateConflict

MAX_RECEIVERS = 8


def print_json(data: Any, stream: TextIO | None = None) -> None:
    """Machine output: exactly one JSON document on stdout."""
    out = stream or sys.stdout
    out.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


def print_lines(lines: list[str], stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    for line in lines:
        out.write(line + "\n")


def _rps(value: Any) -> str:
    return "?" if value is None else f"{float(value):.0f}"


def receiver_line(row: dict[str, Any]) -> str:
    cap = row.get("capacity_rps")
    load = f"{_rps(row.get('load_after_rps'))}/{_rps(cap)} req/s" if cap else f"{_rps(row.get('load_after_rps'))} req/s (no capacity declared)"
    headroom = row.get("headroom_after_percent")
    extra = f", headroom {headroom:+.0f}%" if headroom is not None else ""
    mark = "OVER " if row.get("overloaded") else ""
    return f"  {mark}{row.get('type', '')} {row.get('name', row.get('id'))}: {load} (was {_rps(row.get('load_before_rps'))}{extra})"


def impact_lines(impact: dict[str, Any]) -> list[str]:
    """Verdict first, then the traffic that moves and the receivers that would be overloaded."""
    if not impact:
        return []
    lines = [f"verdict: {impact.get('verdict', '?')} ({impact.get('basis', '?')} rates): {impact.get('explain', '')}".rstrip()]
    if impact.get("action") == "undrain":
        return lines + [f"note: {n}" for n in impact.get("notes") or []]
    moved = f"moves {_rps(impact.get('moved_rps'))} req/s from {impact.get('backends_affected', 0)} backend(s)"
    if impact.get("unplaced_rps"):
        moved += f"; {_rps(impact.get('unplaced_rps'))} req/s would have nowhere to go"
    lines.append(moved)
    lines.extend(f"breaks safety rule {b.get('rule')}: {b.get('detail')}" for b in impact.get("safety_rules") or [])
    receivers = list(impact.get("receivers") or [])
    overloaded = [r for r in receivers if r.get("overloaded")]
    shown = overloaded or receivers
    if shown:
        lines.append("overloaded receivers:" if overloaded else "receivers:")
        lines.extend(receiver_line(r) for r in shown[:MAX_RECEIVERS])
        if len(shown) > MAX_RECEIVERS:
            lines.append(f"  ... and {len(shown) - MAX_RECEIVERS} more (--json for all)")
    lines.extend(f"note: {n}" for n in impact.get("notes") or [])
    return lines


def progress_text(op: dict[str, Any]) -> str:
    progress = op.get("progress") or {}
    bits = [f"{progress.get('percent', 0)}%"]
    if progress.get("backends_total") is not None and op.get("kind") == "drain":
        bits.append(f"{progress.get('backends_left', 0)} of {progress['backends_total']} backend(s) left")
    if progress.get("seconds_left") is not None and op.get("status") == "running":
        bits.append(f"{progress['seconds_left']} s left")
    return ", ".join(bits)


def operation_line(op: dict[str, Any]) -> str:
    """`operation 12 drain bom1/api-web/api-3: running, 0%, 1 of 1 backend(s) left, 29 s left`."""
    forced = " (forced)" if op.get("forced") else ""
    line = f"operation {op.get('id')} {op.get('kind')} {op.get('target_repr')}{forced}: {op.get('status')}, {progress_text(op)}"
    result = op.get("result") or {}
    if op.get("status") in ("aborted", "failed") and result:
        line += " (" + ", ".join(f"{k}: {v}" for k, v in result.items()) + ")"
    return line


def action_lines(verb: str, label: str, body: dict[str, Any], *, dry_run: bool = False) -> list[str]:
    if dry_run:
        return [f"dry run: {verb} {label}", *impact_lines(body)]
    op = body.get("operation") or {}
    lines = [f"{verb} {label}: accepted", operation_line(op)]
    return lines + impact_lines(body.get("impact") or {})


def error_lines(exc: CliError) -> list[str]:
    """The explanation a deploy log needs: what was refused, the code, and for the guard, who overflows."""
    if isinstance(exc, GuardRefused) and exc.code == "safety_rule":
        return [f"refused by a safety rule (safety_rule): {exc.detail}",
                *impact_lines(exc.impact)[1:],
                "to override: --force --force-reason 'why breaking this rule is acceptable'"]
    if isinstance(exc, GuardRefused):
        return [f"refused by the capacity guard (capacity_guard): {exc.detail}",
                *impact_lines(exc.impact)[1:],
                "to override: --force --force-reason 'why this overload is acceptable'"]
    if isinstance(exc, StateConflict):
        lines = [f"conflict ({exc.code}): {exc.detail}"]
        running = exc.body.get("running_operations")
        if running:
            lines.append("running operations: " + ", ".join(str(r) for r in running) + " (steerctl wait ID)")
        return lines
    if isinstance(exc, ApiError):
        lines = [f"error: HTTP {exc.status} {exc.code}: {exc.detail or exc.message}"]
        for fieldname, problems in (exc.body.get("errors") or {}).items():
            text = "; ".join(str(p) for p in problems) if isinstance(problems, list) else str(problems)
            lines.append(f"  {fieldname}: {text}")
        return lines
    return [f"error: {exc.message}"]


def error_json(exc: CliError) -> dict[str, Any]:
    """With --json an error is still one JSON document: the API's error body, or ours in its shape."""
    if isinstance(exc, ApiError):
        return {"status": exc.status, **exc.body, "code": exc.code}
    return {"code": "client_error", "detail": exc.message}


def backend_status_lines(backend: dict[str, Any], op: dict[str, Any] | None) -> list[str]:
    lines = [
        f"backend {backend.get('path')} ({backend.get('address')}:{backend.get('port')})",
        f"  admin_state: {backend.get('admin_state')}   health: {backend.get('health')}",
        f"  weight: {backend.get('weight')} -> effective {backend.get('effective_weight')}"
        f" ({backend.get('effective_weight_reason') or 'as configured'})",
    ]
    if backend.get("drain_deadline"):
        lines.append(f"  drain deadline: {backend['drain_deadline']}")
    if op:
        lines.append("  " + operation_line(op))
    return lines


def site_status_lines(kind: str, label: str, summary: dict[str, Any]) -> list[str]:
    obj = summary.get("object") or {}
    counts = summary.get("backends") or {}
    by_state = ", ".join(f"{k} {v}" for k, v in (counts.get("admin_state") or {}).items() if v)
    by_health = ", ".join(f"{k} {v}" for k, v in (counts.get("health") or {}).items() if v)
    lines = [
        f"{kind} {label}: admin_state {obj.get('admin_state', '?')}",
        f"  backends: {counts.get('total', 0)} ({by_state or 'none'})",
        f"  health: {by_health or 'none'}",
    ]
    out = summary.get("out_of_service") or []
    if out:
        lines.append("  out of service: " + ", ".join(f"{b.get('path')} ({b.get('admin_state')})" for b in out))
    lines.extend("  " + operation_line(op) for op in summary.get("running_operations") or [])
    return lines
