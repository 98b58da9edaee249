"""Outlier ejection (issue 17): live traffic's verdicts, bounded, audited, confirmed or cleared.

The pure rules (steering.dataplane.passive) first, then the service (steering.services.outliers)
driven by figures written into Redis the way the data plane's agent writes them.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from steering import capacity, redis_keys
from steering.dataplane.haproxy.desired import pop_spec
from steering.dataplane.passive import (
    Member,
    OutlierPolicy,
    Point,
    ProbeResult,
    Track,
    choose,
    connection_failures,
    ejection_limit,
    ejection_seconds,
    judge,
    prober_clears,
)
from steering.dataplane.stats import BackendStats, read_backend_stats, write_backend_stats
from steering.health.state import CheckState
from steering.health.store import state_key
from steering.models import Backend, Change, Pool
from steering.redisconn import sync_client
from steering.representation import represent, weight_inputs
from steering.services import outliers
from steering.services.health import record_transitions
from tests import factories as f

# --- the pure rules ------------------------------------------------------------------------------


def track_of(*points: tuple[float, ...], keep: float = 10.0) -> Track:
    t = Track()
    for p in points:
        t.add(Point(*p), keep_seconds=keep)  # type: ignore[arg-type]
    return t


def test_a_5xx_share_over_the_window_is_a_verdict_with_its_evidence() -> None:
    policy = OutlierPolicy(failure_percent=25, window_seconds=10, min_requests=10)
    # 28 requests in 10 s, 14 of them 503: the backend answering 503 to half its requests.
    t = track_of((100.0, 0, 0, 0), (105.0, 14, 0, 7), (110.0, 28, 0, 14))
    v = judge(policy, t, now=110.0)
    assert v is not None and v.rule == "share"
    assert v.reason == "14 × 5xx in 10 s (50% of 28 requests)"
    # Below the share, or too few requests to judge: no verdict.
    assert judge(policy, track_of((100.0, 0, 0, 0), (110.0, 100, 0, 20)), now=110.0) is None
    assert judge(policy, track_of((100.0, 0, 0, 0), (110.0, 8, 0, 4)), now=110.0) is None


def test_only_the_window_counts_and_a_restart_starts_over() -> None:
    policy = OutlierPolicy(window_seconds=10, min_requests=10)
    t = track_of((100.0, 0, 0, 0), (101.0, 40, 0, 40), (112.0, 80, 0, 40), (122.0, 200, 0, 40))
    assert judge(policy, t, now=122.0) is None  # the 5xx burst left the window
    assert len(t.points) <= 3
    t.add(Point(123.0, 5, 0, 0), keep_seconds=10)  # counters went back: HAProxy restarted
    assert t.points == [Point(123.0, 5, 0, 0)] and t.streak == 0
    assert not t.add(Point(123.0, 9, 0, 0), keep_seconds=10)  # the same sample again is not new


def test_consecutive_failures_and_haproxys_own_verdict() -> None:
    policy = OutlierPolicy(consecutive_failures=5)
    t = track_of((1.0, 10, 0, 0), (2.0, 13, 3, 0), (3.0, 15, 5, 0))  # 3 then 2 failed, no success between
    assert t.streak == 5
    v = judge(policy, t, now=3.0)
    assert v is not None and (v.rule, v.reason) == ("consecutive", "5 failed requests in a row")
    t.add(Point(4.0, 16, 5, 0), keep_seconds=10)  # one success breaks the run
    assert t.streak == 0
    # HAProxy's observe took it out while we watched: a verdict, as long as it stays down.
    t = track_of((1.0, 10, 0, 0, 0), (2.0, 12, 2, 0, 1))
    v = judge(policy, t, now=2.0)
    assert v is not None and v.rule == "observed" and "HAProxy took it out" in v.reason
    t.add(Point(3.0, 12, 2, 0, 1), keep_seconds=10)
    assert judge(policy, t, now=3.0) is not None
    # Down when first seen (say, just back from an ejection, HAProxy's check not through yet): old news.
    assert judge(policy, track_of((5.0, 12, 2, 0, 1), (6.0, 12, 2, 0, 1)), now=6.0) is None


def test_a_run_of_5xx_answers_is_a_consecutive_verdict_that_says_so() -> None:
    policy = OutlierPolicy(consecutive_failures=5)
    t = track_of((1.0, 10, 0, 0), (2.0, 13, 1, 2), (3.0, 15, 1, 4))  # 503s and a failed connection, no success
    v = judge(policy, t, now=3.0)
    assert v is not None and (v.rule, v.reason) == ("consecutive", "5 failed requests in a row (4 × 5xx)")
    assert Track.from_json(t.to_json()).streak_5xx == 4  # kept in Redis between ticks
    assert not connection_failures(v.reason)
    assert connection_failures("5 failed requests in a row")
    assert connection_failures("HAProxy took it out after 5 failed connections in a row (observe layer4)")
    assert not connection_failures("14 × 5xx in 10 s (50% of 28 requests)")
    assert not connection_failures("3 failed attempts in 4 s (30% of 10 requests)")  # a share: the window decides


def test_the_prober_clears_an_ejection_for_failed_connections_early_never_one_for_5xx() -> None:
    observed = "HAProxy took it out after 5 failed connections in a row (observe layer4)"
    up_late = ProbeResult("up", 2, 118.0)

    def clears(reason: str, now: float, probe: ProbeResult | None) -> bool:
        return prober_clears(reason, ejected_at=100.0, ejected_until=130.0, now=now, probe=probe)

    assert clears(observed, 120.0, up_late)
    assert clears("5 failed requests in a row", 120.0, up_late)
    assert not clears(observed, 114.0, up_late)                            # not before half the ejection
    assert not clears(observed, 120.0, ProbeResult("up", 9, 112.0))        # a pass from before half-way
    assert not clears(observed, 120.0, ProbeResult("up", 0, 118.0))        # its latest check failed
    assert not clears(observed, 120.0, ProbeResult("stale", 2, 118.0))
    assert not clears(observed, 120.0, None)                               # no active check
    assert not clears("14 × 5xx in 10 s (50% of 28 requests)", 120.0, up_late)
    assert not clears("5 failed requests in a row (5 × 5xx)", 120.0, up_late)


def test_ejection_time_grows_on_repeat_and_is_capped() -> None:
    policy = OutlierPolicy(ejection_seconds=30, max_ejection_seconds=100)
    assert [ejection_seconds(policy, n) for n in (1, 2, 3, 4)] == [30, 60, 90, 100]


def test_the_bound_never_ejects_more_than_the_share_nor_below_min_capacity() -> None:
    ten = [Member(i, 100.0, True) for i in range(10)]
    choice = choose(ten, range(10), OutlierPolicy(max_ejected_percent=10, min_healthy_percent=50))
    assert choice.eject == (0,) and len(choice.held) == 9 and "at most 10%" in choice.why_held
    assert ejection_limit(25, 10) == 2 and ejection_limit(3, 10) == 1 and ejection_limit(3, 0) == 0
    # Already one ejected: nobody else may go while it is out.
    held = choose([Member(0, 1, False, ejected=True), *ten[1:]], [5], OutlierPolicy(max_ejected_percent=10))
    assert held.eject == () and held.held == (5,)
    # Two of 1,000 req/s each, at least 60 % must stay in: none may go.
    two = [Member(1, 1000.0, True), Member(2, 1000.0, True)]
    choice = choose(two, [1], OutlierPolicy(max_ejected_percent=50, min_healthy_percent=60))
    assert choice.eject == () and "minimum healthy 60%" in choice.why_held
    # Whatever the settings, never the last serving backend.
    assert choose([Member(1, 0, True)], [1], OutlierPolicy(max_ejected_percent=100, min_healthy_percent=0)).eject == ()
    # A backend already out of service (down, drained) costs no capacity to eject.
    mixed = [Member(1, 1000.0, True), Member(2, 1000.0, False), Member(3, 1000.0, True)]
    assert choose(mixed, [1], OutlierPolicy(max_ejected_percent=50, min_healthy_percent=50)).eject == ()


def test_the_share_allows_at_least_one_backend_in_a_pool_smaller_than_100_over_n_like_envoy() -> None:
    # At most N % of the pool, rounded down ...
    assert [ejection_limit(n, 10) for n in (10, 19, 20, 29, 30, 100)] == [1, 1, 2, 2, 3, 10]
    assert [ejection_limit(n, 25) for n in (4, 7, 8)] == [1, 1, 2]
    # ... and at least one backend when the pool has fewer than 100/N of them (10 % of 1..9 is still one) ...
    assert all(ejection_limit(n, 10) == 1 for n in range(1, 10))
    assert ejection_limit(2, 1) == 1
    # ... except 0 %, which only watches.
    assert ejection_limit(5, 0) == 0
    # That one still never goes below min_healthy_percent: of 2 backends with 60 % to keep, none may go.
    two = [Member(1, 0, True), Member(2, 0, True)]
    assert choose(two, [1], OutlierPolicy(max_ejected_percent=10, min_healthy_percent=60)).eject == ()
    assert choose(two, [1], OutlierPolicy(max_ejected_percent=10, min_healthy_percent=50)).eject == (1,)


def test_an_ejected_backend_gets_no_traffic_even_in_panic_and_comes_back_by_itself() -> None:
    ejected = capacity.WeightInputs(weight=100, health="up", ejected_seconds_left=12.2,
                                    ejection_reason="14 × 5xx in 10 s (50% of 28 requests)")
    explained = capacity.explain_effective_weight(ejected)
    assert explained.effective == 0
    assert explained.reason == ("ejected by live traffic: 14 × 5xx in 10 s (50% of 28 requests); back in 13 s "
                                "unless the prober finds it down")
    panic = capacity.WeightInputs(weight=100, health="down", pool_in_panic=True, ejected_seconds_left=5)
    assert capacity.effective_weight(panic) == 0
    assert capacity.effective_weight(capacity.WeightInputs(weight=100, health="up", ejected_seconds_left=None)) == 100
    # Out of service on purpose says so first.
    assert capacity.explain_effective_weight(capacity.WeightInputs(
        weight=100, admin_state="maint", ejected_seconds_left=5)).reason == "admin state maint"


# --- the service, driven by figures in Redis ------------------------------------------------------


@pytest.fixture(autouse=True)
def _clean_redis() -> Iterator[None]:
    client = sync_client()
    keys = [redis_keys.OUTLIER_TRACKS, redis_keys.OUTLIER_HELD, redis_keys.METRICS_OUTLIER, redis_keys.OUTLIER_LOCK]
    client.delete(*keys)
    yield
    for key in client.scan_iter(redis_keys.BACKEND_STATS.format(id="*")):
        client.delete(key)
    client.delete(*keys)


class Feed:
    """Writes a pool's figures the way the agent does: cumulative counters, one sample a second."""

    def __init__(self, backends: list[Backend], *, start: float | None = None) -> None:
        self.counts = {b.pk: [0, 0, 0] for b in backends}  # stot, errors, 5xx
        self.t = time.time() - 8.0 if start is None else start

    def step(self, per_backend: dict[int, tuple[int, int, int]], *, down: set[int] = frozenset(),  # type: ignore[assignment]
             default: tuple[int, int, int] = (10, 0, 0)) -> None:
        self.t += 1.0
        for bid, c in self.counts.items():
            add = per_backend.get(bid, default)
            c[0] += add[0]
            c[1] += add[1]
            c[2] += add[2]
            write_backend_stats(bid, BackendStats(sessions=0, completion_rate=10.0, session_rate=float(add[0]),
                                                  updated_at=self.t, stot=c[0], errors=c[1], hrsp_5xx=c[2],
                                                  observed_down=int(bid in down)))


