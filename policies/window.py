"""Rolling counts over a sliding time window, shared by the breaker and the budget.

The breaker (per deployment) counts calls, failures and slow calls over
``window_s``; the retry budget (per provider) counts requests and retries over
10 s. Both need the same O(1) structure: a ring of time buckets whose running
totals are kept, so recording an event or reading the totals never scans
history.
"""

from __future__ import annotations

from typing import Final

#: Buckets per window: old events leave the window 1/10 of a window at a time.
BUCKETS: Final = 10


class RollingCounts:
    """Counters of ``width`` kinds of event over the last ``window_s`` seconds.

    The window is bucket-aligned: at time ``now`` it holds the events of the
    current bucket and of the ``buckets - 1`` before it, so an event leaves it
    between ``window_s - window_s / buckets`` and ``window_s`` after it happened.
    """

    __slots__ = ("_bucket_s", "_buckets", "_idx", "_n", "totals")

    def __init__(
        self, window_s: float, width: int, now: float, buckets: int = BUCKETS
    ) -> None:
        """Create empty counters.

        Args:
            window_s: The window's length in seconds.
            width: How many kinds of event are counted.
            now: Current monotonic time.
            buckets: How many time buckets the window is split into.
        """
        self._n = buckets
        self._bucket_s = window_s / buckets
        self._buckets = [[0] * width for _ in range(buckets)]
        self._idx = int(now // self._bucket_s)
        #: Totals over the window as of the last ``roll``/``add``; read, never write.
        self.totals = [0] * width

    def roll(self, now: float) -> None:
        """Forget the buckets that have left the window at ``now``."""
        idx = int(now // self._bucket_s)
        gap = idx - self._idx
        if gap <= 0:
            return
        self._idx = idx
        if gap >= self._n:
            self.clear()
            return
        # At most ``buckets - 1`` steps, whatever the time since the last event.
        for i in range(idx - gap + 1, idx + 1):
            self._empty(self._buckets[i % self._n])

    def add(self, now: float, counts: tuple[int, ...]) -> None:
        """Roll to ``now``, then add ``counts`` (one number per kind of event)."""
        self.roll(now)
        bucket = self._buckets[self._idx % self._n]
        totals = self.totals
        for i, count in enumerate(counts):
            bucket[i] += count
            totals[i] += count

    def clear(self) -> None:
        """Forget every event."""
        for bucket in self._buckets:
            bucket[:] = [0] * len(bucket)
        self.totals[:] = [0] * len(self.totals)

    def _empty(self, bucket: list[int]) -> None:
        totals = self.totals
        for i, count in enumerate(bucket):
            totals[i] -= count
            bucket[i] = 0
