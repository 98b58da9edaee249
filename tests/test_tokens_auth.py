"""Bearer tokens: hashed at rest, named, expiring, revocable, scoped to a role; create_token."""

from __future__ import annotations

import datetime
import io

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from steering.models import ApiToken
from steering.models.tokens import hash_token
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


def test_it_issues_and_revokes_tokens_through_the_api(admin_api, operator):
    r = admin_api.post("/api/v1/tokens/", {"name": "deploy-pipeline", "role": "operator", "user": operator.username,
                                           "expires_in_days": 7}, format="json")
    assert r.status_code == 201
    raw = r.json()["token"]
    assert bearer(raw).get("/api/v1/me/").json() == {"username": operator.username, "role": "operator", "auth": "token"}
    listed = admin_api.get("/api/v1/tokens/").json()["results"]
    assert all("token" not in t and "digest" not in t for t in listed)
    token_id = r.json()["id"]
    assert admin_api.delete(f"/api/v1/tokens/{token_id}/").status_code == 200
    assert bearer(raw).get("/api/v1/me/").status_code == 401


def test_it_refuses_a_token_that_outranks_its_owner(admin_api, viewer):
    r = admin_api.post("/api/v1/tokens/", {"name": "sneaky", "role": "admin", "user": viewer.username}, format="json")
    assert r.status_code == 400
    assert "role" in r.json()["errors"]


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