def pool_with(n: int, **kw: Any) -> tuple[Pool, list[Backend]]:
    pool = f.fleet(n, capacity_rps=1000, **kw)
    Backend.objects.filter(pool=pool).update(health="up")
    return pool, list(Backend.objects.filter(pool=pool).order_by("pk"))


def tick_at(offset: float = 0.0) -> dict[str, int]:
    return outliers.tick(now=time.time() + offset)


def test_a_backend_failing_half_its_requests_is_ejected_audited_and_weighted_zero(db: Any) -> None:
    pool, bs = pool_with(4)
    bad = bs[0]
    feed = Feed(bs)
    feed.step({})
    tick_at()
    for _ in range(3):
        feed.step({bad.pk: (10, 0, 5)})  # 503 to half its requests
        result = tick_at()
    assert result == {} or result.get("ejected", 0) == 0  # ejected on an earlier pass, once
    bad.refresh_from_db()
    assert bad.ejected_at is not None and bad.ejection_count == 1
    assert (bad.ejected_until - bad.ejected_at) == datetime.timedelta(seconds=30)
    assert bad.ejection_reason == "5 × 5xx in 1 s (50% of 10 requests)"  # the first sample with enough requests
    changes = list(Change.objects.filter(action="backend.eject"))
    assert len(changes) == 1
    change = changes[0]
    assert change.actor_name == "system:outlier" and change.source == "system" and change.object_id == bad.pk
    assert change.reason.startswith("ejected by live traffic: 5 × 5xx in 1 s") and "out for 30 s" in change.reason
    assert change.before["ejected_at"] is None and change.after["ejected_at"] is not None
    # Every consumer of the one effective-weight function sees it: the data plane, the explainer, the API.
    spec = pop_spec(pool.pop)
    server = next(s for p in spec.pools for s in p.servers if s.backend_id == bad.pk)
    assert server.weight == 0 and server.weight_reason.startswith("ejected by live traffic: 5 × 5xx")
    data = represent(Backend.objects.get(pk=bad.pk))
    assert data["effective_weight"] == 0 and "ejected by live traffic" in data["effective_weight_reason"]
    assert data["ejection_reason"] == bad.ejection_reason
    others = [b for b in bs if b.pk != bad.pk]
    assert all(not Backend.objects.get(pk=b.pk).ejected_at for b in others)


