"""Model-checking the breaker: random call sequences never break its promises."""

from __future__ import annotations

from typing import NamedTuple

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from policies.breaker import Breaker, BreakerState, Permit, Transition
from policies.config import BreakerConfig
from policies.window import BUCKETS
from providers.errors import CircuitOpenError
from tests.fakes.clock import FakeClock

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
SLOW_S = 30.0
#: Durations around ``slow_s``: exactly ``slow_s`` is not slow yet.
_DURATIONS = st.sampled_from([0.0, 1.0, SLOW_S, SLOW_S + 0.001, 120.0])
#: Ticks biased towards short steps, so windows fill up before they roll.
_TICKS = st.one_of(
    st.sampled_from([0.0, 0.1, 0.5, 1.0, 2.0, 5.0]),
    st.floats(min_value=0, max_value=60),
)

_CONFIGS = st.builds(
    BreakerConfig,
    window_s=st.sampled_from([5.0, 10.0, 30.0]),
    min_calls=st.integers(min_value=1, max_value=6),
    failure_rate=st.sampled_from([0.3, 0.5, 0.7, 1.0]),
    slow_s=st.just(SLOW_S),
    slow_rate=st.sampled_from([0.5, 0.8, 1.0]),
    open_s=st.sampled_from([1.0, 5.0, 10.0]),
    max_open_s=st.sampled_from([4.0, 20.0, 300.0]),
    half_open_probes=st.integers(min_value=1, max_value=3),
)


class Held(NamedTuple):
    """A permit the model holds, with the generation it was granted in."""

    permit: Permit
    generation: int


