"""People and roles (steering/services/users.py): each action writes its Change rows, never a password hash."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User

from steering.models import ApiToken, Change
from steering.readmodels.audit_verify import verify_chain
from steering.services import users
from steering.services.context import Actor
from steering.services.errors import InvalidInput, NotPermitted, StateConflict
from tests.conftest import make_user, token_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def root(db):
    user = make_user("rita-root", None)
    user.is_superuser = True
    user.save(update_fields=["is_superuser"])
    return user


def by(user: User) -> Actor:
    return Actor(user.username, "ui", user, "req-users")


def changes(action_prefix: str = "user.") -> list[Change]:
    return list(Change.objects.filter(action__startswith=action_prefix).order_by("id"))


def assert_no_secrets(user: User) -> None:
    user.refresh_from_db()
    for change in Change.objects.all():
        text = json.dumps([change.before, change.after])
        assert user.password not in text
        assert "password" not in (change.before or {}) and "password" not in (change.after or {})


def test_setting_a_role_moves_the_user_between_role_groups_and_audits_it(admin, operator):
    users.do_set_user_role(operator, "admin", actor=by(admin), reason="on call lead")
    (change,) = changes()
    assert change.action == "user.role"
    assert (change.object_type, change.object_id, change.actor_id, change.reason) == ("user", operator.pk, admin.pk,
                                                                                      "on call lead")
    assert change.before == {"groups": ["operator"], "role": "operator"}
    assert change.after == {"groups": ["admin"], "role": "admin"}
    users.do_set_user_role(operator, None, actor=by(admin))
    assert changes()[-1].after == {"groups": [], "role": None}
    with pytest.raises(StateConflict):
        users.do_set_user_role(operator, None, actor=by(admin))
    with pytest.raises(InvalidInput):
        users.do_set_user_role(operator, "emperor", actor=by(admin))
    assert len(changes()) == 2
    assert_no_secrets(operator)


def test_only_an_admin_manages_users(operator, viewer):
    with pytest.raises(NotPermitted):
        users.do_set_user_role(viewer, "operator", actor=by(operator))
    with pytest.raises(NotPermitted):
        users.do_deactivate_user(viewer, actor=by(operator))
    assert changes() == []
    assert User.objects.get(pk=viewer.pk).groups.get().name == "viewer"


def test_only_a_superuser_grants_superuser_or_touches_a_superuser(admin, operator, root):
    with pytest.raises(NotPermitted) as refused:
        users.do_set_superuser(operator, True, actor=by(admin))
    assert refused.value.status_code == 403
    with pytest.raises(NotPermitted):
        users.do_deactivate_user(root, actor=by(admin))
    assert changes() == []
    users.do_set_superuser(operator, True, actor=by(root), reason="break glass")
    (change,) = changes()
    assert change.action == "user.superuser"
    assert (change.before, change.after) == ({"is_superuser": False, "role": "operator"},
                                             {"is_superuser": True, "role": "admin"})


def test_deactivating_and_reactivating_are_audited_and_stop_the_users_tokens(admin, operator):
    client = token_client(operator)
    users.do_deactivate_user(operator, actor=by(admin), reason="left")
    assert client.get("/api/v1/me/").status_code == 401
    with pytest.raises(StateConflict):
        users.do_deactivate_user(operator, actor=by(admin))
    users.do_reactivate_user(operator, actor=by(admin), reason="back")
    assert [(c.action, c.before, c.after) for c in changes()] == [
        ("user.deactivate", {"is_active": True, "role": "operator"}, {"is_active": False, "role": None}),
        ("user.reactivate", {"is_active": False, "role": None}, {"is_active": True, "role": "operator"}),
    ]


def test_creating_a_user_is_audited_and_bad_input_changes_nothing(admin):
    user = users.do_create_user("new-person", actor=by(admin), role="viewer", email="np@example.net",
                                password="s3cret-pass-word", reason="joined")
    (change,) = changes()
    assert (change.action, change.object_id, change.before) == ("user.create", user.pk, None)
    assert change.after["groups"] == ["viewer"] and change.after["email"] == "np@example.net"
    assert user.check_password("s3cret-pass-word")
    assert_no_secrets(user)
    count = User.objects.count()
    for bad, field in ((dict(username="has spaces!"), "username"), (dict(username="new-person"), "username"),
                       (dict(username="ok-name", role="emperor"), "role"),
                       (dict(username="ok-name", email="not-an-address"), "email")):
        with pytest.raises(InvalidInput) as refused:
            users.do_create_user(actor=by(admin), **bad)  # type: ignore[arg-type]
        assert field in refused.value.errors
    assert User.objects.count() == count
    assert len(changes()) == 1


def test_deleting_a_user_audits_it_and_each_of_their_tokens(admin, operator):
    token_client(operator)
    token = ApiToken.objects.get(user=operator)
    users.do_delete_user(operator, actor=by(admin), reason="gone")
    assert not User.objects.filter(pk=operator.pk).exists()
    assert not ApiToken.objects.filter(pk=token.pk).exists()
    token_change = Change.objects.get(action="token.delete")
    user_change = Change.objects.get(action="user.delete")
    assert (token_change.object_id, token_change.related_id, token_change.before["name"]) == (token.pk, operator.pk,
                                                                                            token.name)
    assert token.digest not in json.dumps(token_change.before)
    assert token_change.version == user_change.version  # one action, one state version
    assert (user_change.before["username"], user_change.after) == ("otto-operator", None)
    assert verify_chain().ok