def test_ejection_is_bounded_when_every_backend_misbehaves_and_the_operator_is_told(db: Any) -> None:
    pool, bs = pool_with(10)
    feed = Feed(bs)
    feed.step({})
    for _ in range(3):
        feed.step({}, default=(10, 0, 6))
        tick_at()
    ejected = list(Backend.objects.filter(pool=pool, ejected_at__isnull=False))
    assert len(ejected) == 1  # 10 % of 10, whatever the verdicts say
    pool.refresh_from_db()
    assert pool.outlier_panic
    assert pool.outlier_panic_reason.startswith("9 more backend(s) fail live traffic")
    assert "at most 10% of the pool may be ejected at once (1 of 10)" in pool.outlier_panic_reason
    panics = list(Change.objects.filter(action="pool.outlier_panic"))
    assert len(panics) == 1 and panics[0].actor_name == "system:outlier" and panics[0].object_id == pool.pk
    assert Change.objects.filter(action="backend.eject").count() == 1  # written on the transitions only
    weights = [capacity.effective_weight(weight_inputs(b, pool_in_panic=False)) for b in Backend.objects.filter(pool=pool)]
    assert sorted(weights) == [0] + [100] * 9
    # /metrics counts it all.
    text = Client().get("/metrics").content.decode()
    assert 'steering_outlier_ejections_total{rule="share"} 1.0' in text
    assert "steering_backends_ejected 1.0" in text and "steering_pools_outlier_panic 1.0" in text
    assert "steering_outlier_held_back 9.0" in text
    # The traffic recovers: once a whole window passes with nothing held back, the panic is over.
    for _ in range(3):
        feed.step({}, default=(10, 0, 0))
        tick_at()
    outliers.tick(now=time.time() + pool.outlier_window_seconds + 1)
    pool.refresh_from_db()
    assert not pool.outlier_panic and pool.outlier_panic_reason == ""
    assert Change.objects.filter(action="pool.outlier_panic_end").count() == 1


