"""Edits through the Django admin site (/admin/) write Change rows: users, roles, groups, tokens."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib import admin as django_admin
from django.contrib.auth.models import Group, Permission, User
from django.test import Client

from steering.admin import AuditedAdmin
from steering.models import ApiToken, Change
from steering.readmodels.audit_verify import verify_chain
from tests.conftest import make_user, token_client

pytestmark = pytest.mark.django_db

RID = "req-admin-1"


@pytest.fixture
def root(db: Any) -> User:
    user = make_user("rita-root", None)
    user.is_superuser = user.is_staff = True
    user.save(update_fields=["is_superuser", "is_staff"])
    return user


def browser(user: User) -> Client:
    client = Client(HTTP_X_REQUEST_ID=RID)
    client.force_login(user)
    return client


def user_form(user: User, **overrides: Any) -> dict[str, Any]:
    """The admin's change form for `user`, as the browser would send it back, with overrides."""
    data: dict[str, Any] = {
        "username": user.username, "first_name": user.first_name, "last_name": user.last_name, "email": user.email,
        "groups": [g.pk for g in user.groups.all()], "user_permissions": [],
        "date_joined_0": user.date_joined.strftime("%Y-%m-%d"), "date_joined_1": user.date_joined.strftime("%H:%M:%S"),
        "last_login_0": "", "last_login_1": "", "_save": "Save",
    }
    for flag in ("is_active", "is_staff", "is_superuser"):
        if getattr(user, flag):
            data[flag] = "on"
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not False}


def recorded() -> list[tuple[str, int]]:
    return [(c.action, c.object_id) for c in Change.objects.filter(request_id=RID).order_by("id")]


def assert_no_secrets() -> None:
    for change in Change.objects.all():
        text = json.dumps([change.before, change.after])
        assert "password" not in (change.before or {}) and "password" not in (change.after or {})
        for user in User.objects.all():
            assert user.password not in text
        for token in ApiToken.objects.all():
            assert token.digest not in text


def test_every_model_on_the_admin_site_is_audited():
    assert django_admin.site._registry, "the admin site registers nothing"
    for model, model_admin in django_admin.site._registry.items():
        assert isinstance(model_admin, AuditedAdmin), f"{model.__name__} is edited in the admin without an audit"


def test_a_role_change_and_deactivation_in_the_admin_are_audited(root, operator):
    admin_group = Group.objects.get(name="admin")
    r = browser(root).post(f"/admin/auth/user/{operator.pk}/change/",
                           user_form(operator, groups=[admin_group.pk], is_active=False, email="o@example.net"))
    assert r.status_code == 302, r.content[:2000]
    assert recorded() == [("user.role", operator.pk), ("user.deactivate", operator.pk), ("user.update", operator.pk)]
    rows = {c.action: c for c in Change.objects.filter(request_id=RID)}
    role = rows["user.role"]
    assert (role.before, role.after) == ({"groups": ["operator"], "role": "operator"}, {"groups": ["admin"], "role": None})
    assert (rows["user.update"].before, rows["user.update"].after) == ({"email": ""}, {"email": "o@example.net"})
    assert all((c.actor_id, c.source, c.token_id) == (root.pk, "ui", None) for c in rows.values())
    assert len({c.version for c in rows.values()}) == 1  # one save, one state version
    assert_no_secrets()
    assert verify_chain().ok


def test_saving_without_changes_records_nothing(root, operator):
    r = browser(root).post(f"/admin/auth/user/{operator.pk}/change/", user_form(operator))
    assert r.status_code == 302
    assert recorded() == []


def test_granting_superuser_in_the_admin_is_audited_and_needs_a_superuser(root, operator):
    staff = make_user("sam-staff", "admin")
    staff.is_staff = True
    staff.save(update_fields=["is_staff"])
    staff.user_permissions.add(*Permission.objects.filter(codename__in=["view_user", "change_user"]))
    r = browser(staff).post(f"/admin/auth/user/{operator.pk}/change/", user_form(operator, is_superuser="on"))
    assert r.status_code == 302, r.content[:2000]
    assert not User.objects.get(pk=operator.pk).is_superuser  # read-only for a non-superuser
    assert recorded() == []
    # Nor may staff change a superuser's account at all.
    assert browser(staff).post(f"/admin/auth/user/{root.pk}/change/", user_form(root, is_active=False)).status_code == 403
    assert User.objects.get(pk=root.pk).is_active
    r = browser(root).post(f"/admin/auth/user/{operator.pk}/change/", user_form(operator, is_superuser="on"))
    assert r.status_code == 302
    assert recorded() == [("user.superuser", operator.pk)]


