"""Roles: viewer (read), operator (drain, weight, announce), admin (topology, tokens, users).

A user's role is the highest of their groups named viewer / operator / admin (superusers are
admin). A token carries a role too, and acts with the lower of the two: a token never
outranks its owner.
"""

from __future__ import annotations

from typing import Any

from steering.choices import ROLE_RANK, Role

HUMAN_ROLES = (Role.VIEWER.value, Role.OPERATOR.value, Role.ADMIN.value)


def user_role(user: Any) -> str | None:
    if user is None or not getattr(user, "is_authenticated", False) or not getattr(user, "is_active", False):
        return None
    if user.is_superuser:
        return Role.ADMIN
    cached = getattr(user, "_steering_role", "unset")
    if cached != "unset":
        return cached  # type: ignore[no-any-return]
    # Only the human roles come from groups: "agent" is a token's role, never a person's.
    names = set(user.groups.filter(name__in=HUMAN_ROLES).values_list("name", flat=True))
    role = max(names, key=lambda n: ROLE_RANK[Role(n)], default=None)
    user._steering_role = role
    return role


def lower_role(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return None
    return a if ROLE_RANK[Role(a)] <= ROLE_RANK[Role(b)] else b


def has_role(role: str | None, needed: str) -> bool:
    return role is not None and ROLE_RANK[Role(role)] >= ROLE_RANK[Role(needed)]
