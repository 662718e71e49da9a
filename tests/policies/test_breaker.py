"""The circuit breaker: a failing deployment is skipped at once, then probed back."""

from __future__ import annotations

import msgspec
import pytest

from policies.breaker import Breaker, BreakerState, Permit, Transition
from policies.config import BreakerConfig
from providers.errors import CircuitOpenError
from tests.fakes.clock import WALL_OFFSET, FakeClock

DEP = "openai/gpt-5.1"
CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
CONFIG = BreakerConfig(
    window_s=30,
    min_calls=5,
    failure_rate=0.5,
    slow_s=30,
    slow_rate=0.8,
    open_s=10,
    max_open_s=40,
    half_open_probes=2,
)


class Recorder:
    """Collects the transitions a breaker reports."""

    def __init__(self) -> None:
        self.seen: list[Transition] = []

    def __call__(self, transition: Transition) -> None:
        self.seen.append(transition)

    def moves(self) -> list[tuple[BreakerState, BreakerState]]:
        return [(t.from_state, t.to_state) for t in self.seen]


def _breaker(
    clock: FakeClock, recorder: Recorder | None = None, **overrides: float
) -> Breaker:
    config = msgspec.structs.replace(CONFIG, **overrides)
    return Breaker(DEP, config, clock, recorder)


def _calls(breaker: Breaker, *outcomes: str) -> None:
    """Make one call per outcome: "ok", "fail", "slow" or "slow-fail"."""
    for outcome in outcomes:
        permit = breaker.acquire()
        duration_s = 31.0 if outcome.startswith("slow") else 0.5
        breaker.record(permit, failed=outcome.endswith("fail"), duration_s=duration_s)


def _trip(breaker: Breaker) -> None:
    _calls(breaker, "fail", "fail", "fail", "fail", "fail")
    assert breaker.state is OPEN


def _retry_after(breaker: Breaker) -> float:
    with pytest.raises(CircuitOpenError) as info:
        breaker.acquire()
    return info.value.retry_after_s


def test_a_high_failure_rate_opens_the_breaker(clock: FakeClock) -> None:
    """Three failures in five calls (60% ≥ 50%) open the breaker, saying why."""
    recorder = Recorder()
    breaker = _breaker(clock, recorder)
    _calls(breaker, "ok", "fail", "ok", "fail")
    assert breaker.state is CLOSED
    _calls(breaker, "fail")
    assert breaker.state is OPEN
    assert breaker.reason == "failure rate 60% over 5 calls in 30s ≥ 50%"
    assert recorder.moves() == [(CLOSED, OPEN)]
    assert recorder.seen[0].retry_at_wall == clock.wall() + 10


def test_a_failure_rate_exactly_at_the_threshold_opens(clock: FakeClock) -> None:
    """Half the calls failing is enough when failure_rate is 50%."""
    breaker = _breaker(clock, min_calls=4)
    _calls(breaker, "ok", "fail", "ok", "fail")
    assert breaker.state is OPEN


def test_no_verdict_before_min_calls(clock: FakeClock) -> None:
    """Four failures out of four calls are not enough when min_calls is five."""
    breaker = _breaker(clock)
    _calls(breaker, "fail", "fail", "fail", "fail")
    assert breaker.state is CLOSED
    assert (breaker.calls, breaker.failure_rate) == (4, 1.0)


def test_a_healthy_window_stays_closed(clock: FakeClock) -> None:
    """A window with failures below failure_rate keeps serving traffic."""
    breaker = _breaker(clock)
    _calls(breaker, "ok", "ok", "fail", "ok", "fail", "ok")
    assert breaker.state is CLOSED
    assert breaker.failure_rate == pytest.approx(2 / 6)
    assert breaker.slow_rate == 0


def test_a_high_slow_rate_opens_the_breaker(clock: FakeClock) -> None:
    """Calls that succeed but take longer than slow_s open the breaker too."""
    breaker = _breaker(clock)
    _calls(breaker, "slow", "slow", "slow", "slow", "ok")
    assert breaker.state is OPEN
    assert breaker.reason == (
        "slow rate 80% (slower than 30s) over 5 calls in 30s ≥ 80%"
    )