def test_the_min_healthy_capacity_holds_even_for_the_worst_backend(db: Any) -> None:
    pool, bs = pool_with(2, min_healthy_percent=60, outlier_max_ejected_percent=50)
    feed = Feed(bs)
    feed.step({})
    tick_at()
    feed.step({bs[0].pk: (10, 10, 0)})  # every attempt failing: 10 in a row
    tick_at()
    assert not Backend.objects.filter(pool=pool, ejected_at__isnull=False).exists()
    pool.refresh_from_db()
    assert pool.outlier_panic and "minimum healthy 60%" in pool.outlier_panic_reason


def eject_one(pool: Pool, bs: list[Backend]) -> Backend:
    feed = Feed(bs)
    feed.step({})
    assert tick_at() == {}
    feed.step({bs[0].pk: (5, 5, 0)}, down={bs[0].pk})  # HAProxy's observe took it out
    assert tick_at().get("ejected") == 1
    b = Backend.objects.get(pk=bs[0].pk)
    assert b.ejected_at is not None and b.ejection_reason.startswith("HAProxy took it out after 5 failed connections")
    return b


def test_the_prober_confirms_an_ejection_by_finding_the_backend_down(db: Any) -> None:
    pool, bs = pool_with(4, monitor=f.monitor())
    b = eject_one(pool, bs)
    record_transitions(pool.pk, [(b.pk, "down", {"check": "http", "fail_streak": 3, "fall": 3, "error": "refused"})])
    assert tick_at() == {"confirmed": 1}
    b.refresh_from_db()
    assert b.ejected_at is None and b.health == "down"
    change = Change.objects.get(action="backend.eject_confirmed")
    assert change.actor_name == "system:outlier" and "the prober confirms the ejection" in change.reason
    assert capacity.explain_effective_weight(weight_inputs(b, pool_in_panic=False)).reason == "health down"


