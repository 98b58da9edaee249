"""The live feed under attack and after trust is withdrawn: frame size, sockets per user, sign-out,
deactivation and role loss, and the Origin with its port. The real consumer, the real Redis
channel layer and the real session store (tests/api/test_live.py's way)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import Client

from config.asgi import application
from steering.live import consumers, slots
from steering.live.origin import origin_allowed
from steering.redisconn import sync_client
from steering.services.actions import do_drain
from steering.services.context import Actor
from tests import factories as f
from tests.api.live_support import HOST, ORIGIN, receive_type

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _no_sockets_left_over() -> Iterator[None]:
    """User ids are reused after each flush: no slot of an earlier test may count against this one."""
    def clear() -> None:
        keys = list(sync_client().scan_iter(match="steering:live:conns:*"))
        if keys:
            sync_client().delete(*keys)

    clear()
    yield
    clear()


@pytest.fixture
def quick_rechecks(monkeypatch: Any) -> None:
    monkeypatch.setattr(consumers, "RECHECK_SECONDS", 0.1)


def signed_in(user: User) -> tuple[Client, bytes]:
    client = Client()
    client.force_login(user)
    return client, f"sessionid={client.cookies['sessionid'].value}".encode()


def socket(cookie: bytes, *, host: bytes = HOST[1], origin: bytes = ORIGIN[1]) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, "/ws/live/", headers=[(b"cookie", cookie), (b"host", host), (b"origin", origin)])


async def closed_with(comm: WebsocketCommunicator, timeout: float = 10.0) -> int:
    """The close code the server sends next (messages before it are skipped)."""
    while True:
        message = await comm.receive_output(timeout)
        if message["type"] == "websocket.close":
            return int(message.get("code", 1000))


async def still_open(comm: WebsocketCommunicator, backend: Any) -> bool:
    """True when the socket still carries the feed: a drain's delta reaches it."""
    await sync_to_async(do_drain)(backend, actor=Actor(name="otto", source="api"), reason="still there?")
    return (await receive_type(comm, "delta"))["type"] == "delta"


