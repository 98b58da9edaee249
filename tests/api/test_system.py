"""Liveness, readiness, the state table, the dashboard shell, and settings from the environment."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client

from config import env
from steering.choices import STATE_STYLES


def test_healthz_answers_without_auth(client: Client) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_readyz_checks_the_database_and_redis(client: Client, db) -> None:
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["checks"] == {"database": "ok", "redis": "ok"}


def test_readyz_says_degraded_but_serving_when_redis_is_away(client: Client, db, settings) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "degraded"
    assert r.json()["checks"]["redis"].startswith("error")


def test_readyz_says_503_down_when_the_database_is_away(client: Client, db) -> None:
    from unittest import mock

    from django.db import OperationalError, connection

    with mock.patch.object(connection, "cursor", side_effect=OperationalError("connection refused")):
        r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["status"] == "down"


def test_the_state_table_has_a_symbol_and_a_word_for_every_colour(viewer_api) -> None:
    states = viewer_api.get("/api/v1/states/").json()
    keys = {s["key"] for s in states}
    assert {"up", "down", "stale", "draining", "drained", "maint", "panic"} <= keys
    assert all(s["symbol"] and s["label"] and s["colour"].startswith("#") for s in states)
    assert len(states) == len(STATE_STYLES)


def test_the_dashboard_needs_a_login(client: Client, db) -> None:
    r = client.get("/")
    assert r.status_code == 302 and r["Location"].startswith("/accounts/login/")


def test_every_response_carries_a_request_id(client: Client) -> None:
    assert len(client.get("/healthz")["X-Request-ID"]) == 32
    assert client.get("/healthz", HTTP_X_REQUEST_ID="abc-123")["X-Request-ID"] == "abc-123"
    assert client.get("/healthz", HTTP_X_REQUEST_ID="bad id with spaces")["X-Request-ID"] != "bad id with spaces"


@pytest.mark.parametrize("raw,expected", [("1", True), ("yes", True), ("off", False), ("", False)])
def test_envbool_reads_booleans(monkeypatch, raw, expected) -> None:
    monkeypatch.setenv("X_FLAG", raw)
    assert env.envbool("X_FLAG") is expected


def test_bad_settings_values_fail_at_start(monkeypatch) -> None:
    monkeypatch.setenv("X_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured):
        env.envbool("X_FLAG")
    monkeypatch.setenv("X_NUM", "ten")
    with pytest.raises(ImproperlyConfigured):
        env.envint("X_NUM", 1)
    monkeypatch.setenv("X_NUM", "0")
    with pytest.raises(ImproperlyConfigured):
        env.envint("X_NUM", 1, minimum=1)


def test_secrets_can_come_from_files(monkeypatch, tmp_path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t\n")
    monkeypatch.setenv("X_SECRET_FILE", str(secret))
    assert env.envstr("X_SECRET") == "s3cr3t"
    monkeypatch.setenv("X_SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured):
        env.envstr("X_SECRET")


def test_every_state_a_model_stores_or_the_product_says_has_one_row_of_style() -> None:
    from steering.choices import STATE_STYLE, AdminState, AnnounceState, Health
    from steering.dataplane import status

    words = {*Health.values, *AdminState.values, *AnnounceState.values, *status.STATES, "degraded", "panic", "ejected"}
    assert words <= set(STATE_STYLE), words - set(STATE_STYLE)
    assert len(STATE_STYLE) == len(STATE_STYLES)  # one row per key
    assert STATE_STYLE["maint"].label == AdminState.MAINT.label  # the label is the model's own


def test_the_api_answers_503_not_500_while_its_database_or_redis_is_away(viewer_api, monkeypatch) -> None:
    """What the fault suite saw: a token lookup on a restarting PostgreSQL, an agent's report
    with Redis away. Nothing changed, so the caller is told to retry."""
    import redis
    from django.db import OperationalError, transaction

    from steering.api import auth

    def database_away(*args, **kwargs):
        raise OperationalError("terminating connection due to administrator command")

    # Each request in its own savepoint, as each is its own transaction in production: a database
    # error rolls it back.
    with monkeypatch.context() as m, transaction.atomic():
        m.setattr(auth.BearerTokenAuthentication, "authenticate", database_away)
        answer = viewer_api.get("/api/v1/regions/")
    assert answer.status_code == 503 and answer.json()["code"] == "unavailable"
    assert answer["Retry-After"] == "2"

    def redis_away(*args, **kwargs):
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    with monkeypatch.context() as m:
        from steering.api.views import resources

        m.setattr(resources.RegionViewSet, "list", redis_away)
        with transaction.atomic():
            answer = viewer_api.get("/api/v1/regions/")
    assert answer.status_code == 503 and "Redis" in answer.json()["detail"]
