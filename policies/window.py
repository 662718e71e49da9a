"""Rolling counts over a sliding time window, shared by the breaker and the budget.

The breaker (per deployment) counts calls, failures and slow calls over
``window_s``; the retry budget (per provider) counts requests and retries over
10 s. Both need the same O(1) structure on the hot path: a ring of time
buckets with a running total, so recording an event or reading the total never
scans history.

To keep a record down to two integer additions, the counts of one event are
packed into a single int, ``FIELD_BITS`` bits per kind of event (``pack``);
``count`` reads one kind back out.
"""

from __future__ import annotations

from typing import Final

#: Buckets per window: old events leave the window 1/10 of a window at a time.
BUCKETS: Final = 10
#: Bits per packed counter: up to 4 billion events of a kind per window.
FIELD_BITS: Final = 32
MASK: Final = (1 << FIELD_BITS) - 1


def pack(*counts: int) -> int:
    """Return ``counts`` (kind 0 first) packed into one int, for ``add``."""
    packed = 0
    for i, n in enumerate(counts):
        packed |= n << (i * FIELD_BITS)
    return packed


def count(packed: int, kind: int) -> int:
    """Return the count of ``kind`` in a packed total."""
    return (packed >> (kind * FIELD_BITS)) & MASK


class RollingCounts:
    """Packed event counts over the last ``window_s`` seconds.

    The window is bucket-aligned: at time ``now`` it holds the events of the
    current bucket and of the ``buckets - 1`` before it, so an event leaves it
    between ``window_s - window_s / buckets`` and ``window_s`` after it happened.
    """

    __slots__ = ("_bucket_s", "_buckets", "_idx", "_n", "_slot", "total")

    def __init__(self, window_s: float, now: float, buckets: int = BUCKETS) -> None:
        """Create empty counts.

        Args:
            window_s: The window's length in seconds.
            now: Current monotonic time.
            buckets: How many time buckets the window is split into.
        """
        self._n = buckets
        self._bucket_s = window_s / buckets
        self._buckets = [0] * buckets
        # The current bucket's number (a whole float: now // bucket_s) and slot.
        self._idx = now // self._bucket_s
        self._slot = int(self._idx) % buckets
        #: The packed total over the window as of the last ``roll``/``add``.
        self.total = 0

    def roll(self, now: float) -> None:
        """Forget the buckets that have left the window at ``now``."""
        idx = now // self._bucket_s
        gap = int(idx - self._idx)
        if gap <= 0:
            return
        self._idx = idx
        buckets, n = self._buckets, self._n
        if gap >= n:
            self.clear()
        else:
            # At most ``buckets - 1`` steps, whatever the time since the last event.
            for step in range(1, gap + 1):
                slot = (self._slot + step) % n
                self.total -= buckets[slot]
                buckets[slot] = 0
        self._slot = int(idx) % n

    def add(self, now: float, packed: int) -> None:
        """Roll to ``now``, then add one event's ``packed`` counts (see ``pack``)."""
        if now // self._bucket_s != self._idx:
            self.roll(now)
        self._buckets[self._slot] += packed
        self.total += packed

    def clear(self) -> None:
        """Forget every event."""
        self._buckets[:] = [0] * self._n
        self.total = 0