def test_creating_a_user_in_the_admin_is_audited(root):
    r = browser(root).post("/admin/auth/user/add/", {"username": "newbie", "usable_password": "true",
                                                     "password1": "Unguessable-pw-2041", "password2": "Unguessable-pw-2041"})
    assert r.status_code == 302, r.content[:2000]
    newbie = User.objects.get(username="newbie")
    assert recorded() == [("user.create", newbie.pk)]
    assert Change.objects.get(request_id=RID).after["username"] == "newbie"
    assert_no_secrets()


def test_a_password_change_in_the_admin_is_audited_without_the_hash(root, operator):
    old_hash = operator.password
    r = browser(root).post(f"/admin/auth/user/{operator.pk}/password/",
                           {"password1": "Another-long-pw-77", "password2": "Another-long-pw-77"})
    assert r.status_code == 302, r.content[:2000]
    operator.refresh_from_db()
    assert operator.password != old_hash
    assert recorded() == [("user.password", operator.pk)]
    change = Change.objects.get(request_id=RID)
    assert (change.before, change.after) == ({"usable_password": True}, {"usable_password": True})
    assert old_hash not in json.dumps(change.before) and operator.password not in json.dumps(change.after)


def test_deleting_a_user_in_the_admin_audits_the_user_and_their_tokens(root, operator):
    token_client(operator)
    token = ApiToken.objects.get(user=operator)
    r = browser(root).post(f"/admin/auth/user/{operator.pk}/delete/", {"post": "yes"})
    assert r.status_code == 302, r.content[:2000]
    assert not User.objects.filter(pk=operator.pk).exists()
    assert recorded() == [("token.delete", token.pk), ("user.delete", operator.pk)]
    assert Change.objects.get(request_id=RID, action="user.delete").before["groups"] == ["operator"]


def test_bulk_deleting_users_in_the_admin_audits_each(root, viewer, operator):
    r = browser(root).post("/admin/auth/user/", {"action": "delete_selected", "post": "yes",
                                                 "_selected_action": [viewer.pk, operator.pk]})
    assert r.status_code == 302, r.content[:2000]
    assert sorted(recorded()) == sorted([("user.delete", viewer.pk), ("user.delete", operator.pk)])


def test_deleting_a_token_in_the_admin_is_token_delete(root, operator):
    token_client(operator)
    token = ApiToken.objects.get(user=operator)
    r = browser(root).post(f"/admin/steering/apitoken/{token.pk}/delete/", {"post": "yes"})
    assert r.status_code == 302, r.content[:2000]
    assert recorded() == [("token.delete", token.pk)]
    change = Change.objects.get(request_id=RID)
    assert (change.related_id, change.before["user"], change.after) == (operator.pk, operator.username, None)
    assert token.digest not in json.dumps(change.before)
    # Tokens are not added or edited here (the secret is shown once, by the API or create_token).
    assert browser(root).get("/admin/steering/apitoken/add/").status_code == 403


def test_renaming_a_role_group_in_the_admin_audits_the_group_and_its_members_roles(root, operator):
    group = Group.objects.get(name="operator")
    r = browser(root).post(f"/admin/auth/group/{group.pk}/change/", {"name": "ops-team", "permissions": []})
    assert r.status_code == 302, r.content[:2000]
    assert recorded() == [("group.update", group.pk), ("user.role", operator.pk)]
    member = Change.objects.get(request_id=RID, action="user.role")
    assert (member.before["role"], member.after["role"]) == ("operator", None)
    assert Change.objects.get(request_id=RID, action="group.update").after["members"] == [operator.username]


def test_deleting_a_role_group_in_the_admin_audits_its_members_losing_the_role(root, operator):
    group = Group.objects.get(name="operator")
    r = browser(root).post(f"/admin/auth/group/{group.pk}/delete/", {"post": "yes"})
    assert r.status_code == 302, r.content[:2000]
    assert recorded() == [("group.delete", group.pk), ("user.role", operator.pk)]
    assert verify_chain().ok
