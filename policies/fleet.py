"""Fleet-aware policies: the local ones, plus a view of what other replicas do.

With a shared store (``store.kind = "redis"``) the retry budget, the 429 pause
board and the tenant limiters still decide on the hot path from local memory
alone, exactly where the onion puts them. The only difference is a few numbers
a background task keeps up to date (the other replicas' requests, retries and
in-flight calls) and a listener told about each local pause so it can be
shared. Nothing here does I/O or awaits: the store's sync tasks feed and read
these objects beside the hot path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from policies.budget import RetryBudget
from policies.bulkhead import TenantLimiter
from policies.pause import PauseBoard

if TYPE_CHECKING:
    from collections.abc import Callable

    from policies.clock import Clock

#: Slack for float rounding in ``ratio * requests`` (as in ``RetryBudget``).
_EPSILON: Final = 1e-9
#: A pause must outlast the current one by more than this to be news.
_PAUSE_SLACK_S: Final = 0.001


class FleetRetryBudget(RetryBudget):
    """A retry budget over the whole fleet's requests and retries in the window.

    Local deposits and withdrawals are counted as usual; ``set_others`` adds
    what the other replicas did in the same window, so ``retries + 1 <= ratio
    * requests + floor`` holds for the fleet (the floor counts once, not once
    per replica), up to what the replicas do between two syncs.
    """

    __slots__ = ("_fleet_floor", "_fleet_ratio", "_others", "_unsent")

    def __init__(
        self, ratio: float, min_per_s: float, clock: Clock, window_s: float = 10.0
    ) -> None:
        """Create an empty budget (see ``RetryBudget``)."""
        super().__init__(ratio, min_per_s, clock, window_s)
        self._fleet_ratio = ratio
        self._fleet_floor = min_per_s * window_s
        #: Requests and retries of the other replicas in the window.
        self._others = (0, 0)
        #: Local requests and retries not yet handed to the store.
        self._unsent = [0, 0]

    def deposit(self) -> None:
        """Count one request, here and (at the next sync) for the fleet."""
        super().deposit()
        self._unsent[0] += 1

    def try_withdraw(self) -> bool:
        """Spend one retry if the fleet's budget allows it; return whether it did."""
        if self.available < 1.0 - _EPSILON:
            return False
        granted = super().try_withdraw()
        self._unsent[1] += granted
        return granted

    @property
    def available(self) -> float:
        """Retries the fleet's budget would grant right now (never negative)."""
        others_requests, others_retries = self._others
        requests = self.requests + others_requests
        retries = self.retries + others_retries
        return max(self._fleet_ratio * requests + self._fleet_floor - retries, 0.0)

    @property
    def others(self) -> tuple[int, int]:
        """The other replicas' (requests, retries) in the window, as last synced."""
        return self._others

    def set_others(self, requests: int, retries: int) -> None:
        """Adopt the other replicas' counts for the current window."""
        self._others = (max(requests, 0), max(retries, 0))

    def take_unsent(self) -> tuple[int, int]:
        """Return and forget the local (requests, retries) not yet shared."""
        unsent = self._unsent
        taken = (unsent[0], unsent[1])
        unsent[0] = unsent[1] = 0
        return taken


class FleetPauseBoard(PauseBoard):
    """A pause board that tells a listener about each local pause.

    Pauses learned from other replicas come in through ``adopt``, which never
    calls the listener, so a shared pause does not echo back and forth.
    """

    __slots__ = ("_wall_clock", "listener")

    def __init__(
        self, clock: Clock, on_pause: Callable[[str, float, str], None]
    ) -> None:
        """Create an empty board whose local pauses go to ``on_pause``."""
        super().__init__(clock)
        self._wall_clock = clock
        #: Told about each local pause: ``(deployment, until_wall, reason)``.
        self.listener = on_pause

    def pause(self, deployment: str, seconds: float, reason: str) -> None:
        """Pause ``deployment`` (see ``PauseBoard.pause``) and share a new pause.

        When an existing longer pause is kept, there is nothing new to share.
        """
        before = self.paused_for(deployment)
        super().pause(deployment, seconds, reason)
        if seconds > before + _PAUSE_SLACK_S:
            # This pause is the one that holds now: it ends ``seconds`` from now.
            self.listener(deployment, self._wall_clock.wall() + seconds, reason)

    def adopt(self, deployment: str, until_wall: float, reason: str) -> None:
        """Apply a pause another replica set; an existing longer pause is kept."""
        self.pause_local(deployment, until_wall - self._wall_clock.wall(), reason)

    def pause_local(self, deployment: str, seconds: float, reason: str) -> None:
        """Pause ``deployment`` here only, without telling the listener."""
        super().pause(deployment, seconds, reason)


class FleetTenantLimiter(TenantLimiter):
    """A tenant's share that also counts the calls other replicas have in flight."""

    __slots__ = ("_limit", "others")

    def __init__(self, max_concurrent: int | None) -> None:
        """Create the limiter (None: no limit) with no calls elsewhere yet."""
        super().__init__(max_concurrent)
        self._limit = max_concurrent
        #: Calls in flight for this tenant on the other replicas, as last synced.
        self.others = 0

    def try_acquire(self) -> bool:
        """Take a slot if the fleet has one free; return whether it did."""
        limit = self._limit
        if limit is not None and self.in_use + self.others >= limit:
            return False
        return super().try_acquire()

    @property
    def limit(self) -> int | None:
        """The tenant's fleet-wide limit (None: unlimited)."""
        return self._limit