def run(scenario: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    return async_to_sync(scenario)(*args)


async def slot_refreshed(comm: WebsocketCommunicator, user: User) -> bool:
    """Wait (bounded) until the socket's guard loop has moved its slot's expiry on: a re-check ran."""
    key = f"steering:live:conns:{user.pk}"
    (member, first), = await sync_to_async(sync_client().zrange)(key, 0, -1, withscores=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if (await sync_to_async(sync_client().zscore)(key, member) or first) > first:
            return True
        assert await comm.receive_nothing(0.1), "the socket sent something (or closed) while waiting"
    return False


# --- frame size ----------------------------------------------------------------------------------

@pytest.mark.parametrize("frame", [
    {"text_data": "x" * (64 * 1024 + 1)},
    {"text_data": "é" * (40 * 1024)},  # 40 Ki characters, 80 KiB as UTF-8 on the wire
    {"bytes_data": b"\0" * (64 * 1024 + 1)},
])
def test_a_frame_over_64_kib_closes_the_socket_with_1009(operator: User, frame: dict[str, Any]) -> None:
    _client, cookie = signed_in(operator)

    async def scenario() -> int:
        comm = socket(cookie)
        assert (await comm.connect())[0]
        await receive_type(comm, "hello")
        await comm.send_to(**frame)
        code = await closed_with(comm)
        await comm.disconnect()
        return code

    assert run(scenario) == 1009


def test_a_frame_of_exactly_64_kib_is_let_be(operator: User) -> None:
    backend = f.fleet(3).backends.first()
    _client, cookie = signed_in(operator)

    async def scenario() -> bool:
        comm = socket(cookie)
        assert (await comm.connect())[0]
        await receive_type(comm, "hello")
        await comm.send_to(text_data="x" * (64 * 1024))
        alive = await still_open(comm, backend)
        await comm.disconnect()
        return alive

    assert run(scenario)


# --- sockets per user ----------------------------------------------------------------------------

def test_the_socket_past_the_users_limit_is_closed_with_4429(settings: Any, operator: User, viewer: User) -> None:
    settings.STEERING_LIVE_MAX_CONNECTIONS_PER_USER = 2
    _a, cookie_a = signed_in(operator)
    _b, cookie_b = signed_in(operator)  # another browser of the same user counts too
    _v, viewer_cookie = signed_in(viewer)

    async def scenario() -> tuple[int, bool, bool]:
        first, second = socket(cookie_a), socket(cookie_b)
        for comm in (first, second):
            assert (await comm.connect())[0]
            await receive_type(comm, "hello")
        third = socket(cookie_a)
        await third.connect()
        refused = await closed_with(third)
        await third.disconnect()
        other_user = socket(viewer_cookie)
        other_user_admitted = (await other_user.connect())[0]
        await other_user.disconnect()
        await first.disconnect()  # a slot comes free
        again = socket(cookie_a)
        admitted_again = (await again.connect())[0]
        await receive_type(again, "hello")
        for comm in (second, again):
            await comm.disconnect()
        return refused, other_user_admitted, admitted_again

    refused, other_user_admitted, admitted_again = run(scenario)
    assert refused == 4429
    assert other_user_admitted and admitted_again
    assert slots.count(operator.pk) == 0  # every disconnect gave its slot back


def test_the_slots_of_a_crashed_process_drain_away(settings: Any, operator: User) -> None:
    settings.STEERING_LIVE_MAX_CONNECTIONS_PER_USER = 2
    _client, cookie = signed_in(operator)
    key = f"steering:live:conns:{operator.pk}"

    async def admitted() -> bool:
        comm = socket(cookie)
        await comm.connect()
        hello = await comm.receive_json_from(timeout=5)  # a refused socket closes instead
        await comm.disconnect()
        return bool(hello["type"] == "hello")

    # Two sockets of a process that died without a disconnect, still within their expiry: full.
    sync_client().zadd(key, {"dead-1": time.time() + 60, "dead-2": time.time() + 60})
    assert slots.claim(operator.pk, "probe", 2) is False
    # The same entries once their expiry passed (no process refreshes them any more): room again.
    sync_client().zadd(key, {"dead-1": time.time() - 1, "dead-2": time.time() - 1})
    assert run(admitted)
    assert sync_client().zscore(key, "dead-1") is None  # dropped from the count for good


def test_a_living_socket_keeps_its_slot_fresh(quick_rechecks: None, operator: User) -> None:
    _client, cookie = signed_in(operator)

    async def scenario() -> bool:
        comm = socket(cookie)
        assert (await comm.connect())[0]
        await receive_type(comm, "hello")
        refreshed = await slot_refreshed(comm, operator)
        await comm.disconnect()
        return refreshed

    assert run(scenario)


# --- trust withdrawn -----------------------------------------------------------------------------

def test_signing_out_closes_the_socket_with_4401(quick_rechecks: None, operator: User) -> None:
    client, cookie = signed_in(operator)

    async def scenario() -> int:
        comm = socket(cookie)
        assert (await comm.connect())[0]
        await receive_type(comm, "hello")
        await sync_to_async(client.logout)()  # django.contrib.auth.logout: the session row is deleted
        code = await closed_with(comm)
        await comm.disconnect()
        return code

    assert run(scenario) == 4401


@pytest.mark.parametrize(("withdraw", "expected"), [
    (lambda user: User.objects.filter(pk=user.pk).update(is_active=False), 4401),
    (lambda user: user.set_password("a-new-one-456") or user.save(), 4401),  # other sessions end
    (lambda user: user.groups.clear(), 4403),
], ids=["deactivated", "password-changed", "role-lost"])
def test_losing_trust_closes_the_socket(quick_rechecks: None, operator: User,
                                        withdraw: Callable[[User], Any], expected: int) -> None:
    _client, cookie = signed_in(operator)

    async def scenario() -> int:
        comm = socket(cookie)
        assert (await comm.connect())[0]
        await receive_type(comm, "hello")
        await sync_to_async(withdraw)(operator)
        code = await closed_with(comm)
        await comm.disconnect()
        return code

    assert run(scenario) == expected


def test_a_socket_whose_user_keeps_their_trust_stays_open(quick_rechecks: None, operator: User) -> None:
    backend = f.fleet(3).backends.first()
    _client, cookie = signed_in(operator)

    async def scenario() -> bool:
        comm = socket(cookie)
        assert (await comm.connect())[0]
        await receive_type(comm, "hello")
        assert await slot_refreshed(comm, operator)  # a re-check has run, and found nothing wrong
        alive = await still_open(comm, backend)
        await comm.disconnect()
        return alive

    assert run(scenario)


# --- origin --------------------------------------------------------------------------------------

def test_the_same_origin_is_accepted_and_another_port_refused(operator: User) -> None:
    _client, cookie = signed_in(operator)

    async def connects(origin: bytes) -> bool:
        comm = socket(cookie, host=b"127.0.0.1:8000", origin=origin)
        connected = (await comm.connect())[0]
        await comm.disconnect()
        return bool(connected)

    assert run(connects, b"http://127.0.0.1:8000")
    assert not run(connects, b"http://127.0.0.1:9000")


def scope(host: str | None, origin: str | None, scheme: str = "ws") -> dict[str, Any]:
    headers = [(b"host", host.encode())] if host is not None else []
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return {"type": "websocket", "scheme": scheme, "headers": headers}


@pytest.mark.parametrize(("host", "origin", "scheme", "allowed"), [
    ("127.0.0.1:8000", "http://127.0.0.1:8000", "ws", True),
    ("localhost", "http://localhost", "ws", True),
    ("localhost", "http://localhost:80", "ws", True),           # default port written out
    ("localhost:443", "https://localhost", "wss", True),
    ("127.0.0.1:8000", "http://127.0.0.1:8001", "ws", False),   # another port of the same host
    ("127.0.0.1:8000", "https://127.0.0.1:8000", "ws", False),  # another scheme
    ("localhost", "https://localhost", "ws", False),
    ("localhost", "http://localhost", "wss", False),
    ("127.0.0.1:8000", "http://localhost:8000", "ws", False),   # another host
    ("127.0.0.1:8000", None, "ws", False),                      # no Origin
    (None, "http://127.0.0.1:8000", "ws", False),               # no Host
    ("evil.example", "http://evil.example", "ws", False),       # same origin, but not our host (rebinding)
    ("127.0.0.1:8000", "null", "ws", False),
    ("127.0.0.1:8000", "http://127.0.0.1:99999", "ws", False),  # malformed port
    ("127.0.0.1:8000", "ftp://127.0.0.1:8000", "ws", False),
])
def test_origin_rules(host: str | None, origin: str | None, scheme: str, allowed: bool) -> None:
    assert origin_allowed(scope(host, origin, scheme)) is allowed


@pytest.mark.parametrize(("origin", "allowed"), [
    ("https://dash.example.com", True),
    ("https://dash.example.com:8443", False),
    ("http://dash.example.com", False),
    ("https://ops.example.net", True),
    ("https://example.net", True),
    ("https://ops.example.net:8443", False),
    ("http://ops.example.net", False),
    ("https://example.org", False),
])
def test_trusted_origins_are_read_as_django_reads_them(settings: Any, origin: str, allowed: bool) -> None:
    settings.CSRF_TRUSTED_ORIGINS = ["https://dash.example.com", "https://*.example.net"]
    assert origin_allowed(scope("127.0.0.1:8000", origin)) is allowed
