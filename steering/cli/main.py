"""steerctl's command line: argparse wiring, configuration, and the commands, each a few API calls.

Every action sends one Idempotency-Key for the whole invocation, so the client's retries (or a
pipeline re-running the step with --idempotency-key) never act twice. Each outcome maps to an
exit code from steering.cli, the one table pipelines branch on.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from steering.cli import (
    EXIT_ERROR,
    EXIT_GUARD,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_UNCONFIRMED,
    __version__,
    exit_code_table,
)
from steering.cli import fleet as fleet_commands
from steering.cli import output as out
from steering.cli.client import DEFAULT_URL, FINAL_STATUSES, Client, CliError, NotFound, new_idempotency_key
from steering.cli.targets import TARGET_HELP, parse, resolve, site_summary

EPILOG = f"""environment:
  STEERING_URL     API base URL (default {DEFAULT_URL}); --url overrides
  STEERING_TOKEN   bearer token (`manage.py create_token USER --role operator`); --token-file overrides
  STEERING_REASON  default --reason for actions (pipelines: set it once per deploy)

exit codes:
{exit_code_table()}
"""


def _common() -> argparse.ArgumentParser:
    """Options accepted before or after the command; SUPPRESS keeps a later copy from resetting an earlier one."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS, help="API base URL (env STEERING_URL)")
    common.add_argument("--token-file", default=argparse.SUPPRESS, metavar="PATH", help="read the token from PATH")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the API's JSON")
    return common


def _action_options(p: argparse.ArgumentParser, *, guarded: bool, wait: bool = True) -> None:
    p.add_argument("--reason", help="why (audited); env STEERING_REASON as a fallback")
    p.add_argument("--idempotency-key", metavar="KEY", help="reuse a key to make re-running this step safe")
    if guarded:
        p.add_argument("--force", action="store_true", help="proceed past the capacity guard (needs --force-reason)")
        p.add_argument("--force-reason", help="why the overload is acceptable (audited)")
        p.add_argument("--dry-run", action="store_true", help="only show the impact; exit 3 if it would be refused")
    if wait:
        p.add_argument("--wait", action="store_true", help="block until the operation ends")
        p.add_argument("--timeout", type=float, default=600.0, metavar="S", help="with --wait: give up after S s (exit 4)")