def test_a_slow_failure_counts_as_both(clock: FakeClock) -> None:
    """A call that failed slowly is both a failure and a slow call."""
    breaker = _breaker(clock)
    _calls(breaker, "slow-fail", "ok")
    assert (breaker.failure_rate, breaker.slow_rate) == (0.5, 0.5)


def test_old_failures_roll_out_of_the_window(clock: FakeClock) -> None:
    """Failures older than window_s are forgotten and cannot trip the breaker."""
    breaker = _breaker(clock)
    _calls(breaker, "fail", "fail", "fail", "fail")
    clock.advance(31)
    assert breaker.calls == 0
    _calls(breaker, "fail", "ok", "ok", "ok")
    assert breaker.state is CLOSED
    assert breaker.calls == 4


def test_an_open_breaker_refuses_until_its_period_ends(clock: FakeClock) -> None:
    """While open, calls are refused with the seconds left until the next probe."""
    breaker = _breaker(clock)
    _trip(breaker)
    assert breaker.retry_at_wall == clock.wall() + 10
    assert _retry_after(breaker) == 10
    clock.advance(9.99)
    assert _retry_after(breaker) == pytest.approx(0.05)
    with pytest.raises(CircuitOpenError, match=f"circuit open for {DEP}: failure rate"):
        breaker.acquire()
    clock.advance(0.01)
    assert breaker.acquire().is_probe
    assert breaker.state is HALF_OPEN
    assert breaker.retry_at_wall is None


def test_half_open_lets_exactly_the_probes_through(clock: FakeClock) -> None:
    """After the open period only half_open_probes trial calls run at once."""
    recorder = Recorder()
    breaker = _breaker(clock, recorder)
    _trip(breaker)
    clock.advance(10)
    probes = [breaker.acquire(), breaker.acquire()]
    with pytest.raises(CircuitOpenError, match="2 probe") as info:
        breaker.acquire()
    assert info.value.retry_after_s > 0
    assert all(p.is_probe for p in probes)
    assert recorder.seen[-1].reason == "open period over: probing"


def test_a_successful_probe_closes_and_clears_the_window(clock: FakeClock) -> None:
    """One good probe closes the breaker with a clean slate."""
    recorder = Recorder()
    breaker = _breaker(clock, recorder)
    _trip(breaker)
    clock.advance(10)
    breaker.record(breaker.acquire(), failed=False, duration_s=1.0)
    assert breaker.state is CLOSED
    assert breaker.reason == "probe succeeded"
    assert breaker.calls == 0
    assert recorder.moves() == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


def test_failed_probes_double_the_open_period_up_to_the_cap(clock: FakeClock) -> None:
    """Each consecutive re-open waits twice as long, never more than max_open_s."""
    breaker = _breaker(clock)
    _trip(breaker)
    periods = []
    for _ in range(4):
        clock.advance(breaker.open_s_current)
        breaker.record(breaker.acquire(), failed=True, duration_s=1.0)
        periods.append(_retry_after(breaker))
    assert periods == [20, 40, 40, 40]
    assert breaker.reason == "probe failed: re-open for 40s"


def test_a_slow_probe_counts_as_failed(clock: FakeClock) -> None:
    """A probe that answers but too slowly keeps the breaker open."""
    breaker = _breaker(clock)
    _trip(breaker)
    clock.advance(10)
    breaker.record(breaker.acquire(), failed=False, duration_s=45.0)
    assert breaker.state is OPEN
    assert breaker.reason == "probe slow (45.0s > 30s): re-open for 20s"


