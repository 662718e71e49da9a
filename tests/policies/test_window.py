"""The rolling window forgets old events a bucket at a time."""

from __future__ import annotations

from policies.window import RollingCounts, count, pack


def _counts(window: RollingCounts, width: int) -> list[int]:
    return [count(window.total, kind) for kind in range(width)]


def test_packed_counts_round_trip() -> None:
    """Counts packed into one number read back unchanged, kind by kind."""
    packed = pack(3, 0, 2**32 - 1, 7)
    assert [count(packed, kind) for kind in range(4)] == [3, 0, 2**32 - 1, 7]
    assert count(pack(1, 1) * 1000, 1) == 1000


def test_events_leave_the_window_bucket_by_bucket() -> None:
    """An event counts until its bucket falls out of the window, then vanishes."""
    window = RollingCounts(window_s=10, now=0.0)
    window.add(0.5, pack(1, 0))
    window.add(3.5, pack(1, 1))
    assert _counts(window, 2) == [2, 1]
    window.roll(10.2)
    assert _counts(window, 2) == [1, 1]
    window.roll(13.9)
    assert _counts(window, 2) == [0, 0]


def test_time_standing_still_keeps_everything() -> None:
    """Rolling to the same or an earlier instant forgets nothing."""
    window = RollingCounts(window_s=10, now=5.0)
    window.add(5.0, pack(3))
    window.roll(5.0)
    window.roll(4.0)
    window.add(4.0, pack(1))
    assert window.total == 4


def test_a_long_silence_clears_the_window() -> None:
    """After more than a whole window with no events, every count is zero."""
    window = RollingCounts(window_s=1, now=0.0)
    window.add(0.0, pack(1, 1, 1))
    window.add(0.95, pack(1, 0, 0))
    window.add(500.0, pack(0, 0, 1))
    assert _counts(window, 3) == [0, 0, 1]


def test_the_window_wraps_around_its_ring() -> None:
    """Many windows' worth of steady traffic leaves exactly one window counted."""
    window = RollingCounts(window_s=1, now=0.0)
    for step in range(1000):
        window.add(step * 0.05, pack(1))
    assert window.total == 19
