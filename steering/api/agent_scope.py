"""Who may use the agent contract, for what.

An agent token (role `agent`) is bound to one PoP, or to no PoP meaning the DNS layer. It may read
the desired state of, acknowledge and report for its own scope only: another PoP, or another kind
of layer, is 403. People's tokens and sessions may read any scope's desired state (viewer and up)
but never acknowledge or report: only a data plane's agent says what a data plane did.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from steering.choices import POP_LAYERS, DataplaneLayer, Role
from steering.models import ApiToken, PoP
from steering.roles import has_role, lower_role, user_role
from steering.services.agents import AgentIdentity

INSTANCE_RE = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
LAYERS = [layer.value for layer in DataplaneLayer]


class ScopeError(Exception):
    """status 400 (bad field), 403 (out of scope) with a machine-readable code and field errors."""

    def __init__(self, status: int, code: str, detail: str, errors: dict[str, list[str]] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.errors = status, code, detail, errors

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "detail": self.detail, **({"errors": self.errors} if self.errors else {})}


@dataclass(frozen=True)
class AgentCaller:
    user: Any
    token: ApiToken | None

    @property
    def role(self) -> str | None:
        role = user_role(self.user)
        if self.token is not None:
            role = lower_role(role, self.token.role)
        return role

    @property
    def is_agent(self) -> bool:
        return self.token is not None and self.token.is_agent


def _invalid(field: str, message: str) -> ScopeError:
    return ScopeError(400, "invalid", "Invalid input.", {field: [message]})


def resolve(caller: AgentCaller, layer: Any, pop_slug: Any, instance: Any = None, *,
            writing: bool) -> AgentIdentity:
    """The scope a request names, checked against who asks. Raises ScopeError."""
    if layer not in LAYERS:
        raise _invalid("layer", f"One of {', '.join(LAYERS)}.")
    instance = "default" if instance in (None, "") else instance
    if not isinstance(instance, str) or not INSTANCE_RE.match(instance):
        raise _invalid("instance", "1-100 letters, digits, '.', '_', ':' or '-' (e.g. the host name).")
    token = caller.token
    if caller.is_agent:
        assert token is not None
        bound = token.pop
        if layer == DataplaneLayer.DNS:
            if bound is not None:
                raise ScopeError(403, "out_of_scope", f"This agent token is bound to PoP {bound.slug}, not the DNS layer.")
            if pop_slug not in (None, ""):
                raise _invalid("pop", "The DNS layer is fleet-wide: name no PoP.")
            return AgentIdentity(layer, None, instance, token.name)
        if bound is None:
            raise ScopeError(403, "out_of_scope", "This agent token serves the DNS layer, not a PoP.")
        if pop_slug not in (None, "", bound.slug):
            raise ScopeError(403, "out_of_scope", f"This agent token is bound to PoP {bound.slug}.")
        return AgentIdentity(layer, bound, instance, token.name)
    if writing:
        raise ScopeError(403, "permission_denied", "Only a data-plane agent's token (role agent) reports or acknowledges.")
    if not has_role(caller.role, Role.VIEWER):
        raise ScopeError(403, "permission_denied", f"This needs the viewer role; you have {caller.role or 'none'}.")
    if layer == DataplaneLayer.DNS:
        return AgentIdentity(layer, None, instance, token.name if token else "")
    if not isinstance(pop_slug, str) or not pop_slug:
        raise _invalid("pop", f"Name the PoP (its slug) for the {layer} layer.")
    pop = PoP.objects.filter(slug=pop_slug).first()
    if pop is None:
        raise _invalid("pop", f"No PoP with slug {pop_slug!r}.")
    return AgentIdentity(layer, pop, instance, token.name if token else "")


assert set(POP_LAYERS) | {DataplaneLayer.DNS} == set(DataplaneLayer)