def test_it_comes_back_when_the_time_is_over_and_the_next_ejection_lasts_longer(db: Any) -> None:
    pool, bs = pool_with(4, monitor=f.monitor())
    Backend.objects.filter(pk=bs[0].pk).update(slow_start_seconds=20)
    b = eject_one(pool, bs)
    assert tick_at(10) == {}  # 20 s left: still out
    assert tick_at(31) == {"returned": 1}
    b.refresh_from_db()
    assert b.ejected_at is None and b.ejection_count == 1 and b.ready_since is not None
    change = Change.objects.get(action="backend.eject_end")
    assert change.reason.startswith("back in: ejection over (HAProxy took it out") and "the prober passes it" in change.reason
    assert "slow start over 20 s" in change.reason
    assert 0 < capacity.effective_weight(weight_inputs(b, pool_in_panic=False)) < 100  # ramping back in
    # HAProxy still had it down when it came back (its check not through yet): old news, no verdict.
    feed = Feed([b], start=b.ejected_until.timestamp())
    feed.step({b.pk: (0, 0, 0)}, down={b.pk})
    assert tick_at(32) == {}
    # Back in HAProxy, then it fails again soon after: ejected again, for twice as long.
    feed.step({b.pk: (10, 0, 0)})
    tick_at(32)
    feed.step({b.pk: (3, 3, 0)}, down={b.pk})
    tick_at(32)
    b.refresh_from_db()
    assert b.ejection_count == 2 and (b.ejected_until - b.ejected_at) == datetime.timedelta(seconds=60)


def prober_says(b: Backend, health: str, ok_streak: int, at: float) -> None:
    """The prober's latest result for `b`, in its Redis state (steering.health.store)."""
    sync_client().set(state_key(b.pk), CheckState(health, ok_streak, 0 if ok_streak else 3, at, at).encode())


def test_the_prober_clears_an_ejection_for_failed_connections_past_half_its_time(db: Any) -> None:
    pool, bs = pool_with(4, monitor=f.monitor())
    b = eject_one(pool, bs)  # HAProxy's observe: failed connections; out for 30 s
    start = b.ejected_at.timestamp()
    try:
        prober_says(b, "up", 3, start + 5)      # passing again, but too early
        assert tick_at(start + 10 - time.time()) == {}
        prober_says(b, "up", 4, start + 16)     # a pass past half the ejection
        assert tick_at(start + 14 - time.time()) == {}      # half-way is not reached yet
        assert tick_at(start + 17 - time.time()) == {"returned": 1}
    finally:
        sync_client().delete(state_key(b.pk))
    b.refresh_from_db()
    assert b.ejected_at is None and b.ejection_count == 1
    assert abs(b.ejected_until.timestamp() - (start + 17)) < 1  # over now, not at its planned end
    change = Change.objects.get(action="backend.eject_end", object_id=b.pk)
    assert change.actor_name == "system:outlier"
    assert change.reason.startswith("back in early, cleared by the prober")
    assert "failed connections (HAProxy took it out" in change.reason
    assert capacity.effective_weight(weight_inputs(b, pool_in_panic=False)) == 100
    text = Client().get("/metrics").content.decode()
    assert 'steering_outlier_ejection_ends_total{how="cleared"} 1.0' in text


