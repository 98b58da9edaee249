"""The admin site (/admin/): every write through it leaves Change rows in the same transaction.

Registered: users, groups (a role is a group, steering/roles.py) and API tokens (view and delete).
The topology is not: it is edited through the API and the dashboard, whose services validate and
guard each change. Whatever is registered must be an AuditedAdmin (tests/services/test_admin_audit.py checks).

Group membership is a many-to-many that the admin writes in save_related (form.save_m2m), after
save_model; so the "before" is read in save_model and the Change is written in save_related. Not an
m2m_changed signal on User.groups: a signal knows no actor or request, fires for every fixture and
command outside any transaction, and misses queryset writes; Change rows come from the code that
acts (steering/models/audit.py).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.hashers import is_password_usable
from django.contrib.auth.models import Group
from django.db import models, transaction
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse

from steering.api.request_context import session_actor
from steering.models import ApiToken
from steering.services.audit import ChangeSet, object_type, snapshot
from steering.services.tokens import record_token_delete, token_view
from steering.services.users import record_user_delete, record_user_edit, user_view

REASON = "admin site"
# Never in an audit before/after, whatever model they turn up on.
SECRET_FIELDS = frozenset({"password", "digest"})


class AuditedAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """save/delete through ChangeSets; subclasses say what of their model the audit shows."""

    def audit_view(self, obj: Any) -> dict[str, Any]:
        data = {key: value for key, value in snapshot(obj).items() if key not in SECRET_FIELDS}
        for m2m in obj._meta.many_to_many:
            data[m2m.name] = sorted(getattr(obj, m2m.name).values_list("pk", flat=True))
        return data

    def record_edit(self, changes: ChangeSet, obj: Any, before: dict[str, Any] | None, after: dict[str, Any]) -> None:
        changes.record(f"{object_type(obj)}.{'create' if before is None else 'update'}", obj, before=before, after=after)

    def record_delete(self, changes: ChangeSet, obj: Any) -> None:
        changes.record(f"{object_type(obj)}.delete", obj, before=self.audit_view(obj), after=None)

    def affected_users(self, obj: Any) -> list[Any]:
        """Users whose role an edit of obj may change besides obj itself (a group's members)."""
        return []

    def save_model(self, request: HttpRequest, obj: Any, form: ModelForm, change: bool) -> None:  # type: ignore[type-arg]
        stored = type(obj)._default_manager.get(pk=obj.pk) if change else None
        obj._audit_before = self.audit_view(stored) if stored is not None else None
        obj._audit_members_before = _views(self.affected_users(stored)) if stored is not None else {}
        super().save_model(request, obj, form, change)

    def save_related(self, request: HttpRequest, form: ModelForm, formsets: Any, change: bool) -> None:  # type: ignore[type-arg]
        super().save_related(request, form, formsets, change)
        obj = form.instance
        before, after = obj.__dict__.pop("_audit_before", None), self.audit_view(obj)
        members_before = obj.__dict__.pop("_audit_members_before", {})
        changes = _LazyChangeSet(request)
        if before != after:
            self.record_edit(changes.get(), obj, before, after)
        _record_member_edits(changes, members_before)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        with transaction.atomic():
            self._delete(request, [obj], lambda: super(AuditedAdmin, self).delete_model(request, obj))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        with transaction.atomic():
            self._delete(request, list(queryset), lambda: super(AuditedAdmin, self).delete_queryset(request, queryset))

    def _delete(self, request: HttpRequest, objs: list[Any], delete: Any) -> None:
        changes = _LazyChangeSet(request)
        members_before: dict[int, tuple[Any, dict[str, Any]]] = {}
        for obj in objs:
            self.record_delete(changes.get(), obj)
            members_before.update(_views(self.affected_users(obj)))
        delete()
        _record_member_edits(changes, members_before)


class _LazyChangeSet:
    """One ChangeSet per admin write, opened only when there is something to record."""

    def __init__(self, request: HttpRequest) -> None:
        self.request = request
        self.changes: ChangeSet | None = None

    def get(self) -> ChangeSet:
        if self.changes is None:
            self.changes = ChangeSet(session_actor(self.request), REASON)
        return self.changes


def _views(users: list[Any]) -> dict[int, tuple[Any, dict[str, Any]]]:
    return {user.pk: (user, user_view(user)) for user in users}


def _record_member_edits(changes: _LazyChangeSet, members_before: dict[int, tuple[Any, dict[str, Any]]]) -> None:
    for user, before in members_before.values():
        after = user_view(user)
        if before != after:
            record_user_edit(changes.get(), user, before, after)


User = get_user_model()
admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class AuditedUserAdmin(AuditedAdmin, UserAdmin):  # type: ignore[type-arg]
    def audit_view(self, obj: Any) -> dict[str, Any]:
        return user_view(obj)

    def record_edit(self, changes: ChangeSet, obj: Any, before: dict[str, Any] | None, after: dict[str, Any]) -> None:
        record_user_edit(changes, obj, before, after)

    def record_delete(self, changes: ChangeSet, obj: Any) -> None:
        record_user_delete(changes, obj)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # Only a superuser makes a superuser (as in steering/services/users.py).
        fields = tuple(super().get_readonly_fields(request, obj))
        return fields if request.user.is_superuser else (*fields, "is_superuser")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_change_permission(request, obj) and _may_touch(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_delete_permission(request, obj) and _may_touch(request, obj)

    def user_change_password(self, request: HttpRequest, id: str, form_url: str = "") -> HttpResponse:
        # Django's view saves the form itself (no save_model): compare the stored hash around it.
        with transaction.atomic():
            user = self.get_object(request, unquote(id))
            stored = user.password if user is not None else None
            response = super().user_change_password(request, id, form_url)
            if user is not None:
                user.refresh_from_db(fields=["password"])
                if user.password != stored:
                    ChangeSet(session_actor(request), REASON).record(
                        "user.password", user, before={"usable_password": is_password_usable(stored)},
                        after={"usable_password": user.has_usable_password()})
        return response


def _may_touch(request: HttpRequest, obj: Any) -> bool:
    return obj is None or not obj.is_superuser or bool(request.user.is_superuser)


@admin.register(Group)
class AuditedGroupAdmin(AuditedAdmin, GroupAdmin):  # type: ignore[type-arg]
    def audit_view(self, obj: Any) -> dict[str, Any]:
        return {
            "name": obj.name,
            "permissions": sorted(f"{app}.{codename}" for app, codename in
                                  obj.permissions.values_list("content_type__app_label", "codename")),
            "members": sorted(obj.user_set.values_list("username", flat=True)),
        }

    def affected_users(self, obj: Any) -> list[Any]:
        # Renaming or deleting the group "operator" takes the role from its members.
        return list(obj.user_set.all())


@admin.register(ApiToken)
class ApiTokenAdmin(AuditedAdmin):
    """Tokens are issued through the API or create_token (the secret is shown once), revoked through the
    API; here they are listed and, when need be, deleted."""

    list_display = ["name", "user", "role", "pop", "hint", "expires_at", "revoked_at"]
    list_filter = ["role"]
    search_fields = ["name", "user__username"]

    def audit_view(self, obj: Any) -> dict[str, Any]:
        return token_view(obj)

    def record_delete(self, changes: ChangeSet, obj: Any) -> None:
        record_token_delete(changes, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return False
