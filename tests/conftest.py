"""Personas (a viewer, an operator, an admin), API clients for each, database plumbing, and the
real processes tests in several directories start: the web process (`web`), and the DNS data
plane (`gslb`, `stack`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection
from rest_framework.test import APIClient

from steering.models import audit_sql
from steering.services.context import Actor
from steering.services.tokens import do_create_token
from tests.processes import WebProcess
from tests.support import IN_CI  # noqa: F401  (defined once there; some tests import it from here)

if TYPE_CHECKING:
    from tests.dataplane.gslb.lab import Stack  # imported where used: it imports this module


@pytest.fixture(autouse=True, scope="session")
def _sqlite_flush_keeps_audit_triggers(django_db_setup: Any, django_db_blocker: Any) -> Iterator[None]:
    """Transactional tests empty every table between tests (DELETE on SQLite, TRUNCATE on
    PostgreSQL), which the append-only triggers refuse; lift them around the runner's flush only."""
    DatabaseOperations = type(connection.ops)
    original = DatabaseOperations.sql_flush
    if connection.vendor == "sqlite":
        lift, restore = audit_sql.SQLITE_DROP, audit_sql.SQLITE_CREATE
    else:
        lift, restore = [audit_sql.POSTGRES_ALLOW_TRUNCATE], [audit_sql.POSTGRES_FORBID_TRUNCATE]

    def sql_flush(self: Any, style: Any, tables: Any, **kwargs: Any) -> list[str]:
        statements = original(self, style, tables, **kwargs)
        if "steering_change" in tables:
            return [*lift, *statements, *restore]
        return statements

    DatabaseOperations.sql_flush = sql_flush  # type: ignore[method-assign]
    yield
    DatabaseOperations.sql_flush = original  # type: ignore[method-assign]


def make_user(username: str, role: str | None) -> User:
    user = User.objects.create_user(username=username, password=f"{username}-pass-123")
    if role:
        user.groups.add(Group.objects.get_or_create(name=role)[0])  # a transactional flush empties data migrations
    return user


@pytest.fixture
def viewer(db: Any) -> User:
    return make_user("vera-viewer", "viewer")


@pytest.fixture
def operator(db: Any) -> User:
    return make_user("otto-operator", "operator")


@pytest.fixture
def admin(db: Any) -> User:
    return make_user("ada-admin", "admin")


@pytest.fixture
def nobody(db: Any) -> User:
    """Signed in, but in no role group."""
    return make_user("nora-norole", None)


def token_client(user: User, role: str | None = None, **headers: str) -> APIClient:
    from steering.roles import user_role

    token, raw = do_create_token(user, name=f"test-{user.username}", role=role or user_role(user) or "viewer",
                                 actor=Actor.system("test"))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}", **headers)
    client.raw_token = raw  # type: ignore[attr-defined]
    client.user = user  # type: ignore[attr-defined]
    return client



def agent_client(owner: Any, pop: Any = None, name: str = "agent") -> APIClient:
    """An API client with an agent token (bound to `pop`, or to the DNS layer when None)."""
    _token, raw = do_create_token(owner, name=name, role="agent", pop=pop, actor=Actor.system("test"))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.fixture
def viewer_api(viewer: User) -> APIClient:
    return token_client(viewer)


@pytest.fixture
def operator_api(operator: User) -> APIClient:
    return token_client(operator)


@pytest.fixture
def admin_api(admin: User) -> APIClient:
    return token_client(admin)


@pytest.fixture
def anon_api() -> APIClient:
    return APIClient()


@pytest.fixture
def db_vendor() -> str:
    return connection.vendor


@pytest.fixture(autouse=True)
def _fresh_server_lists() -> None:
    # Each test's database is rolled back, ids and all: to the desired-state builder that is a
    # restore from a backup, after which nothing it kept may be reused.
    from steering.dataplane.haproxy.desired import SERVER_LISTS

    SERVER_LISTS.clear()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    # PBKDF2's million rounds cost ~0.4 s a user; tests are not about password storage.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _model_only_drains(settings: Any) -> None:
    """Most tests drive the control plane with no data plane behind it, so a drain there is
    complete in the model alone. The product's default (confirmation on: a drain completes when
    its PoP's HAProxy acknowledged it) is what tests of the agent contract set back."""
    settings.STEERING_DATAPLANE_CONFIRM = False
    # Tests act on one object in quick succession; the wait period's own tests set it back.
    settings.STEERING_CHANGE_WAIT_SECONDS = 0


@pytest.fixture(autouse=True)
def _no_dns_queries(monkeypatch: Any) -> None:
    """Tests never ask a DNS server anything: names resolve through the hosts file only, unless a
    test sets the system resolver with a stand-in getaddrinfo."""
    from steering import resolve

    monkeypatch.setattr(resolve, "MODE", "hosts")


@pytest.fixture(autouse=True)
def _no_figures_outlive_their_test() -> Iterator[None]:
    """Backend ids are reused after each transactional flush; live figures a test left in Redis
    (an agent's report) must not pass for the next test's measurements."""
    yield
    from steering import redis_keys
    from steering.redisconn import sync_client

    try:
        redis = sync_client()
        keys = list(redis.scan_iter(match=redis_keys.BACKEND_STATS.format(id="*"), count=1000))
        if keys:
            redis.delete(*keys)
        redis.delete(redis_keys.AGENTS_SEEN)
    except Exception:  # a test that stopped Redis on purpose
        pass


@pytest.fixture(autouse=True)
def _no_throttle_counts_outlive_their_test() -> None:
    """Ids of users and tokens are reused after each flush or rollback; the request and sign-in
    counts an earlier test left in the Redis cache (steering.api.throttling, steering.signin) must
    not count against this one's. The product's rates stay in force within each test."""
    from steering import redis_keys
    from steering.redisconn import sync_client

    try:
        redis = sync_client()
        keys = list(redis.scan_iter(match=f"{redis_keys.CACHE_PREFIX}:*:{redis_keys.THROTTLE_PREFIX}*", count=1000))
        if keys:
            redis.delete(*keys)
    except Exception:  # a test that stopped Redis on purpose
        pass


# --- real processes ---------------------------------------------------------------------------------


@pytest.fixture
def web(transactional_db: Any, tmp_path: Path) -> Iterator[WebProcess]:
    """The real ASGI app (tests.processes.WebProcess, uvicorn) on the test database, one per test:
    each transactional test starts the state version from scratch. Tests using it carry the
    `integration` marker."""
    server = WebProcess(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def gslb(django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The control plane's web process for a module's DNS tests (tests/dataplane/gslb/lab.py)."""
    from tests.dataplane.gslb.lab import control_plane_stack

    with control_plane_stack(django_db_blocker, tmp_path_factory.mktemp("gslb")) as stack:
        yield stack


@pytest.fixture
def stack(gslb: Stack, tmp_path: Path) -> Iterator[Callable[[], Stack]]:
    """Call it after creating the test's data: a GSLB server and PowerDNS on it (dns_starter in
    tests/dataplane/gslb/lab.py)."""
    from tests.dataplane.gslb.lab import dns_starter

    with dns_starter(gslb, tmp_path) as start:
        yield start
