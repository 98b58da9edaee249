"""Role checks for every API view: viewer reads, operator acts, admin edits topology and tokens.

A view may name the role an action needs in `required_roles`; otherwise safe methods need
viewer and everything else admin. While the freeze switch is on (steering.services.freeze),
every write is refused with 409 `frozen` except an admin's with a reason (an action's `reason`,
or a topology edit's X-Change-Reason); agents, which change nothing an operator decides, go on.
"""

from __future__ import annotations

from typing import Any

from rest_framework import permissions
from rest_framework.request import Request

from steering.choices import Role
from steering.models import ApiToken
from steering.roles import has_role, lower_role, user_role
from steering.services.freeze import refuse_if_frozen


def _preview(request: Request) -> bool:
    """A dry run changes nothing: the what-if an operator reads while the freeze is on is not refused."""
    data = request.data if isinstance(request.data, dict) else {}
    return data.get("dry_run") is True


def _reason(request: Request) -> str:
    data = request.data if isinstance(request.data, dict) else {}
    reason = data.get("reason")
    return reason if isinstance(reason, str) else request.headers.get("X-Change-Reason", "")


def request_role(request: Request) -> str | None:
    role = user_role(request.user)
    if isinstance(request.auth, ApiToken):
        role = lower_role(role, request.auth.role)
    return role


class RolePermission(permissions.BasePermission):
    message = "Your role does not allow this."

    def has_permission(self, request: Request, view: Any) -> bool:
        if not request.user or not request.user.is_authenticated:
            return False
        needed = self.needed_role(request, view)
        role = request_role(request)
        if not has_role(role, needed):
            self.message = f"This needs the {needed} role; you have {role or 'none'}."
            return False
        if request.method not in permissions.SAFE_METHODS and role != Role.AGENT and not _preview(request):
            refuse_if_frozen(role, _reason(request))
        return True

    @staticmethod
    def needed_role(request: Request, view: Any) -> str:
        action = getattr(view, "action", None)
        explicit = getattr(view, "required_roles", {})
        if action in explicit:
            return str(explicit[action])
        if request.method in permissions.SAFE_METHODS:
            return Role.VIEWER
        return Role.ADMIN
