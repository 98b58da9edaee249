"""Server-side coalescing of live deltas, measurement pushes, and who may connect.

The merge rules are checked on the pure function; the consumer over the real Redis channel layer
(deltas group_sent the way services.effects sends them, and through the service layer itself).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from config.asgi import application
from steering.live.coalesce import coalesce, has_hole
from steering.live.consumers import COALESCE_SECONDS
from steering.readmodels.version import current_version
from steering.redis_keys import LIVE_GROUP
from steering.services.context import Actor
from steering.services.topology import do_update
from tests import factories as f
from tests.api.live_support import HOST, ORIGIN, receive_type, session_cookie


def upsert(kind: str, pk: int, **data: Any) -> dict[str, Any]:
    return {"op": "upsert", "type": kind, "id": pk, "data": {"id": pk, **data}}


def delta(version: int, *changes: dict[str, Any]) -> dict[str, Any]:
    return {"type": "delta", "version": version, "changes": list(changes)}


# --- the merge ------------------------------------------------------------------------------

def test_merge_keeps_the_last_write_per_object_in_order_of_first_appearance():
    message = coalesce([
        delta(5, upsert("backend", 1, weight=10), upsert("pool", 7, name="a")),
        delta(6, upsert("backend", 2, weight=20)),
        delta(7, upsert("backend", 1, weight=30), {"op": "delete", "type": "pool", "id": 7}),
    ])
    assert message == {
        "type": "delta", "from_version": 5, "version": 7,
        "changes": [upsert("backend", 1, weight=30), {"op": "delete", "type": "pool", "id": 7},
                    upsert("backend", 2, weight=20)],
    }


def test_merge_orders_versions_that_arrived_out_of_order_and_drops_duplicates():
    message = coalesce([delta(8, upsert("backend", 1, weight=3)), delta(6, upsert("backend", 1, weight=1)),
                        delta(7, upsert("backend", 1, weight=2)), delta(7, upsert("backend", 1, weight=99))])
    assert message is not None
    assert (message["from_version"], message["version"]) == (6, 8)
    assert message["changes"] == [upsert("backend", 1, weight=3)]


def test_a_hole_in_the_buffer_sends_the_last_run_so_the_browser_resyncs():
    # 11 never came: claiming 10..12 would hide its changes; from_version 12 makes the browser refetch.
    message = coalesce([delta(10, upsert("backend", 1, weight=1)), delta(12, upsert("backend", 2, weight=2))])
    assert message is not None
    assert (message["from_version"], message["version"]) == (12, 12)
    assert message["changes"] == [upsert("backend", 2, weight=2)]


def test_a_hole_is_a_missing_version_after_the_last_one_sent_or_between_buffered_ones():
    assert not has_hole([delta(5), delta(6)], after=4)
    assert not has_hole([delta(6), delta(5), delta(5)], after=4)
    assert has_hole([delta(6)], after=4)  # 5 has not come (yet)
    assert has_hole([delta(5), delta(7)], after=4)
    assert not has_hole([delta(3), delta(4)], after=4)  # nothing new
    assert not has_hole([delta(9), delta(10)])


def test_versions_already_sent_are_not_sent_again():
    assert coalesce([delta(3), delta(4)], after=4) is None
    message = coalesce([delta(4, upsert("pop", 1)), delta(5, upsert("pop", 2))], after=4)
    assert message is not None
    assert (message["from_version"], message["version"], message["changes"]) == (5, 5, [upsert("pop", 2)])
    assert coalesce([]) is None


# --- the consumer over the real channel layer ------------------------------------------------

async def connect(cookie: bytes) -> tuple[WebsocketCommunicator, dict[str, Any]]:
    comm = WebsocketCommunicator(application, "/ws/live/", headers=[(b"cookie", cookie), HOST, ORIGIN])
    connected, _ = await comm.connect()
    assert connected
    first = await comm.receive_json_from(timeout=5)
    assert first["type"] == "hello"  # hello comes first, before any delta
    return comm, first


async def receive_until_version(comm: WebsocketCommunicator, version: int, timeout: float = 20.0) -> list[dict]:
    messages: list[dict] = []
    while not messages or messages[-1]["version"] < version:
        messages.append(await receive_type(comm, "delta", timeout=timeout))
    return messages


@pytest.mark.django_db(transaction=True)
def test_a_flapping_fleet_is_coalesced_into_a_few_messages_carrying_the_last_state(operator):
    cookie = session_cookie(operator)
    deltas = 300
    backends = 40

    async def scenario() -> tuple[dict, list[dict], float]:
        comm, hello = await connect(cookie)
        layer = get_channel_layer()
        start = hello["version"] + 1
        began = time.monotonic()
        for n in range(deltas):  # as fast as the layer takes them: hundreds of versions a second
            changes = [upsert("backend", n % backends, health="up" if n % 2 else "down", seq=n)]
            await layer.group_send(LIVE_GROUP, {"type": "live.delta", "delta": delta(start + n, *changes)})
        messages = await receive_until_version(comm, start + deltas - 1)
        elapsed = time.monotonic() - began
        assert await comm.receive_nothing(timeout=3 * COALESCE_SECONDS)
        await comm.disconnect()
        return hello, messages, elapsed

    hello, messages, elapsed = async_to_sync(scenario)()
    # Every window lasts COALESCE_SECONDS, so n messages need at least (n - 1) windows of time.
    assert len(messages) <= elapsed / COALESCE_SECONDS + 1
    assert len(messages) < deltas / 5
    # The messages chain without a hole from the first delta after hello to the last one.
    assert messages[0]["from_version"] == hello["version"] + 1
    for before, after in zip(messages, messages[1:], strict=False):
        assert after["from_version"] == before["version"] + 1
    assert messages[-1]["version"] == hello["version"] + deltas
    # Each message names an object once, with its latest data; the last word per backend wins.
    final: dict[int, dict] = {}
    for message in messages:
        ids = [c["id"] for c in message["changes"]]
        assert len(ids) == len(set(ids))
        final.update({c["id"]: c["data"] for c in message["changes"]})
    assert final == {pk: {"id": pk, "health": "up" if seq % 2 else "down", "seq": seq}
                     for pk, seq in ((n % backends, n) for n in range(deltas - backends, deltas))}


@pytest.mark.django_db(transaction=True)
def test_changes_made_through_the_service_layer_arrive_merged_with_the_right_versions(operator):
    pool = f.fleet(3)
    backend = pool.backends.first()
    cookie = session_cookie(operator)
    actor = Actor(name="otto", source="api")

    async def scenario() -> tuple[dict, list[dict], int]:
        comm, hello = await connect(cookie)
        for n in range(1, 6):
            await sync_to_async(do_update)(backend, {"version": f"2.0.{n}"}, actor=actor, reason="roll out")
        version = await sync_to_async(current_version)()
        messages = await receive_until_version(comm, version)
        await comm.disconnect()
        return hello, messages, version

    hello, messages, version = async_to_sync(scenario)()
    assert version == hello["version"] + 5
    assert messages[0]["from_version"] == hello["version"] + 1
    assert messages[-1]["version"] == version
    assert sum(m["version"] - m["from_version"] + 1 for m in messages) == 5
    last = [c for c in messages[-1]["changes"] if (c["type"], c["id"]) == ("backend", backend.pk)]
    assert len(last) == 1 and last[0]["data"]["version"] == "2.0.5"


@pytest.mark.django_db(transaction=True)
def test_a_version_that_arrives_late_by_less_than_a_window_is_waited_for(operator, monkeypatch):
    # Two processes commit n+1 then n+2, but n+2's publish reaches the browser's channel first.
    window = 1.0  # long windows, so the test's own scheduling delays cannot matter
    monkeypatch.setattr("steering.live.consumers.COALESCE_SECONDS", window)
    cookie = session_cookie(operator)

    async def scenario() -> tuple[dict, dict]:
        comm, hello = await connect(cookie)
        layer = get_channel_layer()
        n = hello["version"]
        await layer.group_send(LIVE_GROUP, {"type": "live.delta", "delta": delta(n + 2, upsert("backend", 2, w=2))})
        await asyncio.sleep(window * 1.4)  # past the first window, within the extra one
        await layer.group_send(LIVE_GROUP, {"type": "live.delta", "delta": delta(n + 1, upsert("backend", 1, w=1))})
        message = await receive_type(comm, "delta", timeout=10)
        await comm.disconnect()
        return hello, message

    hello, message = async_to_sync(scenario)()
    assert (message["from_version"], message["version"]) == (hello["version"] + 1, hello["version"] + 2)
    assert [c["id"] for c in message["changes"]] == [1, 2]


@pytest.mark.django_db(transaction=True)
def test_a_version_that_never_comes_is_not_waited_for_long(operator):
    cookie = session_cookie(operator)

    async def scenario() -> tuple[dict, dict]:
        comm, hello = await connect(cookie)
        n = hello["version"]
        await get_channel_layer().group_send(LIVE_GROUP, {"type": "live.delta", "delta": delta(n + 2, upsert("pop", 1))})
        message = await receive_type(comm, "delta", timeout=10)
        await comm.disconnect()
        return hello, message

    hello, message = async_to_sync(scenario)()
    # Sent on its own: from_version beyond the browser's version + 1 makes it refetch the topology.
    assert (message["from_version"], message["version"]) == (hello["version"] + 2, hello["version"] + 2)


@pytest.mark.django_db(transaction=True)
def test_measurement_pushes_are_forwarded_as_they_are(viewer):
    cookie = session_cookie(viewer)
    observed = {"type": "observed", "layer": "anycast", "pop": 3, "desired": ["198.51.100.0/24"],
                "observed": [], "at": 1_800_000_000.5}

    async def scenario() -> tuple[dict, dict]:
        comm, hello = await connect(cookie)
        await get_channel_layer().group_send(LIVE_GROUP, {"type": "live.observed", "message": observed})
        message = await comm.receive_json_from(timeout=5)
        await comm.disconnect()
        return hello, message

    hello, message = async_to_sync(scenario)()
    assert hello["role"] == "viewer"
    assert message == observed


@pytest.mark.django_db(transaction=True)
def test_an_idle_feed_outlives_the_channel_layers_blocking_read(viewer):
    # channels-redis waits for messages with a 5 s BZPOPMIN; a Redis client that gives up reading
    # at 5 s too (redis-py 8's default) killed every quiet socket. Stay quiet past it, then push.
    cookie = session_cookie(viewer)
    message = {"type": "observed", "layer": "dns", "at": 1.0}

    async def scenario() -> dict:
        comm, _ = await connect(cookie)
        assert await comm.receive_nothing(timeout=7.0, interval=0.5)
        await get_channel_layer().group_send(LIVE_GROUP, {"type": "live.observed", "message": message})
        received = await comm.receive_json_from(timeout=5)
        await comm.disconnect()
        return received

    assert async_to_sync(scenario)() == message


@pytest.mark.django_db(transaction=True)
def test_a_lost_last_delta_is_made_up_for_by_a_hello_with_the_current_version(operator, monkeypatch):
    # The channel layer drops messages for a full channel; when the lost one is the last, no later
    # delta reveals the gap. The quiet feed says the current version again, and the browser refetches.
    monkeypatch.setattr("steering.live.consumers.BEACON_SECONDS", 0.2)
    pool = f.fleet(2)
    backend = pool.backends.first()
    cookie = session_cookie(operator)

    async def scenario() -> tuple[dict, list[dict], int]:
        comm, hello = await connect(cookie)
        with monkeypatch.context() as m:
            m.setattr("steering.services.effects.publish_after_commit", lambda version, deltas: None)  # lost
            await sync_to_async(do_update)(backend, {"version": "9.9.9"}, actor=Actor(name="x", source="api"),
                                           reason="lost")
        version = await sync_to_async(current_version)()
        again = await receive_type(comm, "hello", timeout=10)
        assert await comm.receive_nothing(timeout=1.0)  # said once, not every period
        await comm.disconnect()
        return hello, again, version

    hello, again, version = async_to_sync(scenario)()
    assert version == hello["version"] + 1
    assert again == {"type": "hello", "version": version, "role": "operator"}


@pytest.mark.django_db(transaction=True)
def test_a_signed_in_user_without_a_role_is_refused(nobody):
    cookie = session_cookie(nobody)

    async def scenario() -> tuple[bool, object]:
        comm = WebsocketCommunicator(application, "/ws/live/", headers=[(b"cookie", cookie), HOST, ORIGIN])
        connected, code = await comm.connect()
        await comm.disconnect()
        return connected, code

    assert async_to_sync(scenario)() == (False, 4401)
