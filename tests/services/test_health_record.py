"""Recording results in Redis (store.apply_results: one Lua script per batch) against the pure
state machine in steering.health.state, which stays the reference: the same random sequences go
through both and must give the same states, transitions, samples and metric counts."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steering.health import store
from steering.health.state import CheckState, step
from steering.health.target import ProbeResult, ProbeTarget
from steering.redisconn import sync_client
from tests.services.health_support import clean_probe_redis

_ids = itertools.count(900_000)


@pytest.fixture(autouse=True)
def _clean_redis() -> Iterator[None]:
    clean_probe_redis()
    yield
    clean_probe_redis()


def bucket(value: float, buckets: Sequence[float]) -> str:
    """What the Python recorder did before the Lua script (the /metrics bucket names)."""
    return next((repr(b) for b in buckets if value <= b), "+Inf")


def target(bid: int, rise: int, fall: int, interval: float = 2.0) -> ProbeTarget:
    return ProbeTarget(backend_id=bid, pool_id=1, kind="http", address="127.0.0.1", port=1,
                       interval=interval, rise=rise, fall=fall)


healths = st.sampled_from(["unknown", "up", "down", "stale"])
starts = st.one_of(st.none(), st.builds(
    lambda h, o, f, t: CheckState(h, o, f, t, t),
    healths, st.integers(0, 6), st.integers(0, 6), st.floats(1e9, 1e9 + 50, allow_nan=False).map(lambda x: round(x, 3))))
events = st.lists(st.tuples(
    st.booleans(),                                   # ok
    st.floats(-3.0, 5.0, allow_nan=False),           # due, relative to the previous one (may go back)
    st.floats(0.0, 2500.0, allow_nan=False),         # latency ms
    st.floats(0.0, 40.0, allow_nan=False),           # lag s
    st.sampled_from(["ok", "status", "timeout", "refused", "error"]),
    st.one_of(st.none(), st.integers(100, 599)),     # status
), min_size=1, max_size=25)


def results_for(bid: int, start_due: float, evs: list[tuple]) -> list[ProbeResult]:
    out, due = [], start_due
    for ok, d_due, latency, lag, result, status in evs:
        due += d_due
        out.append(ProbeResult(backend_id=bid, ok=ok, result=result, latency_ms=latency, due=due, started=due + lag,
                               finished=due + lag + latency / 1000.0, status=status,
                               error="" if status is not None else "boom | bang"))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=starts, rise=st.integers(1, 4), fall=st.integers(1, 4), evs=events, batched=st.booleans())
def test_the_lua_recorder_matches_the_reference_state_machine(start, rise, fall, evs, batched):
    r = sync_client()
    bid = next(_ids)
    t = target(bid, rise, fall)
    if start is not None:
        r.set(store.state_key(bid), start.encode())
    before = {k: dict(r.hgetall(k)) for k in (store.M_PROBES, store.M_LATENCY, store.M_LAG)}
    results = results_for(bid, (start.last_due if start else 1e9) + 0.5, evs)

    # The reference: state.step, with the state going through its Redis encoding between steps.
    state = CheckState.decode(start.encode()) if start else CheckState()
    expected_transitions, expected_stale = [], None
    for res in results:
        s = step(state, ok=res.ok, rise=rise, fall=fall, now=res.finished, due=res.due)
        if s.accepted:
            state = CheckState.decode(s.state.encode())
            expected_stale = res.finished + store.STALE_INTERVALS * t.interval
        if s.transition:
            expected_transitions.append((res.due, *s.transition, s.state.ok_streak, s.state.fail_streak))

    got = []
    for batch in ([results] if batched else [[res] for res in results]):
        got += store.apply_results(r, batch, {bid: t}, keep_samples=10)
    assert [(tr.from_health, tr.to_health, tr.evidence["ok_streak"], tr.evidence["fail_streak"]) for tr in got] \
        == [e[1:] for e in expected_transitions]
    assert all(tr.backend_id == bid and tr.pool_id == 1 and tr.evidence["rise"] == rise and tr.evidence["fall"] == fall
               for tr in got)

    raw = r.get(store.state_key(bid))
    assert (raw.decode() if raw else None) == (state.encode() if (start or expected_stale) else None)
    stale_at = r.zscore(store.STALE_AT, bid)
    assert stale_at == expected_stale

    samples = [s.decode() for s in r.lrange(store.samples_key(bid), 0, -1)]
    assert samples == [res.sample() for res in reversed(results)][:10]

    counts = Counter(res.result for res in results)
    lat = Counter(bucket(res.latency_ms / 1000.0, store.LATENCY_BUCKETS) for res in results)
    lag = Counter(bucket(res.lag, store.LAG_BUCKETS) for res in results)
    after = {k: dict(r.hgetall(k)) for k in (store.M_PROBES, store.M_LATENCY, store.M_LAG)}

    def delta(key: str, field: str) -> float:
        return float(after[key].get(field.encode(), 0)) - float(before[key].get(field.encode(), 0))

    assert {k: delta(store.M_PROBES, k) for k in counts} == {k: float(n) for k, n in counts.items()}
    assert {k: delta(store.M_LATENCY, k) for k in lat} == {k: float(n) for k, n in lat.items()}
    assert {k: delta(store.M_LAG, k) for k in lag} == {k: float(n) for k, n in lag.items()}
    assert delta(store.M_LATENCY, "count") == delta(store.M_LAG, "count") == len(results)
    assert delta(store.M_LATENCY, "sum") == pytest.approx(sum(res.latency_ms / 1000.0 for res in results), abs=1e-6)
    assert delta(store.M_LAG, "sum") == pytest.approx(sum(res.lag for res in results), abs=1e-6)
    gauges = r.hgetall(store.M_GAUGES)
    assert float(gauges[b"lag_last_batch_max"]) == pytest.approx(
        max(res.lag for res in (results if batched else results[-1:])), abs=1e-9)
    r.delete(store.state_key(bid), store.samples_key(bid))
    r.zrem(store.STALE_AT, bid)


def test_a_garbled_state_counts_as_never_checked():
    r = sync_client()
    t = target(42, 1, 1)
    r.set(store.state_key(42), "garbage")
    res = ProbeResult(backend_id=42, ok=True, result="ok", latency_ms=1.0, due=100.0, started=100.0, finished=100.5,
                      status=200)
    (tr,) = store.apply_results(r, [res], {42: t})
    assert (tr.from_health, tr.to_health) == ("unknown", "up")


def test_results_for_unknown_backends_are_ignored_and_the_script_survives_a_flush():
    r = sync_client()
    res = ProbeResult(backend_id=43, ok=False, result="refused", latency_ms=1.0, due=100.0, started=100.0,
                      finished=100.5, error="refused")
    assert store.apply_results(r, [res], {}) == []
    r.script_flush()  # a restarted Redis has no scripts: EVALSHA falls back to EVAL
    assert store.apply_results(r, [res], {43: target(43, 1, 1)})[0].to_health == "down"


def test_checks_started_together_share_a_timeout_and_each_still_times_out_on_its_own():
    """The engine starts checks due in the same few ms from one timer and times them out with one
    timer per group: a hung backend still fails with "timeout" after its timeout, a healthy one
    in the same group is unaffected, and a probe is never started before its due time."""
    import asyncio
    import ipaddress
    import time

    from steering.health import engine
    from tests.services.health_support import backends

    with backends(2) as (hung, fine):
        hung.mode = "hang"
        due = time.time() + 0.2
        items = [(ProbeTarget(backend_id=b, pool_id=1, kind="http", address="127.0.0.1", port=s.port, timeout=0.3),
                  due) for b, s in ((1, hung), (2, fine))]
        got: list[ProbeResult] = []
        with asyncio.Runner(loop_factory=engine.new_loop) as runner:
            runner.run(engine.run_shard(items, [ipaddress.ip_network("127.0.0.0/8")], got.extend))
    by_id = {res.backend_id: res for res in got}
    # Correctness, not speed (a loaded machine may run late): the hung one timed out, not before
    # its timeout; the healthy one beside it answered; nothing started before it was due.
    assert by_id[1].result == "timeout" and not by_id[1].ok and by_id[1].latency_ms >= 290
    assert by_id[2].ok and by_id[2].result != "timeout"
    assert all(due <= res.started for res in got)
