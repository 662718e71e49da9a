"""The retry budget caps retries at a share of requests plus a small floor."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.budget import RetryBudget
from policies.window import BUCKETS
from tests.fakes.clock import FakeClock


def test_a_quiet_provider_may_still_retry_up_to_the_floor(clock: FakeClock) -> None:
    """Without traffic, min_per_s × window retries are allowed and no more."""
    budget = RetryBudget(ratio=0.2, min_per_s=0.5, clock=clock, window_s=10)
    assert budget.available == 5
    assert [budget.try_withdraw() for _ in range(6)] == [True] * 5 + [False]
    assert budget.retries == 5
    assert budget.available == 0


def test_retries_grow_with_traffic_by_the_ratio(clock: FakeClock) -> None:
    """Every request adds ratio retries: 10 requests at 20% allow 2 retries."""
    budget = RetryBudget(ratio=0.2, min_per_s=0, clock=clock)
    for _ in range(10):
        budget.deposit()
    assert budget.requests == 10
    assert budget.available == 2
    assert [budget.try_withdraw() for _ in range(3)] == [True, True, False]


def test_a_fraction_of_a_retry_is_not_a_retry(clock: FakeClock) -> None:
    """Three requests at 20% earn 0.6 of a retry, which is not enough to retry."""
    budget = RetryBudget(ratio=0.2, min_per_s=0, clock=clock)
    for _ in range(3):
        budget.deposit()
    assert budget.available == pytest.approx(0.6)
    assert not budget.try_withdraw()


def test_the_window_slides(clock: FakeClock) -> None:
    """Retries spent more than a window ago are forgotten, bucket by bucket."""
    budget = RetryBudget(ratio=0, min_per_s=0.2, clock=clock, window_s=10)
    assert budget.try_withdraw()
    assert budget.try_withdraw()
    assert not budget.try_withdraw()
    clock.advance(5)
    assert not budget.try_withdraw()
    clock.advance(5)
    assert budget.try_withdraw()
    clock.advance(1000)
    assert budget.available == 2


def test_requests_older_than_the_window_stop_earning_retries(clock: FakeClock) -> None:
    """A burst of traffic long ago does not fund retries today."""
    budget = RetryBudget(ratio=1, min_per_s=0, clock=clock, window_s=10)
    for _ in range(5):
        budget.deposit()
    clock.advance(9.5)
    assert budget.available == 5
    clock.advance(1)
    assert budget.requests == 0
    assert not budget.try_withdraw()


_OPS = st.lists(
    st.one_of(
        st.just("deposit"),
        st.just("retry"),
        st.floats(min_value=0, max_value=4, allow_nan=False),
    ),
    max_size=300,
)


@settings(derandomize=True, database=None, deadline=None, max_examples=300)
@given(
    ops=_OPS,
    ratio=st.sampled_from([0.0, 0.1, 0.2, 0.5, 1.0, 3.0]),
    min_per_s=st.sampled_from([0.0, 0.1, 0.5, 2.0]),
    window_s=st.sampled_from([1.0, 10.0, 7.3]),
)
def test_retries_never_exceed_ratio_times_requests_plus_floor(
    ops: list[str | float], ratio: float, min_per_s: float, window_s: float
) -> None:
    """Whatever the traffic, retries granted in a window ≤ ratio × requests + floor."""
    clock = FakeClock(start=0)
    budget = RetryBudget(ratio, min_per_s, clock, window_s)
    bucket_s = window_s / BUCKETS
    events: list[tuple[float, str]] = []
    for op in ops:
        if isinstance(op, float):
            clock.advance(op)
        elif op == "deposit":
            budget.deposit()
            events.append((clock.now, op))
        elif budget.try_withdraw():
            events.append((clock.now, op))
            # Reference model: a naive scan of the same bucket-aligned window.
            oldest = int(clock.now // bucket_s) - BUCKETS + 1
            recent = [kind for at, kind in events if int(at // bucket_s) >= oldest]
            retries, requests = recent.count("retry"), recent.count("deposit")
            assert retries <= ratio * requests + min_per_s * window_s + 1e-9
            assert budget.retries == retries
            assert budget.requests == requests
