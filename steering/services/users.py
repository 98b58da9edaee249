"""People and their roles: created, given a role, made superuser, deactivated, deleted; all audited.

A role is membership of the groups viewer / operator / admin (steering/roles.py), so a group change
is a role change. The admin site (steering/admin.py) records its edits with record_user_edit, the
same split as these actions: one Change per aspect, so `?action=user.role` finds every role change.
The audit before/after never holds the password hash.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import transaction

from steering.choices import Role
from steering.roles import HUMAN_ROLES, has_role, user_role
from steering.services.audit import ChangeSet
from steering.services.context import Actor
from steering.services.errors import InvalidInput, NotPermitted, StateConflict
from steering.services.tokens import record_token_delete

# Which keys of user_view each action covers; "role" rides along as the outcome people read.
ROLE_KEYS = ("groups", "role")
SUPERUSER_KEYS = ("is_superuser", "role")
PROFILE_KEYS = ("username", "email", "first_name", "last_name", "is_staff", "user_permissions")


def user_view(user: Any) -> dict[str, Any]:
    """What the audit shows of a user: never the password hash."""
    # A fresh read: a cached role (user._steering_role) would hide the change just made.
    user = get_user_model().objects.get(pk=user.pk)
    return {
        "username": user.get_username(),
        "email": user.email,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "is_active": user.is_active,
        "is_staff": user.is_staff,
        "is_superuser": user.is_superuser,
        "groups": sorted(user.groups.values_list("name", flat=True)),
        "user_permissions": sorted(
            f"{app}.{codename}" for app, codename in
            user.user_permissions.values_list("content_type__app_label", "codename")),
        "role": user_role(user),
    }


def _part(view: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {key: view[key] for key in keys}


def record_user_edit(changes: ChangeSet, user: Any, before: dict[str, Any] | None, after: dict[str, Any]) -> None:
    """Audit a user's edit (before None: created), one Change per aspect that changed."""
    if before is None:
        changes.record("user.create", user, before=None, after=after)
        return
    if before["groups"] != after["groups"]:
        changes.record("user.role", user, before=_part(before, ROLE_KEYS), after=_part(after, ROLE_KEYS))
    if before["is_superuser"] != after["is_superuser"]:
        changes.record("user.superuser", user, before=_part(before, SUPERUSER_KEYS),
                       after=_part(after, SUPERUSER_KEYS))
    if before["is_active"] != after["is_active"]:
        action = "user.reactivate" if after["is_active"] else "user.deactivate"
        changes.record(action, user, before=_part(before, ("is_active", "role")),
                       after=_part(after, ("is_active", "role")))
    profile_before = {k: before[k] for k in PROFILE_KEYS if before[k] != after[k]}
    if profile_before:
        changes.record("user.update", user, before=profile_before, after={k: after[k] for k in profile_before})


def record_user_delete(changes: ChangeSet, user: Any) -> None:
    """Audit a user about to be deleted, and the tokens that go with it; the caller deletes."""
    for token in user.api_tokens.select_related("user", "pop"):
        record_token_delete(changes, token)
    changes.record("user.delete", user, before=user_view(user), after=None)


def _require_authority(actor: Actor, target: Any | None = None, *, superuser: bool = False) -> None:
    """Admins manage users; only a superuser grants superuser or touches a superuser's account.

    An actor with no user is the system or a manage.py command on the server: trusted."""
    acting = actor.user
    if acting is None or not getattr(acting, "is_authenticated", False):
        return
    if not has_role(user_role(acting), Role.ADMIN):
        raise NotPermitted("Managing users needs the admin role.")
    if (superuser or (target is not None and target.is_superuser)) and not getattr(acting, "is_superuser", False):
        raise NotPermitted("Only a superuser grants superuser or changes a superuser's account.",
                           code="not_superuser")


def _locked(user: Any) -> Any:
    return get_user_model().objects.select_for_update().get(pk=user.pk)


def _role_groups(role: str | None) -> list[Group]:
    return [Group.objects.get_or_create(name=role)[0]] if role else []


@transaction.atomic
def do_create_user(
    username: str, *, actor: Actor, role: str | None = None, email: str = "", password: str | None = None,
    reason: str = "",
) -> Any:
    """A new user with at most one role group; with no password they sign in only once one is set."""
    _require_authority(actor)
    user_model = get_user_model()
    errors: dict[str, list[str]] = {}
    if role is not None and role not in HUMAN_ROLES:
        errors["role"] = [f"One of {', '.join(HUMAN_ROLES)}, or none."]
    candidate = user_model(username=username, email=email)
    try:
        candidate.full_clean(exclude=["password"])
    except ValidationError as exc:
        errors.update({field: list(messages) for field, messages in exc.message_dict.items()})
    if errors:
        raise InvalidInput(errors)
    if password:
        candidate.set_password(password)
    else:
        candidate.set_unusable_password()
    candidate.save()
    candidate.groups.add(*_role_groups(role))
    record_user_edit(ChangeSet(actor, reason), candidate, None, user_view(candidate))
    return candidate


@transaction.atomic
def do_set_user_role(user: Any, role: str | None, *, actor: Actor, reason: str = "") -> Any:
    """Make `role` the user's only role group (None: no role); other groups stay."""
    if role is not None and role not in HUMAN_ROLES:
        raise InvalidInput({"role": [f"One of {', '.join(HUMAN_ROLES)}, or none."]})
    locked = _locked(user)
    _require_authority(actor, locked)
    before = user_view(locked)
    locked.groups.remove(*Group.objects.filter(name__in=HUMAN_ROLES).exclude(name=role))
    locked.groups.add(*_role_groups(role))
    after = user_view(locked)
    if before == after:
        raise StateConflict(f"{locked.get_username()} already has role {role or 'none'}.", code="no_change")
    record_user_edit(ChangeSet(actor, reason), locked, before, after)
    return locked


def _set_flag(user: Any, flag: str, value: bool, *, actor: Actor, reason: str, superuser: bool = False) -> Any:
    locked = _locked(user)
    _require_authority(actor, locked, superuser=superuser)
    if getattr(locked, flag) == value:
        raise StateConflict(f"{locked.get_username()} already has {flag}={value}.", code="no_change")
    before = user_view(locked)
    setattr(locked, flag, value)
    locked.save(update_fields=[flag])
    record_user_edit(ChangeSet(actor, reason), locked, before, user_view(locked))
    return locked


@transaction.atomic
def do_set_superuser(user: Any, is_superuser: bool, *, actor: Actor, reason: str = "") -> Any:
    return _set_flag(user, "is_superuser", is_superuser, actor=actor, reason=reason, superuser=True)


@transaction.atomic
def do_deactivate_user(user: Any, *, actor: Actor, reason: str = "") -> Any:
    """The user can no longer sign in, and their tokens stop working (steering/api/auth.py)."""
    return _set_flag(user, "is_active", False, actor=actor, reason=reason)


@transaction.atomic
def do_reactivate_user(user: Any, *, actor: Actor, reason: str = "") -> Any:
    return _set_flag(user, "is_active", True, actor=actor, reason=reason)


@transaction.atomic
def do_delete_user(user: Any, *, actor: Actor, reason: str = "") -> None:
    """Delete the user and their tokens; their Change rows keep actor_name (actor_id becomes null)."""
    locked = _locked(user)
    _require_authority(actor, locked)
    record_user_delete(ChangeSet(actor, reason), locked)
    locked.delete()