def test_the_prober_never_clears_an_ejection_for_5xx_answers_early(db: Any) -> None:
    pool, bs = pool_with(4, monitor=f.monitor())
    bad = bs[0]
    feed = Feed(bs)
    feed.step({})
    tick_at()
    feed.step({bad.pk: (10, 0, 5)})  # 503 to half its requests; /healthz passes all along
    tick_at()
    bad.refresh_from_db()
    assert bad.ejected_at is not None and " × 5xx in " in bad.ejection_reason
    start = bad.ejected_at.timestamp()
    try:
        prober_says(bad, "up", 20, start + 20)
        assert tick_at(start + 25 - time.time()) == {}  # past half-way, passing: still out
        assert Backend.objects.get(pk=bad.pk).ejected_at is not None
        assert tick_at(start + 31 - time.time()) == {"returned": 1}  # its time over: back in as before
    finally:
        sync_client().delete(state_key(bad.pk))
    assert Change.objects.get(action="backend.eject_end").reason.startswith("back in: ejection over")


def test_servers_the_haproxy_agent_put_back_put_the_pool_in_outlier_panic_once(db: Any) -> None:
    pool, bs = pool_with(4, outlier_detection=False)  # HAProxy's observe is bounded all the same
    assert outliers.record_observe_held(pool.pop, [bs[1].pk, bs[2].pk, bs[3].pk]) == 1
    assert outliers.record_observe_held(pool.pop, [bs[1].pk, bs[2].pk]) == 0  # still in it: said once
    pool.refresh_from_db()
    assert pool.outlier_panic
    assert pool.outlier_panic_reason.startswith("HAProxy's observe took out more backends than the pool may lose")
    assert "at most 10% of the pool out at once (1 of 4), never below its minimum healthy 50%" in pool.outlier_panic_reason
    told = Change.objects.get(action="pool.outlier_panic")
    assert told.actor_name == "system:outlier" and told.object_id == pool.pk
    # Another PoP's agent cannot name this pool's backends.
    assert outliers.record_observe_held(f.pop(), [bs[0].pk]) == 0
    # Within a window of the last hold it stays; after a quiet window it is over.
    assert tick_at(pool.outlier_window_seconds - 1) == {}
    outliers.tick(now=time.time() + pool.outlier_window_seconds + 1)
    pool.refresh_from_db()
    assert not pool.outlier_panic
    assert Change.objects.get(action="pool.outlier_panic_end").reason.startswith("outlier panic over: no backend held")


def test_turning_the_policy_off_returns_every_ejected_backend(db: Any, admin_api: Any) -> None:
    pool, bs = pool_with(4)
    b = eject_one(pool, bs)
    r = admin_api.patch(f"/api/v1/pools/{pool.pk}/", {"outlier_detection": False}, format="json")
    assert r.status_code == 200, r.content
    assert tick_at() == {"returned": 1}
    b.refresh_from_db()
    assert b.ejected_at is None
    assert "outlier detection turned off" in Change.objects.get(action="backend.eject_end").reason


def test_no_figures_no_verdict_and_nothing_written(db: Any) -> None:
    pool, bs = pool_with(4)
    before = Change.objects.count()
    for _ in range(3):
        assert tick_at() == {}
    assert Change.objects.count() == before
    # Healthy figures: windows in Redis, still nothing in the DB.
    feed = Feed(bs)
    for _ in range(3):
        feed.step({})
        tick_at()
    assert Change.objects.count() == before
    assert sync_client().hlen(redis_keys.OUTLIER_TRACKS) == 4


def test_a_drained_backend_is_not_judged(db: Any) -> None:
    pool, bs = pool_with(4)
    Backend.objects.filter(pk=bs[0].pk).update(admin_state="drained")
    feed = Feed(bs)
    feed.step({})
    tick_at()
    feed.step({bs[0].pk: (10, 10, 0)}, down={bs[0].pk})
    tick_at()
    assert not Backend.objects.filter(ejected_at__isnull=False).exists()


def test_the_what_if_and_the_guard_leave_an_ejected_backend_out(db: Any, operator_api: Any) -> None:
    pool, bs = pool_with(4, expected_rps=2000)
    ejected = eject_one(pool, bs)
    target = bs[1]
    impact = operator_api.get(f"/api/v1/backends/{target.pk}/impact/?action=drain").json()
    receivers = {r["id"]: r for r in impact["receivers"] if r["type"] == "backend"}
    assert ejected.pk not in receivers or receivers[ejected.pk]["load_after_rps"] == receivers[ejected.pk]["load_before_rps"]
    assert {bs[2].pk, bs[3].pk} <= set(receivers)