def test_closing_resets_the_open_period(clock: FakeClock) -> None:
    """After a recovery, the next outage starts again from open_s."""
    breaker = _breaker(clock)
    _trip(breaker)
    clock.advance(10)
    breaker.record(breaker.acquire(), failed=True, duration_s=1.0)
    assert breaker.open_s_current == 20
    clock.advance(20)
    breaker.record(breaker.acquire(), failed=False, duration_s=1.0)
    assert breaker.open_s_current == 10
    _trip(breaker)
    assert _retry_after(breaker) == 10


def test_release_frees_a_probe_slot_without_a_verdict(clock: FakeClock) -> None:
    """A probe that ended without a verdict lets another probe through, counting nothing."""
    breaker = _breaker(clock, half_open_probes=1)
    _trip(breaker)
    clock.advance(10)
    probe = breaker.acquire()
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    breaker.release(probe)
    assert breaker.state is HALF_OPEN
    assert breaker.acquire().is_probe


def test_releasing_a_stale_probe_frees_no_current_slot(clock: FakeClock) -> None:
    """A probe left over from an earlier half-open period cannot make room for more probes."""
    breaker = _breaker(clock)
    _trip(breaker)
    clock.advance(10)
    failing, leftover = breaker.acquire(), breaker.acquire()
    breaker.record(failing, failed=True, duration_s=1.0)
    clock.advance(20)
    current = [breaker.acquire(), breaker.acquire()]
    breaker.release(leftover)
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    assert all(p.is_probe for p in current)


def test_release_of_a_closed_permit_counts_nothing(clock: FakeClock) -> None:
    """A call that ended without a verdict does not move the failure rate."""
    breaker = _breaker(clock)
    breaker.release(breaker.acquire())
    assert breaker.calls == 0


def test_a_late_closed_call_does_not_count_after_the_breaker_opened(
    clock: FakeClock,
) -> None:
    """A slow call that started before an outage was detected does not touch the new state."""
    breaker = _breaker(clock)
    old = breaker.acquire()
    _trip(breaker)
    breaker.record(old, failed=True, duration_s=60.0)
    clock.advance(10)
    breaker.record(breaker.acquire(), failed=False, duration_s=1.0)
    assert breaker.state is CLOSED
    breaker.record(old, failed=True, duration_s=60.0)
    assert breaker.calls == 0


def test_a_stale_probe_never_closes_an_open_breaker(clock: FakeClock) -> None:
    """A probe that outlived its half-open period cannot close a breaker that re-opened."""
    breaker = _breaker(clock)
    _trip(breaker)
    clock.advance(10)
    slow_probe, failing_probe = breaker.acquire(), breaker.acquire()
    breaker.record(failing_probe, failed=True, duration_s=1.0)
    assert breaker.state is OPEN
    breaker.record(slow_probe, failed=False, duration_s=1.0)
    breaker.release(slow_probe)
    assert breaker.state is OPEN
    assert breaker.open_s_current == 20


def test_permits_are_shared_within_a_state(clock: FakeClock) -> None:
    """A closed breaker hands out the same permit to every call: no allocation per call."""
    breaker = _breaker(clock)
    assert breaker.acquire() is breaker.acquire()
    assert isinstance(breaker.acquire(), Permit)


def test_status_fields_describe_the_breaker(clock: FakeClock) -> None:
    """The status page sees state, reason, timings and the window's rates."""
    breaker = _breaker(clock)
    assert (breaker.state, breaker.reason, breaker.calls) == (
        CLOSED,
        "no verdict yet",
        0,
    )
    assert breaker.since_wall == clock.wall()
    assert (breaker.failure_rate, breaker.slow_rate) == (0.0, 0.0)
    assert breaker.retry_at_wall is None
    clock.advance(3)
    _trip(breaker)
    assert breaker.since_wall == 1003 + WALL_OFFSET
    assert breaker.history[-1].to_state is OPEN


def test_history_keeps_the_last_ten_transitions(clock: FakeClock) -> None:
    """Only the most recent transitions are kept for the status page."""
    breaker = _breaker(clock)
    _trip(breaker)
    for _ in range(10):
        clock.advance(breaker.open_s_current)
        breaker.record(breaker.acquire(), failed=True, duration_s=1.0)
    assert len(breaker.history) == 10
    assert breaker.history[0].to_state is HALF_OPEN


