"""Request rates per token, user and address (429 + Retry-After), and sign-in attempts limited.

Every test sets the rates it relies on, low, explicitly; the counts live in the real Redis cache
(tests.conftest clears them between tests).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.contrib.auth.signals import user_login_failed
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from rest_framework.test import APIClient

from config.env import envrate
from steering.choices import Role
from steering.models import ApiToken, Region
from steering.redisconn import sync_client
from steering.services.context import Actor
from steering.services.tokens import do_create_token
from tests import factories as f
from tests.support import free_port

READS = "/api/v1/regions/"


def token_client(user: Any, name: str = "throttled") -> APIClient:
    from steering.roles import user_role

    _token, raw = do_create_token(user, name=name, role=user_role(user) or "viewer", actor=Actor.system("test"))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def assert_throttled(response: Any, period: int = 60) -> None:
    assert response.status_code == 429, response.content
    assert 0 < int(response["Retry-After"]) <= period
    assert response.json()["code"] == "throttled"


# --- API requests ----------------------------------------------------------------------------------

def test_reads_are_limited_per_token_with_retry_after(settings: Any, viewer: Any) -> None:
    settings.STEERING_THROTTLE_READ = "3/min"
    first, second = token_client(viewer, "first"), token_client(viewer, "second")
    for _ in range(3):
        assert first.get(READS).status_code == 200
    assert_throttled(first.get(READS))
    assert second.get(READS).status_code == 200  # another token of the same user: its own count


def test_writes_have_their_own_rate_and_a_refused_write_changes_nothing(settings: Any, admin: Any) -> None:
    settings.STEERING_THROTTLE_READ = "100/min"
    settings.STEERING_THROTTLE_WRITE = "2/min"
    api = token_client(admin)
    def region(slug: str) -> dict[str, Any]:
        return {"slug": slug, "name": slug, "latitude": 59.3, "longitude": 18.1}

    for slug in ("r-one", "r-two"):
        created = api.post("/api/v1/regions/", region(slug), format="json")
        assert created.status_code == 201, created.content
    refused = api.post("/api/v1/regions/", region("r-three"), format="json")
    assert_throttled(refused)
    assert not Region.objects.filter(slug="r-three").exists()
    assert api.get(READS).status_code == 200  # reads are counted apart


def test_a_signed_in_user_is_counted_across_sessions(settings: Any, viewer: Any) -> None:
    settings.STEERING_THROTTLE_READ = "2/min"
    browsers = [APIClient(), APIClient()]
    for browser in browsers:
        browser.force_login(viewer)
    assert browsers[0].get(READS).status_code == 200
    assert browsers[1].get(READS).status_code == 200
    assert_throttled(browsers[0].get(READS))
    assert_throttled(browsers[1].get(READS))


@pytest.mark.django_db
def test_anonymous_requests_are_counted_per_client_address_not_per_forwarded_header(settings: Any) -> None:
    """The OpenAPI schema is the API's one page open to anonymous callers."""
    settings.STEERING_THROTTLE_READ = "2/min"
    anon = APIClient()

    def schema(address: str, forwarded_for: str = "") -> Any:
        extra = {"HTTP_X_FORWARDED_FOR": forwarded_for} if forwarded_for else {}
        return anon.get("/api/schema/", {"format": "json"}, REMOTE_ADDR=address, **extra)

    for spoof in ("198.51.100.1", "198.51.100.2"):
        assert schema("192.0.2.10", spoof).status_code == 200
    # A new X-Forwarded-For is no new client: no proxy is trusted by default (STEERING_NUM_PROXIES=0).
    refused = schema("192.0.2.10", "198.51.100.3")
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert schema("192.0.2.11").status_code == 200


def test_agents_have_their_own_rate(settings: Any, admin: Any) -> None:
    settings.STEERING_THROTTLE_READ = "1/min"
    settings.STEERING_THROTTLE_WRITE = "1/min"
    settings.STEERING_THROTTLE_AGENT = "3/min"
    pop = f.fleet(2).pop
    _token, raw = do_create_token(admin, name="agent-a", role=Role.AGENT, pop=pop, actor=Actor.system("test"))
    agent = APIClient()
    agent.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    report = {"layer": "local", "haproxy": {"connected": True, "pid": 42, "servers": 0}}
    # A person's read and write rates (1/min here) do not apply to an agent's reports and polls.
    for _ in range(2):
        assert agent.post("/api/v1/agent/report/", report, format="json").status_code == 200
    assert agent.get("/api/v1/agent/desired/", {"layer": "local"}).status_code == 200
    assert_throttled(agent.post("/api/v1/agent/report/", report, format="json"))


def test_the_counts_are_in_the_shared_redis_cache(settings: Any, viewer: Any) -> None:
    settings.STEERING_THROTTLE_READ = "5/min"
    api = token_client(viewer)
    assert api.get(READS).status_code == 200
    token = ApiToken.objects.get(name="throttled")
    assert list(sync_client().scan_iter(match=f"steering:*:throttle:read:token:{token.pk}"))


def test_off_lifts_a_limit(settings: Any, viewer: Any) -> None:
    settings.STEERING_THROTTLE_READ = None  # what envrate gives for "off"
    api = token_client(viewer)
    assert all(api.get(READS).status_code == 200 for _ in range(5))


@pytest.mark.parametrize(("raw", "expected"), [
    (None, "120/min"), ("", "120/min"), ("30/s", "30/s"), (" 5000 / hour ", "5000/hour"), ("OFF", None),
])
def test_rates_read_from_the_environment(monkeypatch: Any, raw: str | None, expected: str | None) -> None:
    if raw is None:
        monkeypatch.delenv("STEERING_TEST_RATE", raising=False)
    else:
        monkeypatch.setenv("STEERING_TEST_RATE", raw)
    assert envrate("STEERING_TEST_RATE", "120/min") == expected