def test_pool_settings_in_the_api_are_validated_and_reach_the_config(db: Any, admin_api: Any) -> None:
    pool, bs = pool_with(2)
    url = f"/api/v1/pools/{pool.pk}/"
    bad = admin_api.patch(url, {"retries": 11, "retry_on": "conn-failure bogus", "observe": "layer9",
                                "error_limit": 0, "outlier_failure_percent": 0, "outlier_max_ejected_percent": 101,
                                "outlier_window_seconds": 1}, format="json")
    assert bad.status_code == 400, bad.content
    errors = bad.json()["errors"]
    assert set(errors) == {"retries", "retry_on", "observe", "error_limit", "outlier_failure_percent",
                           "outlier_max_ejected_percent", "outlier_window_seconds"}
    assert "bogus" in errors["retry_on"][0]
    shorter = admin_api.patch(url, {"outlier_ejection_seconds": 60, "outlier_max_ejection_seconds": 30}, format="json")
    assert shorter.status_code == 400 and set(shorter.json()["errors"]) == {"outlier_max_ejection_seconds"}
    for body in ({"outlier_panic": True}, {"retries": "many"}, {"retry_on": "503 503"}):
        assert admin_api.patch(url, body, format="json").status_code == 400, body
    b = bs[0]
    assert admin_api.patch(f"/api/v1/backends/{b.pk}/", {"ejected_until": None}, format="json").status_code == 400
    ok = admin_api.patch(url, {"retries": 2, "redispatch": False, "retry_on": "conn-failure 503", "observe": "off",
                               "error_limit": 7, "outlier_max_ejected_percent": 20}, format="json")
    assert ok.status_code == 200, ok.content
    body = ok.json()
    assert (body["retries"], body["redispatch"], body["retry_on"], body["observe"]) == (2, False, "conn-failure 503", "off")
    assert body["outlier_panic"] is False
    spec = next(p for p in pop_spec(pool.pop).pools if p.id == pool.pk)
    assert (spec.retries, spec.redispatch, spec.retry_on, spec.observe, spec.error_limit) == (2, False, "conn-failure 503",
                                                                                              "off", 7)
    backend = admin_api.get(f"/api/v1/backends/{b.pk}/").json()
    assert {"ejected_at", "ejected_until", "ejection_count", "ejection_reason"} <= set(backend)


def test_figures_carry_the_new_counters_through_redis(db: Any) -> None:
    b = f.backend()
    write_backend_stats(b.pk, BackendStats(sessions=1, completion_rate=1.0, session_rate=2.0, updated_at=time.time(),
                                           stot=120, hrsp_5xx=7, errors=3, rate_errors=0.5, observed_down=1))
    s = read_backend_stats([b.pk])[b.pk]
    assert (s.stot, s.hrsp_5xx, s.errors, s.rate_errors, s.observed_down) == (120, 7, 3, 0.5, 1)
    # What the API stores from an agent's JSON report: numbers, perhaps as floats.
    sync_client().hset(redis_keys.BACKEND_STATS.format(id=b.pk), mapping={"stot": 130.0, "errors": 4.0})
    assert read_backend_stats([b.pk])[b.pk].stot == 130


def test_the_tick_runs_every_second_from_beat_and_the_state_table_has_ejected(db: Any, viewer_api: Any) -> None:
    entry = next(e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == "steering.outlier_tick")
    assert entry["schedule"] == 1.0
    from steering.tasks.outliers import outlier_tick

    assert outlier_tick.name == "steering.outlier_tick"
    states = viewer_api.get("/api/v1/states/").json()
    rows = states if isinstance(states, list) else states.get("states", states.get("results", []))
    ejected = next(s for s in rows if s["key"] == "ejected")
    assert ejected["symbol"] and ejected["colour"] and "live traffic" in ejected["meaning"]


def test_an_expired_ejection_gives_the_weight_back_even_if_the_task_stopped(db: Any) -> None:
    pool, bs = pool_with(2)
    now = timezone.now()
    Backend.objects.filter(pk=bs[0].pk).update(ejected_at=now - datetime.timedelta(seconds=40),
                                              ejected_until=now - datetime.timedelta(seconds=10), ejection_reason="x")
    b = Backend.objects.get(pk=bs[0].pk)
    assert capacity.effective_weight(weight_inputs(b, pool_in_panic=False)) == 100
