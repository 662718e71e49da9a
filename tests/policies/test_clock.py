"""The real clock and the fake one honour the same contract."""

from __future__ import annotations

import pytest

from policies.clock import Clock, SystemClock
from tests.fakes.clock import WALL_OFFSET, FakeClock


def test_system_clock_is_monotonic_and_reports_unix_time() -> None:
    """The real clock never runs backwards and its wall time is a present-day date."""
    clock: Clock = SystemClock()
    first = clock.monotonic()
    assert clock.monotonic() >= first
    assert clock.wall() > 1_700_000_000


def test_system_clock_jitter_is_reproducible_with_a_seed() -> None:
    """Two real clocks seeded alike draw the same jitter, always within [0, 1)."""
    one, two = SystemClock(seed=7), SystemClock(seed=7)
    draws = [one.random() for _ in range(50)]
    assert draws == [two.random() for _ in range(50)]
    assert all(0 <= d < 1 for d in draws)


@pytest.mark.anyio
async def test_system_clock_sleeps_on_the_event_loop() -> None:
    """A zero-second sleep on the real clock returns without blocking."""
    await SystemClock().sleep(0)


@pytest.mark.anyio
async def test_fake_clock_sleep_jumps_time_forward() -> None:
    """Sleeping on the fake clock moves its time by exactly the amount slept."""
    clock = FakeClock(start=5.0)
    await clock.sleep(2.5)
    await clock.sleep(-1)
    assert clock.monotonic() == 7.5
    assert clock.wall() == 7.5 + WALL_OFFSET
    assert clock.slept == [2.5, -1]


def test_fake_clock_never_runs_backwards() -> None:
    """A test cannot move the fake clock back in time by mistake."""
    clock = FakeClock()
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-0.1)


def test_fake_clock_random_is_seeded() -> None:
    """Two fake clocks with the same seed draw the same numbers."""
    one, two = FakeClock(seed=3), FakeClock(seed=3)
    assert [one.random() for _ in range(3)] == [two.random() for _ in range(3)]
