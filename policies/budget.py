"""The retry budget: retries may add only a bounded share to a provider's traffic.

It sits in the retry layer (outside the breaker), one per provider and
process: every request deposits, every retry withdraws, and when the budget is
empty the retry layer raises ``RetryBudgetError`` and fallback moves on. This
stops retries from multiplying the load on a provider that is already failing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from policies.window import RollingCounts, count, pack

if TYPE_CHECKING:
    from policies.clock import Clock

_REQUESTS: Final = 0
_RETRIES: Final = 1
_REQUEST: Final = pack(1, 0)
_RETRY: Final = pack(0, 1)
#: Slack for float rounding in ``ratio * requests`` (0.1 * 3 > 0.3).
_EPSILON: Final = 1e-9


class RetryBudget:
    """A Finagle-style budget over a sliding window (10 time buckets).

    A retry is granted while, in the window, ``retries + 1 <= ratio * requests
    + min_per_s * window_s``: so the retries granted in any window never exceed
    ``ratio`` times the requests in it plus the floor, which lets a quiet
    provider still retry a little.
    """

    __slots__ = ("_clock", "_counts", "_floor", "_ratio")

    def __init__(
        self, ratio: float, min_per_s: float, clock: Clock, window_s: float = 10.0
    ) -> None:
        """Create an empty budget.

        Args:
            ratio: Retries allowed per request (0.2 = retries add at most 20%).
            min_per_s: Retries per second allowed even without traffic.
            clock: The injected clock.
            window_s: The sliding window's length.
        """
        self._ratio = ratio
        self._floor = min_per_s * window_s
        self._clock = clock
        self._counts = RollingCounts(window_s, clock.monotonic())

    def deposit(self) -> None:
        """Count one request (call once per request, not per retry)."""
        self._counts.add(self._clock.monotonic(), _REQUEST)

    def try_withdraw(self) -> bool:
        """Spend one retry if the budget allows it; return whether it did."""
        if self.available < 1.0 - _EPSILON:
            return False
        self._counts.add(self._clock.monotonic(), _RETRY)
        return True

    @property
    def available(self) -> float:
        """Retries the budget would grant right now (fractional, never negative)."""
        total = self._total()
        requests, retries = count(total, _REQUESTS), count(total, _RETRIES)
        return max(self._ratio * requests + self._floor - retries, 0.0)

    @property
    def requests(self) -> int:
        """Requests deposited in the current window."""
        return count(self._total(), _REQUESTS)

    @property
    def retries(self) -> int:
        """Retries granted in the current window."""
        return count(self._total(), _RETRIES)

    def _total(self) -> int:
        self._counts.roll(self._clock.monotonic())
        return self._counts.total
