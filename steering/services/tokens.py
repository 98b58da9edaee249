"""API tokens: issued, revoked and deleted through here, audited like any other change.

Only a superuser issues a token for someone else: an admin's token for another user would let the
admin act under that user's name.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from steering.choices import Role
from steering.models import ApiToken, PoP
from steering.models.tokens import hash_token, new_raw_token
from steering.roles import has_role, user_role
from steering.services.audit import ChangeSet
from steering.services.context import Actor
from steering.services.errors import InvalidInput, NotPermitted, StateConflict


def token_view(token: ApiToken) -> dict[str, Any]:
    """A token's audit before/after. Never the digest: the log shows which token, not how to forge it."""
    return {
        "user_id": token.user_id,
        "user": token.user.get_username(),
        "name": token.name,
        "role": token.role,
        "pop": token.pop.slug if token.pop is not None else None,
        "hint": token.hint,
        "expires_at": token.expires_at.isoformat(),
        "revoked_at": token.revoked_at.isoformat() if token.revoked_at else None,
    }


@transaction.atomic
def do_create_token(
    user: Any, *, name: str, role: str, actor: Actor, expires_in_days: int | None = None, reason: str = "",
    pop: PoP | None = None,
) -> tuple[ApiToken, str]:
    """Issue a token; returns it and the raw secret, which is shown once and never stored.

    An agent token (role agent) is bound to `pop`, or with no PoP to the DNS layer."""
    _may_issue_for(actor, user)
    errors: dict[str, list[str]] = {}
    if pop is not None and role != Role.AGENT:
        errors["pop"] = ["Only an agent token is bound to a PoP."]
    owner_role = user_role(user)
    if not name.strip():
        errors["name"] = ["Give the token a name, e.g. deploy-pipeline."]
    if owner_role is None:
        errors["user"] = [f"{user} has no role (viewer, operator or admin) to delegate."]
    elif not has_role(owner_role, role):
        errors["role"] = [f"{user} is {owner_role}; a token cannot outrank its owner."]
    days = settings.STEERING_TOKEN_DEFAULT_DAYS if expires_in_days is None else expires_in_days
    if not 1 <= days <= 3650:
        errors["expires_in_days"] = ["Between 1 and 3650 days."]
    if ApiToken.objects.filter(user=user, name=name, revoked_at__isnull=True).exists():
        errors["name"] = [f"{user} already has a live token named {name!r}; revoke it or pick another name."]
    if errors:
        raise InvalidInput(errors)
    raw = new_raw_token()
    token = ApiToken.objects.create(
        user=user, name=name.strip(), role=role, pop=pop, digest=hash_token(raw), hint=raw[:8],
        expires_at=timezone.now() + datetime.timedelta(days=days),
    )
    # The owner is in `after` (user, user_id) and, unless the token serves a PoP, in `related`; the actor is the actor.
    ChangeSet(actor, reason).record("token.create", token, before=None, after=token_view(token), related=pop or user)
    return token, raw


def _may_issue_for(actor: Actor, owner: Any) -> None:
    acting = actor.user
    if acting is None or not getattr(acting, "is_authenticated", False):
        return  # the system, or a manage.py command run on the server
    if acting.pk != owner.pk and not getattr(acting, "is_superuser", False):
        raise NotPermitted(
            f"Only a superuser issues tokens for other users; {acting.get_username()} may issue tokens for "
            "themselves only.", code="not_superuser")


@transaction.atomic
def do_revoke_token(token: ApiToken, *, actor: Actor, reason: str = "") -> ApiToken:
    locked = ApiToken.objects.select_for_update().get(pk=token.pk)
    if locked.revoked_at is not None:
        raise StateConflict(f"token {locked.name} is already revoked.", code="already_revoked")
    before = token_view(locked)
    locked.revoked_at = timezone.now()
    locked.save(update_fields=["revoked_at"])
    ChangeSet(actor, reason).record("token.revoke", locked, before=before, after=token_view(locked), related=locked.user)
    return locked


def record_token_delete(changes: ChangeSet, token: ApiToken) -> None:
    """Audit a token about to be deleted (the admin site, or its owner's deletion); the caller deletes it."""
    changes.record("token.delete", token, before=token_view(token), after=None, related=token.user)


@transaction.atomic
def do_delete_token(token: ApiToken, *, actor: Actor, reason: str = "") -> None:
    locked = ApiToken.objects.select_for_update().get(pk=token.pk)
    record_token_delete(ChangeSet(actor, reason), locked)
    locked.delete()
