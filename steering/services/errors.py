"""Errors a service raises; the API maps each to its status code and machine-readable code."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from steering.services.impact import Impact


class ServiceError(Exception):
    status_code = 409
    code = "conflict"

    def __init__(self, message: str, *, code: str | None = None, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.extra = extra or {}

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "detail": self.message, **self.extra}


class StateConflict(ServiceError):
    """The object is not in a state this action applies to (e.g. already draining)."""

    code = "state_conflict"


class CapacityGuardRefused(ServiceError):
    """The guard judged the action unsafe: the body carries its impact ({"code", "detail", "impact"})."""

    code = "capacity_guard"

    def __init__(self, impact: Impact) -> None:
        super().__init__(impact.explain, extra={"impact": impact.as_json()})
        self.impact = impact


class SafetyRuleRefused(CapacityGuardRefused):
    """The action would break a safety rule: the body names the rule(s) and carries the impact."""

    code = "safety_rule"

    def __init__(self, impact: Impact) -> None:
        super().__init__(impact)
        self.extra["rules"] = [b.rule for b in impact.safety_rules]


class InUse(ServiceError):
    code = "in_use"


class StaleWrite(ServiceError):
    status_code = 412
    code = "stale"


class InvalidInput(ServiceError):
    """Field errors found by a service (the API answers 400 with them)."""

    status_code = 400
    code = "invalid"

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("Invalid input.", extra={"errors": errors})
        self.errors = errors


class NotPermitted(ServiceError):
    """The actor's role or standing does not allow this (the API answers 403)."""

    status_code = 403
    code = "permission_denied"  # the code DRF gives its own 403s


class ChangesFrozen(ServiceError):
    """The freeze switch is on: only an admin, with a reason, may change anything."""

    code = "frozen"


class WaitPeriod(ServiceError):
    """A person changed this object moments ago: the next change waits out the wait period."""

    code = "wait_period"
