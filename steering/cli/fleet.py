"""steerctl export / plan / apply / drift: the fleet file (docs/fleet-file.md) through /api/v1/fleet/.

steerctl never parses the file: it sends the text as it is and the server reads it (YAML or
JSON), so steerctl stays standard-library only and every client gets the same errors, each at
its path in the file. `export` asks the server for YAML.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from steering.cli import EXIT_GUARD, EXIT_OK
from steering.cli import output as out
from steering.cli.client import Client, CliError, new_idempotency_key

API = "/api/v1/fleet"
COMMANDS = ("export", "plan", "apply", "drift")
MARKS = {"create": "+", "update": "~", "delete": "-"}
MAX_SHOWN_FIELDS = 12


def add_parsers(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = add("export", "print the fleet's desired configuration as a fleet file (YAML; --json for JSON)")
    p = add("plan", "what applying FILE would change, and the capacity what-if (exit 3: the guard would refuse)")
    p.add_argument("file", metavar="FILE", help="the fleet file (YAML or JSON); - reads stdin")
    p = add("apply", "make the fleet what FILE says, as one audited operation (plans first unless --if-match)")
    p.add_argument("file", metavar="FILE", help="the fleet file (YAML or JSON); - reads stdin")
    p.add_argument("--reason", help="why (audited); env STEERING_REASON as a fallback")
    p.add_argument("--force", action="store_true", help="proceed past the capacity guard (needs --force-reason)")
    p.add_argument("--force-reason", help="why the overload is acceptable (audited)")
    p.add_argument("--if-match", metavar="FINGERPRINT",
                   help="the fingerprint of a reviewed plan: refused (exit 6) if the fleet changed since")
    p.add_argument("--idempotency-key", metavar="KEY", help="reuse a key to make re-running this step safe")
    add("drift", "where the live fleet differs from the last fleet file applied, and who changed it")


def check_usage(args: argparse.Namespace) -> None:
    """Usage errors (exit 2) before any configuration or network error."""
    if args.command != "apply":
        return
    parser: argparse.ArgumentParser = args.command_parser
    args.reason = (args.reason or os.environ.get("STEERING_REASON", "")).strip()
    if not args.reason:
        parser.error("--reason is required (or set STEERING_REASON): it goes into the audit log")
    if args.force != bool(args.force_reason):
        parser.error("--force and --force-reason go together: overriding the guard needs its own reason")


def _read(path: str) -> str:
    try:
        if path == "-":
            return sys.stdin.read()
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise CliError(f"{path} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None


def _value(value: Any) -> str:
    return "null" if value is None else repr(value) if isinstance(value, str) and (not value or " " in value) else str(value)


def change_lines(change: dict[str, Any]) -> list[str]:
    op = change.get("op", "?")
    kind = str(change.get("kind", "")).replace("_", " ")
    mark = "  (takes capacity away)" if change.get("reduces_capacity") else ""
    lines = [f"{MARKS.get(op, '?')} {kind} {change.get('key')}{mark}"]
    fields = change.get("fields") or {}
    if op == "update":
        lines += [f"    {name}: {_value(v.get('from'))} -> {_value(v.get('to'))}" for name, v in fields.items()]
    elif op == "create":
        shown = [f"{name}={_value(v.get('to'))}" for name, v in list(fields.items())[:MAX_SHOWN_FIELDS]]
        more = f" (+{len(fields) - MAX_SHOWN_FIELDS} more)" if len(fields) > MAX_SHOWN_FIELDS else ""
        lines.append("    " + " ".join(shown) + more)
    return lines


def plan_lines(plan: dict[str, Any]) -> list[str]:
    counts = plan.get("summary") or {}
    changes = plan.get("changes") or []
    if not changes:
        return [f"no changes: the fleet is what the file says ({plan.get('fingerprint')})"]
    lines = [f"plan against {plan.get('fingerprint')}: {counts.get('create', 0)} to create, "
             f"{counts.get('update', 0)} to update, {counts.get('delete', 0)} to delete"]
    for change in changes:
        lines += change_lines(change)
    impact = plan.get("impact") or {}
    if impact.get("parts"):
        lines.append("capacity what-if of what it takes away:")
        lines += ["  " + line for line in out.impact_lines(impact)]
        for part in impact["parts"]:
            lines.append(f"  - {part.get('subject')}: {part.get('verdict')}: {part.get('explain')}")
    return lines


def drift_lines(drift: dict[str, Any]) -> list[str]:
    op = drift.get("operation")
    if drift.get("state") == "never_applied" or not op:
        return ["no fleet file has been applied yet (steerctl apply FILE)"]
    applied = f"the fleet file applied by operation {op.get('id')} ({op.get('created_at')}, {op.get('actor')})"
    differences = drift.get("differences") or []
    if not differences:
        return [f"in sync with {applied}"]
    lines = [f"{len(differences)} difference(s) from {applied}:"]
    marks = {"added": "+", "changed": "~", "removed": "-"}
    for d in differences:
        kind = str(d.get("kind", "")).replace("_", " ")
        what = {"added": "added (not in the file)", "removed": "removed (in the file)"}.get(d.get("difference", ""), "")
        lines.append(f"{marks.get(d.get('difference', ''), '?')} {kind} {d.get('key')} {what}".rstrip())
        if d.get("difference") == "changed":
            lines += [f"    {name}: file {_value(v.get('file'))}, live {_value(v.get('live'))}"
                      for name, v in (d.get("fields") or {}).items()]
        for c in d.get("changed_by") or []:
            why = f": {c.get('reason')}" if c.get("reason") else ""
            lines.append(f"    by {c.get('actor')} ({c.get('source')}) at {c.get('time')}, {c.get('action')}{why}")
    return lines


def run(client: Client, args: argparse.Namespace, as_json: bool) -> int:
    if args.command == "export":
        if as_json:
            out.print_json(client.get(f"{API}/export/"))
        else:
            sys.stdout.write(client.get_text(f"{API}/export/", "application/yaml"))
        return EXIT_OK
    if args.command == "drift":
        drift = client.get(f"{API}/drift/")
        if as_json:
            out.print_json(drift)
        else:
            out.print_lines(drift_lines(drift))
        return EXIT_OK
    text = _read(args.file)
    if args.command == "plan":
        plan = client.post(f"{API}/plan/", {"fleet": text}).body
        if as_json:
            out.print_json(plan)
        else:
            out.print_lines(plan_lines(plan))
        return EXIT_OK if plan.get("safe", True) else EXIT_GUARD
    fingerprint = args.if_match
    if fingerprint is None:
        plan = client.post(f"{API}/plan/", {"fleet": text}).body
        fingerprint = plan["fingerprint"]
        if not as_json:
            out.print_lines(plan_lines(plan))
            sys.stdout.flush()  # the plan shows in the log before the apply's answer
    body: dict[str, Any] = {"fleet": text, "reason": args.reason}
    if args.force:
        body.update(force=True, force_reason=args.force_reason)
    answer = client.post(f"{API}/apply/", body, idempotency_key=args.idempotency_key or new_idempotency_key(),
                         headers={"If-Match": f'"{fingerprint}"'}).body
    if as_json:
        out.print_json(answer)
        return EXIT_OK
    op = answer.get("operation") or {}
    result = op.get("result") or {}
    forced = " (forced past the capacity guard)" if op.get("forced") else ""
    out.print_lines([
        f"applied: operation {op.get('id')} {op.get('status')}{forced}: {result.get('create', 0)} created, "
        f"{result.get('update', 0)} updated, {result.get('delete', 0)} deleted",
        f"the fleet is now {result.get('fingerprint_after')}",
    ])
    return EXIT_OK
