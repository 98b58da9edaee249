"""The live feed over a real WebSocket consumer and the real Redis channel layer."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator

from config.asgi import application
from steering.readmodels.version import current_version
from steering.services.actions import do_drain
from steering.services.context import Actor
from tests import factories as f
from tests.api.live_support import HOST, ORIGIN, receive_type, session_cookie


@pytest.mark.django_db(transaction=True)
def test_it_says_hello_then_pushes_a_delta_after_a_drain(operator):
    pool = f.fleet(4)
    backend = pool.backends.first()
    cookie = session_cookie(operator)

    async def scenario() -> tuple[dict, dict, int]:
        comm = WebsocketCommunicator(application, "/ws/live/", headers=[(b"cookie", cookie), HOST, ORIGIN])
        connected, _ = await comm.connect()
        assert connected
        hello = await receive_type(comm, "hello")
        await sync_to_async(do_drain)(backend, actor=Actor(name="otto", source="api"), reason="live test")
        delta = await receive_type(comm, "delta")
        version = await sync_to_async(current_version)()
        await comm.disconnect()
        return hello, delta, version

    hello, delta, version = async_to_sync(scenario)()
    assert hello["role"] == "operator"
    assert delta["version"] == hello["version"] + 1 == version
    by_type = {(c["type"], c["id"]): c for c in delta["changes"]}
    changed = by_type[("backend", backend.pk)]
    assert changed["op"] == "upsert"
    assert changed["data"]["admin_state"] == "draining"
    assert changed["data"]["effective_weight"] == 0
    assert any(t == "operation" for t, _ in by_type)


@pytest.mark.django_db(transaction=True)
def test_it_refuses_an_anonymous_socket():
    async def scenario() -> tuple[bool, object]:
        comm = WebsocketCommunicator(application, "/ws/live/", headers=[HOST, ORIGIN])
        connected, code = await comm.connect()
        await comm.disconnect()
        return connected, code

    connected, code = async_to_sync(scenario)()
    assert not connected
    assert code == 4401


@pytest.mark.django_db(transaction=True)
def test_it_refuses_a_foreign_origin(operator):
    cookie = session_cookie(operator)

    async def scenario() -> bool:
        comm = WebsocketCommunicator(application, "/ws/live/", headers=[(b"cookie", cookie), HOST, (b"origin", b"https://evil.example")])
        connected, _ = await comm.connect()
        await comm.disconnect()
        return connected

    assert async_to_sync(scenario)() is False


def test_the_topology_snapshot_carries_the_version_deltas_continue_from(viewer_api):
    pool = f.fleet(3)
    r = viewer_api.get("/api/v1/topology/")
    assert r.status_code == 200
    body = r.json()
    assert body["version"] == current_version()
    assert {b["id"] for b in body["backends"]} == set(pool.backends.values_list("pk", flat=True))
    for key in ("regions", "pops", "services", "vips", "prefixes", "client_networks", "monitors", "pools", "operations", "states"):
        assert key in body
    do_drain(pool.backends.first(), actor=Actor(name="x", source="api"), reason="bump")
    assert viewer_api.get("/api/v1/topology/").json()["version"] == body["version"] + 1


def test_it_publishes_only_after_commit(db, django_capture_on_commit_callbacks, monkeypatch):
    published = []
    monkeypatch.setattr("steering.services.effects.publish_after_commit", lambda v, d: published.append((v, d)))
    b = f.fleet(4).backends.first()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        do_drain(b, actor=Actor(name="x", source="api"), reason="r")
        assert published == []
    assert len(callbacks) == 1
    callbacks[0]()
    assert len(published) == 1 and any(d["type"] == "backend" and d["id"] == b.pk for d in published[0][1])