class BreakerMachine(RuleBasedStateMachine):
    """Drives a breaker with ticks, calls and held probes against a simple model."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(start=0.0)
        self.seen: list[Transition] = []
        self.breaker: Breaker
        self.config: BreakerConfig
        self.held: list[Held] = []
        # Model: closed-state outcomes since the last close, and the open period.
        self.outcomes: list[tuple[float, bool, bool]] = []
        self.open_until = 0.0
        self.open_s = 0.0
        self.probes_out = 0

    @initialize(config=_CONFIGS)
    def start(self, config: BreakerConfig) -> None:
        self.config = config
        self.open_s = config.open_s
        self.breaker = Breaker("p/m", config, self.clock, self.seen.append)

    @property
    def generation(self) -> int:
        return len(self.seen)

    @rule(dt=_TICKS)
    def tick(self, dt: float) -> None:
        self.clock.advance(dt)

    @rule(failed=st.booleans(), duration_s=_DURATIONS)
    def call(self, failed: bool, duration_s: float) -> None:
        held = self._acquire()
        if held is not None:
            self._record(held, failed=failed, duration_s=duration_s)

    @rule(n=st.integers(min_value=1, max_value=4))
    def probe(self, n: int) -> None:
        for _ in range(n):
            held = self._acquire()
            if held is not None:
                self.held.append(held)

    @precondition(lambda self: self.held)
    @rule(i=st.integers(min_value=0), failed=st.booleans(), duration_s=_DURATIONS)
    def finish(self, i: int, failed: bool, duration_s: float) -> None:
        held = self.held.pop(i % len(self.held))
        self._record(held, failed=failed, duration_s=duration_s)

    @precondition(lambda self: self.held)
    @rule(i=st.integers(min_value=0))
    def abandon(self, i: int) -> None:
        held = self.held.pop(i % len(self.held))
        before = (self.generation, self.breaker.calls)
        self.breaker.release(held.permit)
        assert (self.generation, self.breaker.calls) == before
        if held.permit.is_probe and held.generation == self.generation:
            self.probes_out -= 1

    @invariant()
    def half_open_never_has_too_many_probes_out(self) -> None:
        assert self.probes_out <= self.config.half_open_probes
        if self.breaker.state is not HALF_OPEN:
            assert self.probes_out == 0

    @invariant()
    def open_period_stays_within_bounds(self) -> None:
        ceiling = max(self.config.max_open_s, self.config.open_s)
        assert self.config.open_s <= self.breaker.open_s_current <= ceiling
        assert (self.breaker.retry_at_wall is None) == (self.breaker.state is not OPEN)

    def _acquire(self) -> Held | None:
        state, now = self.breaker.state, self.clock.now
        try:
            permit = self.breaker.acquire()
        except CircuitOpenError as exc:
            self._check_refusal(state, exc)
            return None
        # OPEN rejects until its period has passed; then it probes.
        assert state is not OPEN or now >= self.open_until
        self._follow(expected_moves=1 if state is OPEN else 0)
        if self.breaker.state is HALF_OPEN:
            assert permit.is_probe
            self.probes_out += 1
        return Held(permit, self.generation)

    def _check_refusal(self, state: BreakerState, exc: CircuitOpenError) -> None:
        now = self.clock.now
        if state is OPEN and now < self.open_until:
            assert exc.retry_after_s == pytest.approx(max(self.open_until - now, 0.05))
            self._follow(expected_moves=0)
            return
        assert state is not CLOSED
        self._follow(expected_moves=1 if state is OPEN else 0)
        assert self.breaker.state is HALF_OPEN
        assert self.probes_out == self.config.half_open_probes

    def _record(self, held: Held, *, failed: bool, duration_s: float) -> None:
        before_calls = self.breaker.calls
        is_stale = held.generation != self.generation
        slow = duration_s > SLOW_S
        self.breaker.record(held.permit, failed=failed, duration_s=duration_s)
        if is_stale:
            # A stale permit changes nothing, and never closes an open breaker.
            assert self.breaker.calls == before_calls
            self._follow(expected_moves=0)
        elif held.permit.is_probe:
            self.probes_out -= 1
            self._follow(expected_moves=1)
            assert self.breaker.state is (OPEN if failed or slow else CLOSED)
        else:
            self.outcomes.append((self.clock.now, failed, slow))
            self._follow(expected_moves=1 if self._window_trips() else 0)

    def _window_trips(self) -> bool:
        """Whether the model's window holds enough bad calls to open."""
        bucket_s = self.config.window_s / BUCKETS
        oldest = int(self.clock.now // bucket_s) - BUCKETS + 1
        recent = [o for o in self.outcomes if int(o[0] // bucket_s) >= oldest]
        calls = len(recent)
        failures = sum(1 for o in recent if o[1])
        slow = sum(1 for o in recent if o[2])
        assert self.breaker.calls == calls
        return calls >= self.config.min_calls and (
            failures / calls >= self.config.failure_rate
            or slow / calls >= self.config.slow_rate
        )

    def _follow(self, *, expected_moves: int) -> None:
        """Check the transitions since the last step and update the model."""
        new = self.seen[len(self.seen) - expected_moves :] if expected_moves else []
        assert len(self.breaker.history) == min(len(self.seen), 10)
        assert self.breaker.history[-1] is self.seen[-1] if self.seen else True
        for transition in new:
            self._apply(transition)
        assert self.breaker.state is (self.seen[-1].to_state if self.seen else CLOSED)

    def _apply(self, transition: Transition) -> None:
        assert transition.reason
        assert not transition.is_remote
        if transition.to_state is OPEN:
            ceiling = max(self.config.max_open_s, self.config.open_s)
            expected = (
                min(self.open_s * 2, ceiling)
                if transition.from_state is HALF_OPEN
                else self.config.open_s
            )
            assert self.breaker.open_s_current == expected
            assert transition.retry_at_wall is not None
            assert transition.retry_at_wall - transition.at_wall == pytest.approx(
                expected
            )
            self.open_s = expected
            self.open_until = self.clock.now + expected
        elif transition.to_state is CLOSED:
            assert transition.from_state is HALF_OPEN
            self.outcomes.clear()
            self.open_s = self.config.open_s
        else:
            assert transition.from_state is OPEN
        self.probes_out = 0


BreakerMachine.TestCase.settings = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=100,
    stateful_step_count=50,
)
TestBreakerModel = BreakerMachine.TestCase
TestBreakerModel.__doc__ = (
    "Under any sequence of calls, ticks and probes the breaker keeps its invariants."
)
