"""The rolling window forgets old events a bucket at a time."""

from __future__ import annotations

from policies.window import RollingCounts


def test_events_leave_the_window_bucket_by_bucket() -> None:
    """An event counts until its bucket falls out of the window, then vanishes."""
    counts = RollingCounts(window_s=10, width=2, now=0.0)
    counts.add(0.5, (1, 0))
    counts.add(3.5, (1, 1))
    assert counts.totals == [2, 1]
    counts.roll(10.2)
    assert counts.totals == [1, 1]
    counts.roll(13.9)
    assert counts.totals == [0, 0]


def test_time_standing_still_keeps_everything() -> None:
    """Rolling to the same or an earlier instant forgets nothing."""
    counts = RollingCounts(window_s=10, width=1, now=5.0)
    counts.add(5.0, (3,))
    counts.roll(5.0)
    counts.roll(4.0)
    assert counts.totals == [3]


def test_a_long_silence_clears_the_window() -> None:
    """After more than a whole window with no events, every count is zero."""
    counts = RollingCounts(window_s=1, width=3, now=0.0)
    counts.add(0.0, (1, 1, 1))
    counts.add(0.95, (1, 0, 0))
    counts.add(500.0, (0, 0, 1))
    assert counts.totals == [0, 0, 1]
