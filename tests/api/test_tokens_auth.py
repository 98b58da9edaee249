"""Bearer tokens: hashed at rest, named, expiring, revocable, scoped to a role; create_token."""

from __future__ import annotations

import datetime
import io

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from steering.models import ApiToken, Change
from steering.models.tokens import hash_token
from steering.services.context import Actor
from steering.services.tokens import do_delete_token
from tests.conftest import token_client


def bearer(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def test_it_stores_only_a_digest(operator_api):
    token = ApiToken.objects.get(user=operator_api.user)
    assert token.digest == hash_token(operator_api.raw_token)
    assert operator_api.raw_token not in (token.digest, token.hint, token.name)
    assert operator_api.raw_token.startswith(token.hint)


def test_it_refuses_unknown_expired_and_revoked_tokens(operator_api):
    assert bearer("str_nope").get("/api/v1/me/").status_code == 401
    token = ApiToken.objects.get(user=operator_api.user)
    token.expires_at = timezone.now() - datetime.timedelta(seconds=1)
    token.save()
    r = operator_api.get("/api/v1/me/")
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    token.expires_at = timezone.now() + datetime.timedelta(days=1)
    token.revoked_at = timezone.now()
    token.save()
    assert operator_api.get("/api/v1/me/").status_code == 401


def test_it_acts_with_the_lower_of_token_and_user_role(admin):
    as_viewer = token_client(admin, role="viewer")
    assert as_viewer.get("/api/v1/me/").json()["role"] == "viewer"
    assert as_viewer.post("/api/v1/regions/", {"slug": "x", "name": "x", "latitude": 1, "longitude": 1}, format="json").status_code == 403


def make_superuser(user):
    user.is_superuser = True
    user.save(update_fields=["is_superuser"])


def test_it_issues_and_revokes_tokens_through_the_api(admin_api, admin, operator):
    make_superuser(admin)  # a token for someone else
    r = admin_api.post("/api/v1/tokens/", {"name": "deploy-pipeline", "role": "operator", "user": operator.username,
                                           "expires_in_days": 7}, format="json")
    assert r.status_code == 201
    raw = r.json()["token"]
    me = bearer(raw).get("/api/v1/me/").json()
    assert (me["username"], me["role"], me["auth"]) == (operator.username, "operator", "token")
    listed = admin_api.get("/api/v1/tokens/").json()["results"]
    assert all("token" not in t and "digest" not in t for t in listed)
    token_id = r.json()["id"]
    assert admin_api.delete(f"/api/v1/tokens/{token_id}/").status_code == 200
    assert bearer(raw).get("/api/v1/me/").status_code == 401


def test_it_refuses_a_token_that_outranks_its_owner(admin_api, admin, viewer):
    make_superuser(admin)
    r = admin_api.post("/api/v1/tokens/", {"name": "sneaky", "role": "admin", "user": viewer.username}, format="json")
    assert r.status_code == 400
    assert "role" in r.json()["errors"]


def test_it_refuses_an_admin_who_is_not_superuser_a_token_for_someone_else(admin_api, operator):
    tokens, changes = ApiToken.objects.count(), Change.objects.count()
    r = admin_api.post("/api/v1/tokens/", {"name": "on-behalf", "role": "viewer", "user": operator.username},
                       format="json")
    assert r.status_code == 403, r.content
    assert r.json()["code"] == "not_superuser"
    assert "Only a superuser issues tokens for other users" in r.json()["detail"]
    assert (ApiToken.objects.count(), Change.objects.count()) == (tokens, changes)


def test_it_lets_an_admin_who_is_not_superuser_issue_their_own_token(admin_api, admin):
    r = admin_api.post("/api/v1/tokens/", {"name": "mine", "role": "viewer", "user": admin.username}, format="json")
    assert r.status_code == 201, r.content
    change = Change.objects.get(action="token.create", object_id=r.json()["id"])
    assert (change.actor_id, change.after["user"]) == (admin.pk, admin.username)


def test_it_audits_deleting_a_token_and_keeps_its_id_on_the_changes_it_made(operator_api, operator, admin):
    from tests import factories as f

    b = f.fleet(4).backends.first()
    assert operator_api.post(f"/api/v1/backends/{b.pk}/drain/", {"reason": "x"}, format="json").status_code == 202
    token = ApiToken.objects.get(digest=hash_token(operator_api.raw_token))
    do_delete_token(token, actor=Actor(admin.username, "ui", admin), reason="left the team")
    assert not ApiToken.objects.filter(pk=token.pk).exists()
    deleted = Change.objects.get(action="token.delete")
    assert (deleted.object_id, deleted.related_id, deleted.after) == (token.pk, operator.pk, None)
    assert deleted.before["name"] == token.name and "digest" not in deleted.before
    assert token.digest not in str(deleted.before)
    drain = Change.objects.get(action="backend.drain")
    assert (drain.token_id, drain.token_name) == (token.pk, token.name)


def test_create_token_command_prints_a_working_token(operator):
    out = io.StringIO()
    call_command("create_token", operator.username, "--role", "operator", "--name", "ci", stdout=out)
    raw = out.getvalue().strip()
    assert bearer(raw).get("/api/v1/me/").json()["role"] == "operator"
    with pytest.raises(CommandError):
        call_command("create_token", "no-such-user", "--role", "viewer", "--name", "x")
    with pytest.raises(CommandError):
        call_command("create_token", operator.username, "--role", "admin", "--name", "too-high")


def test_it_requires_csrf_for_session_writes(operator):
    from tests import factories as f

    b = f.fleet(4).backends.first()
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(operator)
    assert client.post(f"/api/v1/backends/{b.pk}/drain/", {"reason": "x"}, format="json").status_code == 403
    client.get("/accounts/login/")
    csrf = client.cookies["csrftoken"].value
    r = client.post(f"/api/v1/backends/{b.pk}/drain/", {"reason": "x"}, format="json", HTTP_X_CSRFTOKEN=csrf)
    assert r.status_code == 202