def test_a_transition_encodes_for_other_replicas(clock: FakeClock) -> None:
    """A transition survives a JSON round trip with its states as plain strings."""
    breaker = _breaker(clock)
    _trip(breaker)
    encoded = msgspec.json.encode(breaker.history[-1])
    assert b'"to_state":"open"' in encoded
    assert msgspec.json.decode(encoded, type=Transition) == breaker.history[-1]


def test_force_open_adopts_another_replicas_trip_silently(clock: FakeClock) -> None:
    """A trip learned from another replica opens this breaker without echoing it."""
    recorder = Recorder()
    breaker = _breaker(clock, recorder)
    breaker.force(OPEN, until_wall=clock.wall() + 25, reason="replica b: failure rate")
    assert breaker.state is OPEN
    assert _retry_after(breaker) == 25
    assert breaker.open_s_current == 25
    assert breaker.history[-1].is_remote
    assert recorder.seen == []


def test_force_open_only_lengthens_an_open_period(clock: FakeClock) -> None:
    """A replica's shorter open period never cuts this breaker's short; a longer one extends it."""
    breaker = _breaker(clock)
    _trip(breaker)
    breaker.force(OPEN, until_wall=clock.wall() + 5, reason="shorter")
    assert _retry_after(breaker) == 10
    breaker.force(OPEN, until_wall=clock.wall() + 30, reason="longer")
    assert _retry_after(breaker) == 30
    assert breaker.retry_at_wall == clock.wall() + 30
    assert breaker.reason == "longer"


def test_force_open_without_an_end_uses_the_current_period(clock: FakeClock) -> None:
    """A remote trip without an end time opens for this breaker's own open period."""
    breaker = _breaker(clock)
    breaker.force(OPEN, until_wall=None, reason="replica says open")
    assert _retry_after(breaker) == 10


def test_force_can_notify_marked_as_remote(clock: FakeClock) -> None:
    """When asked, forced transitions reach the listener flagged as remote."""
    recorder = Recorder()
    breaker = _breaker(clock, recorder)
    breaker.force(OPEN, until_wall=clock.wall() + 10, reason="remote", notify=True)
    breaker.force(HALF_OPEN, until_wall=None, reason="remote probe", notify=True)
    breaker.force(CLOSED, until_wall=None, reason="remote close", notify=False)
    assert recorder.moves() == [(CLOSED, OPEN), (OPEN, HALF_OPEN)]
    assert all(t.is_remote for t in recorder.seen)
    assert breaker.state is CLOSED


def test_force_to_the_current_state_changes_nothing(clock: FakeClock) -> None:
    """Replaying a state this breaker is already in keeps its window and history."""
    breaker = _breaker(clock)
    _calls(breaker, "fail")
    breaker.force(CLOSED, until_wall=None, reason="remote close")
    assert breaker.calls == 1
    assert len(breaker.history) == 0


def test_a_forced_close_invalidates_outstanding_probes(clock: FakeClock) -> None:
    """Probes from before a remote close cannot re-open the breaker afterwards."""
    breaker = _breaker(clock)
    _trip(breaker)
    clock.advance(10)
    probe = breaker.acquire()
    breaker.force(CLOSED, until_wall=None, reason="replica b: probe succeeded")
    breaker.record(probe, failed=True, duration_s=1.0)
    assert breaker.state is CLOSED
    assert breaker.calls == 0


def test_max_open_below_open_s_is_treated_as_open_s(clock: FakeClock) -> None:
    """A max_open_s smaller than open_s never shortens the first open period."""
    breaker = _breaker(clock, open_s=10, max_open_s=5)
    _trip(breaker)
    clock.advance(10)
    breaker.record(breaker.acquire(), failed=True, duration_s=1.0)
    assert _retry_after(breaker) == 10
