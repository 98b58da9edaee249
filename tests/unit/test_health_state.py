"""The rise/fall state machine and the panic decision: pure functions, no I/O."""

from __future__ import annotations

from steering.health.state import CheckState, panic_decision, step
from steering.health.store import next_slot, phase


def feed(results: str, *, rise: int = 2, fall: int = 3, start: CheckState | None = None):
    state, transitions = start or CheckState(), []
    for i, c in enumerate(results):
        s = step(state, ok=c == "+", rise=rise, fall=fall, now=100.0 + i, due=100.0 + i)
        state = s.state
        if s.transition:
            transitions.append((i, *s.transition))
    return state, transitions


def test_it_goes_up_after_rise_successes_and_down_after_fall_failures():
    state, transitions = feed("++--+---")
    assert transitions == [(1, "unknown", "up"), (7, "up", "down")]
    assert state.health == "down" and state.fail_streak == 3


def test_it_goes_down_from_unknown_after_fall_failures():
    assert feed("---")[1] == [(2, "unknown", "down")]


def test_a_single_success_or_failure_does_not_flap():
    state, transitions = feed("++-+-+--+", rise=2, fall=3)
    assert transitions == [(1, "unknown", "up")]
    assert state.health == "up"


def test_it_comes_back_after_rise_successes():
    _, transitions = feed("---+-++")
    assert transitions == [(2, "unknown", "down"), (6, "down", "up")]


def test_a_late_result_for_an_older_slot_is_dropped():
    state = step(CheckState(), ok=True, rise=1, fall=1, now=10, due=10).state
    late = step(state, ok=False, rise=1, fall=1, now=11, due=8)
    assert not late.accepted and late.state == state and late.transition is None


def test_stale_keeps_counters_so_a_steady_backend_is_up_on_its_first_result():
    state, _ = feed("+++")
    stale = CheckState("stale", state.ok_streak, 0, state.last_time, state.last_due)
    s = step(stale, ok=True, rise=2, fall=3, now=200, due=200)
    assert s.transition == ("stale", "up")


def test_state_survives_its_redis_encoding():
    state, _ = feed("++-")
    assert CheckState.decode(state.encode()) == state
    assert CheckState.decode(b"garbage") == CheckState()


def test_panic_needs_more_than_the_threshold():
    assert not panic_decision(suspect=2, total=4, threshold_percent=50).in_panic
    assert panic_decision(suspect=3, total=4, threshold_percent=50).in_panic
    assert not panic_decision(suspect=4, total=4, threshold_percent=0).in_panic  # 0 disables
    assert "3 of 4" in panic_decision(suspect=3, total=4, threshold_percent=50).explain


def test_first_probes_spread_across_the_interval():
    offsets = [phase(i, 2.0) for i in range(1, 2001)]
    buckets = [0] * 10
    for o in offsets:
        assert 0 <= o < 2.0
        buckets[int(o / 0.2)] += 1
    assert min(buckets) > 150 and max(buckets) < 250  # no herd: ~200 per tenth of the interval
    slot = next_slot(1000.3, 7, 2.0)
    assert 1000.3 <= slot < 1002.3 and abs((slot - phase(7, 2.0)) / 2.0 - round((slot - phase(7, 2.0)) / 2.0)) < 1e-9
