"""Full-jitter backoff stays within its cap, whatever the retry number."""

from __future__ import annotations

import random
import statistics

from hypothesis import given, settings
from hypothesis import strategies as st

from policies.backoff import full_jitter

_DETERMINISTIC = settings(derandomize=True, database=None, deadline=None)


@_DETERMINISTIC
@given(
    retry_n=st.integers(min_value=0, max_value=5000),
    base_s=st.floats(min_value=1e-3, max_value=10),
    max_s=st.floats(min_value=1e-3, max_value=600),
    rnd=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_backoff_stays_between_zero_and_its_cap(
    retry_n: int, base_s: float, max_s: float, rnd: float
) -> None:
    """A retry never sleeps less than 0 or more than min(max_s, base_s·2^n)."""
    sleep = full_jitter(retry_n, base_s, max_s, rnd)
    cap = max_s if retry_n > 64 else min(max_s, base_s * 2**retry_n)
    assert 0 <= sleep <= cap


def test_backoff_doubles_until_the_cap() -> None:
    """The upper bound doubles with each retry and then stays at max_s."""
    bounds = [full_jitter(n, 0.25, 8.0, 1.0) for n in range(8)]
    assert bounds == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_backoff_survives_huge_retry_numbers() -> None:
    """A retry number far past float range sleeps at most max_s instead of raising."""
    assert full_jitter(10**6, 0.25, 8.0, 0.5) == 4.0
    assert full_jitter(1100, 1e-300, 8.0, 1.0) == 8.0


def test_backoff_spreads_sleeps_over_the_whole_interval() -> None:
    """Seeded draws fill [0, cap] evenly: the mean is near half the cap."""
    rng = random.Random(42)
    sleeps = [full_jitter(3, 0.25, 8.0, rng.random()) for _ in range(10_000)]
    assert min(sleeps) < 0.05
    assert max(sleeps) > 1.95
    assert abs(statistics.fmean(sleeps) - 1.0) < 0.03