def _window_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--not-before", metavar="ISO_TIME", help="start then, not now (e.g. 2026-12-01T02:00:00Z)")
    p.add_argument("--expires-at", metavar="ISO_TIME", help="back in service by itself then (audited as system:scheduler)")


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="steerctl", parents=[common], epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Drain, undrain and re-weight through the steering API, for deploy pipelines; export, plan "
                    "and apply the fleet file (the fleet's configuration as code). TARGET: " + TARGET_HELP,
    )
    parser.add_argument("--version", action="version", version=f"steerctl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(command_parser=p)  # usage errors found later show this command's usage
        return p

    p = add("drain", "stop new traffic to TARGET; it becomes drained when its grace period ends")
    p.add_argument("target", metavar="TARGET")
    p.add_argument("--grace", type=int, metavar="SECONDS", help="time for sessions to finish (default: the pool's)")
    _window_options(p)
    _action_options(p, guarded=True)
    p = add("undrain", "return TARGET to service (slow start ramps it in)")
    p.add_argument("target", metavar="TARGET")
    _action_options(p, guarded=False)
    p = add("maintenance", "take TARGET out of service at once (sessions are cut)")
    p.add_argument("target", metavar="TARGET")
    _window_options(p)
    _action_options(p, guarded=True)
    p = add("weight", "set a backend's configured weight (0-256)")
    p.add_argument("target", metavar="BACKEND")
    p.add_argument("weight", type=int, metavar="N")
    p.add_argument("--ramp", type=int, metavar="SECONDS", help="reach N gradually over SECONDS (a weight ramp)")
    p.add_argument("--steps", metavar="W1,W2,...", help="weights to pass through, e.g. 5,25,100 (a canary)")
    p.add_argument("--step-seconds", type=int, metavar="S", help="with --steps: seconds between steps")
    _action_options(p, guarded=True)
    p = add("impact", "what an action would do: where traffic goes, who would be overloaded")
    p.add_argument("target", metavar="TARGET")
    p.add_argument("--action", choices=["drain", "maintenance", "undrain"], default="drain")
    p = add("status", "TARGET's state: a backend's admin state, health, weight; a site's backends by state")
    p.add_argument("target", metavar="TARGET")
    p = add("wait", "wait for an operation to end (exit 0 succeeded, 1 failed/aborted, 4 timed out, 7 unconfirmed)")
    p.add_argument("operation", type=int, metavar="OPERATION_ID")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S", help="give up after S s (exit 4)")
    p = add("freeze", "the freeze switch: `on` refuses every change but an admin's with a reason, `off` lifts "
                      "it (both admin, audited), `status` shows it")
    p.add_argument("state", choices=["on", "off", "status"])
    p.add_argument("--reason", help="why (audited, and shown to everyone refused); env STEERING_REASON")
    fleet_commands.add_parsers(add)
    return parser


def _client(args: argparse.Namespace) -> Client:
    url = getattr(args, "url", None) or os.environ.get("STEERING_URL") or DEFAULT_URL
    token_file = getattr(args, "token_file", None)
    if token_file:
        try:
            with open(token_file, encoding="utf-8") as fh:
                token = fh.read().strip()
        except OSError as exc:
            raise CliError(f"cannot read the token file {token_file}: {exc.strerror}") from None
    else:
        token = os.environ.get("STEERING_TOKEN", "").strip()
    if not token:
        raise CliError("no API token: set STEERING_TOKEN or pass --token-file PATH")
    return Client(url, token)


def _action_body(args: argparse.Namespace) -> dict[str, Any]:
    parser: argparse.ArgumentParser = args.command_parser
    reason = (args.reason or os.environ.get("STEERING_REASON", "")).strip()
    if not reason:
        parser.error("--reason is required (or set STEERING_REASON): it goes into the audit log")
    body: dict[str, Any] = {"reason": reason}
    if getattr(args, "force", False) != bool(getattr(args, "force_reason", None)):
        parser.error("--force and --force-reason go together: overriding the guard needs its own reason")
    if getattr(args, "force", False):
        body.update(force=True, force_reason=args.force_reason)
    if getattr(args, "dry_run", False):
        body["dry_run"] = True
    if getattr(args, "grace", None) is not None:
        body["grace_seconds"] = args.grace
    for option in ("not_before", "expires_at"):  # the API checks them (400 with the field named)
        if getattr(args, option, None):
            body[option] = getattr(args, option)
    if args.command == "weight":
        body["weight"] = args.weight
        if args.ramp is not None:
            body["ramp_seconds"] = args.ramp
        if args.steps:
            try:
                body["steps"] = [int(w) for w in args.steps.split(",")]
            except ValueError:
                parser.error(f"--steps: comma-separated weights, e.g. 5,25,100 (got {args.steps!r})")
        if args.step_seconds is not None:
            body["step_seconds"] = args.step_seconds
    return body


def _follow(client: Client, args: argparse.Namespace, result: dict[str, Any], as_json: bool) -> int:
    """--wait and `wait`: follow the operation to its end and turn the ending into an exit code."""
    op_id = int(result["operation"]["id"])

    def progress(op: dict[str, Any]) -> None:
        if not as_json:
            out.print_lines(["  ... " + out.operation_line(op)], sys.stderr)

    try:
        op, ended = client.wait_operation(op_id, args.timeout, on_progress=progress)
    except NotFound:
        raise CliError(f"no operation with id {op_id}") from None
    result = {**result, "operation": op}
    if as_json:
        out.print_json(result if "impact" in result else op)
    else:
        out.print_lines([out.operation_line(op)])
    if not ended:
        out.print_lines([f"timed out after {args.timeout:g} s waiting for operation {op_id}; "
                         f"it is still {op.get('status')} (steerctl wait {op_id} to keep waiting)"], sys.stderr)
        return EXIT_TIMEOUT
    return _ending_code(op)


def _ending_code(op: dict[str, Any]) -> int:
    status = op.get("status")
    if status == "unconfirmed":
        notes = (op.get("result") or {}).get("unconfirmed") or []
        out.print_lines([f"not confirmed by the data plane: {note}" for note in notes[:10]], sys.stderr)
        return EXIT_UNCONFIRMED
    return EXIT_OK if status == "succeeded" else EXIT_ERROR


def cmd_action(client: Client, args: argparse.Namespace, body: dict[str, Any], as_json: bool) -> int:
    if args.command == "weight" and parse(args.target)[0] != "backend":
        raise CliError("weight applies to one backend: give pop/pool/backend or backend:ID")
    target = resolve(client, args.target)
    key = args.idempotency_key or new_idempotency_key()
    answer = client.post(f"{target.api_path}{args.command}/", body, idempotency_key=key).body
    if body.get("dry_run"):
        if as_json:
            out.print_json(answer)
        else:
            out.print_lines(out.action_lines(args.command, target.describe(), answer, dry_run=True))
        return EXIT_GUARD if not answer.get("safe", True) and not body.get("force") else EXIT_OK
    status = (answer.get("operation") or {}).get("status")
    if getattr(args, "wait", False) and status not in FINAL_STATUSES:
        if not as_json:
            out.print_lines(out.action_lines(args.command, target.describe(), answer))
            sys.stdout.flush()  # the operation id shows in the deploy log before the wait
        return _follow(client, args, answer, as_json)
    if as_json:
        out.print_json(answer)
    else:
        out.print_lines(out.action_lines(args.command, target.describe(), answer))
    return EXIT_ERROR if status in ("aborted", "failed") else EXIT_OK


def cmd_status(client: Client, args: argparse.Namespace, as_json: bool) -> int:
    target = resolve(client, args.target)
    if target.kind == "backend":
        # A running operation on it (a drain, a weight ramp) first, else the last one that touched it.
        running = client.first_page("/api/v1/operations/", {"target_type": "backend", "target_id": target.id,
                                                            "status": "running"}, size=1)
        op_id = target.obj.get("operation")
        op = running[0] if running else (client.get(f"/api/v1/operations/{op_id}/") if op_id else None)
        if as_json:
            out.print_json({"type": "backend", "object": target.obj, "operation": op})
        else:
            out.print_lines(out.backend_status_lines(target.obj, op))
        return EXIT_OK
    summary = site_summary(client, target)
    if as_json:
        out.print_json(summary)
    else:
        out.print_lines(out.site_status_lines(target.kind, target.label, summary))
    return EXIT_OK


def cmd_freeze(client: Client, args: argparse.Namespace, reason: str, as_json: bool) -> int:
    if args.state == "status":
        switch = client.get("/api/v1/freeze/")
    else:
        switch = client.post("/api/v1/freeze/", {"frozen": args.state == "on", "reason": reason}).body
    if as_json:
        out.print_json(switch)
    elif switch.get("frozen"):
        out.print_lines([f"changes frozen since {switch.get('since')} by {switch.get('by')}: {switch.get('reason')}"])
    else:
        out.print_lines(["changes allowed (not frozen)"])
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    as_json = bool(getattr(args, "json", False))
    body = None
    freeze_reason = ""
    if args.command == "freeze" and args.state != "status":
        freeze_reason = (args.reason or os.environ.get("STEERING_REASON", "")).strip()
        if not freeze_reason:
            args.command_parser.error("--reason is required (or set STEERING_REASON): it goes into the audit log")
    if args.command in ("drain", "undrain", "maintenance", "weight"):
        body = _action_body(args)  # usage errors (exit 2) before any configuration or network error
    if args.command in fleet_commands.COMMANDS:
        fleet_commands.check_usage(args)
        return fleet_commands.run(_client(args), args, as_json)
    client = _client(args)
    if body is not None:
        return cmd_action(client, args, body, as_json)
    if args.command == "impact":
        target = resolve(client, args.target)
        impact = client.get(f"{target.api_path}impact/", {"action": args.action})
        if as_json:
            out.print_json(impact)
        else:
            out.print_lines([f"{args.action} {target.describe()}", *out.impact_lines(impact)])
        return EXIT_OK
    if args.command == "status":
        return cmd_status(client, args, as_json)
    if args.command == "freeze":
        return cmd_freeze(client, args, freeze_reason, as_json)
    return _follow(client, args, {"operation": {"id": args.operation}}, as_json)  # wait


def main(argv: list[str] | None = None) -> int:
    """The console script: the exit code is the return value (setuptools wraps it in sys.exit)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(args)
    except CliError as exc:
        if getattr(args, "json", False):
            out.print_json(out.error_json(exc))
        out.print_lines(out.error_lines(exc), sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        out.print_lines(["interrupted"], sys.stderr)
        return 130


if __name__ == "__main__":  # python -m steering.cli.main
    sys.exit(main())
