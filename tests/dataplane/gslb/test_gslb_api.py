"""Answer counters (flushed to Redis by the GSLB server) and GET /api/v1/dns/answers/."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from steering.gslb.counters import AnswerCounter, beat, read_answers
from steering.redis_keys import GSLB_ANSWERS_PREFIX, GSLB_HEARTBEAT
from steering.redisconn import sync_client


@pytest.fixture(autouse=True)
def _clean_gslb_keys() -> Iterator[None]:
    def clean() -> None:
        client = sync_client()
        for key in [*client.scan_iter(match=f"{GSLB_ANSWERS_PREFIX}*"), GSLB_HEARTBEAT]:
            client.delete(key)

    clean()
    yield
    clean()


def test_counts_flush_into_per_second_buckets_that_expire():
    counter = AnswerCounter()
    for _ in range(3):
        counter.add(7, (1,))
    counter.add(7, (2,))
    now = time.time()
    assert counter.flush(sync_client(), now=now) == 4
    key = f"{GSLB_ANSWERS_PREFIX}{int(now)}"
    assert sync_client().hgetall(key) == {b"7:1": b"3", b"7:2": b"1"}
    assert 0 < sync_client().ttl(key) <= 120
    assert counter.flush(sync_client(), now=now) == 0  # nothing new: nothing written


def test_the_window_sums_the_last_60_seconds_only():
    client = sync_client()
    now = time.time()
    client.hset(f"{GSLB_ANSWERS_PREFIX}{int(now) - 5}", mapping={"7:1": 30, "7:2": 90})
    client.hset(f"{GSLB_ANSWERS_PREFIX}{int(now) - 30}", mapping={"7:1": 30, "8:1": 6})
    client.hset(f"{GSLB_ANSWERS_PREFIX}{int(now) - 61}", mapping={"7:1": 1000})  # outside the window
    body = read_answers(client, now=now)
    assert body["window_seconds"] == 60 and body["connected"] is False
    assert body["services"]["7"] == {"total": 150, "qps": 2.5, "regions": {
        "1": {"answers": 60, "share": 0.4}, "2": {"answers": 90, "share": 0.6}}}
    assert body["services"]["8"]["regions"] == {"1": {"answers": 6, "share": 1.0}}


def test_api_reports_answers_and_whether_the_gslb_server_is_connected(viewer_api):
    counter = AnswerCounter()
    for region in (1, 1, 1, 2):
        counter.add(5, (region,))
    counter.flush(sync_client())
    empty = viewer_api.get("/api/v1/dns/answers/")
    assert empty.status_code == 200 and empty.json()["connected"] is False
    beat(sync_client())
    body = viewer_api.get("/api/v1/dns/answers/").json()
    assert body["connected"] is True and body["window_seconds"] == 60
    assert body["services"]["5"]["total"] == 4
    assert body["services"]["5"]["regions"]["1"] == {"answers": 3, "share": 0.75}
    assert body["services"]["5"]["qps"] == pytest.approx(4 / 60, abs=0.001)


def test_a_stale_heartbeat_is_not_connected(viewer_api):
    beat(sync_client(), now=time.time() - 30)
    assert viewer_api.get("/api/v1/dns/answers/").json()["connected"] is False


def test_api_needs_a_signed_in_user(anon_api):
    assert anon_api.get("/api/v1/dns/answers/").status_code in (401, 403)