@pytest.mark.parametrize("raw", ["fast", "0/min", "10/fortnight", "10", "-1/s"])
def test_a_bad_rate_stops_the_process_at_start(monkeypatch: Any, raw: str) -> None:
    monkeypatch.setenv("STEERING_TEST_RATE", raw)
    with pytest.raises(ImproperlyConfigured, match="STEERING_TEST_RATE"):
        envrate("STEERING_TEST_RATE", "120/min")


# --- sign-in -------------------------------------------------------------------------------------

@pytest.fixture
def limited_sign_in(settings: Any) -> None:
    settings.STEERING_LOGIN_MAX_FAILURES = 3
    settings.STEERING_LOGIN_WINDOW_SECONDS = 600


@pytest.fixture
def password_checks() -> Any:
    """The failed password checks Django's authenticate() makes, as they happen."""
    seen: list[dict[str, Any]] = []

    def note(sender: Any, credentials: dict[str, Any], **kwargs: Any) -> None:
        seen.append(credentials)

    user_login_failed.connect(note)
    yield seen
    user_login_failed.disconnect(note)


def sign_in(client: Client, username: str, password: str, address: str = "192.0.2.1", path: str = "/accounts/login/") -> Any:
    return client.post(path, {"username": username, "password": password}, REMOTE_ADDR=address)


def test_sign_in_is_refused_after_too_many_failures_without_checking_the_password(
        limited_sign_in: None, operator: Any, password_checks: list[Any], caplog: Any) -> None:
    browser = Client()
    caplog.set_level(logging.WARNING, logger="steering.signin")
    for n in range(3):
        wrong = sign_in(browser, operator.username, f"wrong-{n}", address=f"192.0.2.{10 + n}")
        assert wrong.status_code == 200 and b"Wrong username or password" in wrong.content
    assert len(password_checks) == 3
    refused = sign_in(browser, operator.username, "otto-operator-pass-123", address="192.0.2.99")
    assert refused.status_code == 429
    assert 0 < int(refused["Retry-After"]) <= 600
    assert b"Too many failed sign-ins. Try again in 10 minutes." in refused.content
    assert b'name="password"' in refused.content  # the form is shown again
    assert len(password_checks) == 3  # the password was not checked
    assert "_auth_user_id" not in browser.session
    assert "sign-in failed" in caplog.text and "sign-in refused" in caplog.text


def test_one_address_trying_many_usernames_is_refused(limited_sign_in: None, operator: Any, viewer: Any) -> None:
    browser = Client()
    for name in ("alice", "bob", "carol"):
        assert sign_in(browser, name, "guess", address="192.0.2.50").status_code == 200
    assert sign_in(browser, viewer.username, "vera-viewer-pass-123", address="192.0.2.50").status_code == 429
    # The same person from elsewhere is not held back by that address's failures.
    welcome = sign_in(browser, viewer.username, "vera-viewer-pass-123", address="192.0.2.51")
    assert welcome.status_code == 302 and browser.session["_auth_user_id"] == str(viewer.pk)


def test_a_success_clears_the_usernames_count(limited_sign_in: None, operator: Any) -> None:
    addresses = iter(f"192.0.2.{n}" for n in range(100, 120))  # one each: only the username counts
    for _ in range(2):
        assert sign_in(Client(), operator.username, "wrong", next(addresses)).status_code == 200
    assert sign_in(Client(), operator.username, "otto-operator-pass-123", next(addresses)).status_code == 302
    for _ in range(2):
        assert sign_in(Client(), operator.username, "wrong", next(addresses)).status_code == 200
    # Four failures in all, but never three since the success: still allowed.
    assert sign_in(Client(), operator.username, "otto-operator-pass-123", next(addresses)).status_code == 302


def test_the_admin_sign_in_is_limited_too(limited_sign_in: None, admin: Any) -> None:
    admin.is_staff = True
    admin.save(update_fields=["is_staff"])
    browser = Client()
    for n in range(3):
        assert sign_in(browser, admin.username, "wrong", f"192.0.2.{20 + n}", path="/admin/login/").status_code == 200
    refused = sign_in(browser, admin.username, "ada-admin-pass-123", "192.0.2.30", path="/admin/login/")
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert b"Too many failed sign-ins" in refused.content
    assert "_auth_user_id" not in browser.session


# --- Redis away ----------------------------------------------------------------------------------

@pytest.fixture
def counts_unreachable(settings: Any) -> None:
    """The cache pointed at a loopback port nothing listens on: every count fails to connect."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": f"redis://127.0.0.1:{free_port()}/0"}}


def test_requests_are_let_through_while_the_counts_are_unreachable(counts_unreachable: None, settings: Any,
                                                                   viewer: Any, caplog: Any) -> None:
    settings.STEERING_THROTTLE_READ = "1/min"
    api = token_client(viewer)
    assert [api.get(READS).status_code for _ in range(3)] == [200, 200, 200]
    assert "request counts unavailable" in caplog.text


def test_sign_in_still_works_while_the_counts_are_unreachable(counts_unreachable: None, limited_sign_in: None,
                                                              operator: Any, caplog: Any) -> None:
    browser = Client()
    for _ in range(4):
        assert sign_in(browser, operator.username, "wrong").status_code == 200
    assert sign_in(browser, operator.username, "otto-operator-pass-123").status_code == 302
    assert "sign-in counts unavailable" in caplog.text
