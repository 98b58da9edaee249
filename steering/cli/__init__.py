"""steerctl: the command line for deploy pipelines, a small client of the public REST API.

It imports nothing of Django (nor anything outside the standard library), so it runs wherever
Python does and can never bypass the API's checks: what it can do, any API client can do.

The exit codes live here, in one place, because pipelines branch on them; `steerctl --help`
and the README print this same table.
"""

from __future__ import annotations

__version__ = "0.1.0"

EXIT_OK = 0  # success; with --wait, the operation succeeded
EXIT_ERROR = 1  # network, auth, not found, invalid input, operation failed or aborted
EXIT_USAGE = 2  # bad command line (argparse), e.g. a missing --reason
EXIT_GUARD = 3  # refused by the capacity guard or a safety rule (409 capacity_guard / safety_rule); --dry-run: would be
EXIT_TIMEOUT = 4  # --wait / wait: the operation had not ended when --timeout passed
EXIT_CONFLICT = 5  # 409 state conflict other than the guard (already_draining, already_ready, ...)
EXIT_STALE = 6  # 412: the object changed since it was read
EXIT_UNCONFIRMED = 7  # --wait / wait: done in the desired state, but a data plane never acknowledged it

EXIT_CODES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "success (with --wait: the operation succeeded)"),
    (EXIT_ERROR, "error: network, auth, not found, invalid input, operation failed or aborted"),
    (EXIT_USAGE, "usage: bad command line, e.g. no --reason"),
    (EXIT_GUARD, "refused by the capacity guard or a safety rule (409 capacity_guard / safety_rule); "
                 "--dry-run: would be refused"),
    (EXIT_TIMEOUT, "timed out waiting for the operation (--timeout)"),
    (EXIT_CONFLICT, "state conflict (409), e.g. already_draining, already_ready, unchanged"),
    (EXIT_STALE, "stale write (412): the object changed since it was read"),
    (EXIT_UNCONFIRMED, "unconfirmed: the operation ended but a data plane never acknowledged it (see its result)"),
)


def exit_code_table() -> str:
    """The table for --help and the README, generated so the two never drift from the constants."""
    return "\n".join(f"  {code}  {meaning}" for code, meaning in EXIT_CODES)
