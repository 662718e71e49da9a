"""Bulkheads: a provider's in-flight limit with a short FIFO queue, and tenant shares.

The provider ``Bulkhead`` sits inside the breaker and outside the attempt
timeouts, so an open circuit never takes a slot and no slot is held while a
retry backs off. A full bulkhead raises ``BulkheadFullError``: fallback moves
to the next rung at once and the breaker does not count it. The
``TenantLimiter`` is the outer, non-blocking share per tenant (full → 429).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Final

from providers.errors import BulkheadFullError

if TYPE_CHECKING:
    from policies.clock import Clock
    from policies.config import BulkheadConfig

#: The Retry-After a full bulkhead suggests: slots turn over quickly.
_FULL_RETRY_AFTER_S: Final = 1.0


class Bulkhead:
    """At most ``max_concurrent`` calls in flight, ``max_waiting`` queued FIFO.

    A caller that finds a free slot and an empty queue takes it without
    awaiting anything. Otherwise it queues for at most ``min(wait_s,
    timeout_s)``; a released slot goes straight to the oldest waiter, so
    waking callers never race for it.
    """

    __slots__ = (
        "_clock",
        "_in_use",
        "_max",
        "_max_waiting",
        "_rejected",
        "_wait_s",
        "_waiters",
        "name",
    )

    def __init__(self, name: str, config: BulkheadConfig, clock: Clock) -> None:
        """Create an empty bulkhead.

        Args:
            name: The provider it guards, for messages.
            config: Its limits.
            clock: The injected clock (queue waits sleep on it).
        """
        self.name = name
        self._max = config.max_concurrent
        self._max_waiting = config.max_waiting
        self._wait_s = config.wait_s
        self._clock = clock
        self._in_use = 0
        self._rejected = 0
        # True: the slot was handed over; False: the wait timed out.
        self._waiters: deque[asyncio.Future[bool]] = deque()

    async def acquire(self, timeout_s: float) -> None:
        """Take a slot, waiting in line for at most ``min(wait_s, timeout_s)``.

        Args:
            timeout_s: The caller's own bound (e.g. the request's time left).

        Raises:
            BulkheadFullError: The queue is full, waiting is off, or no slot
                came free in time.
        """
        if self._in_use < self._max and not self._waiters:
            self._in_use += 1
            return
        wait_s = min(self._wait_s, timeout_s)
        if wait_s <= 0:
            raise self._full("every slot is busy and there is no time to wait")
        if len(self._waiters) >= self._max_waiting:
            raise self._full("every slot is busy and the queue is full")
        await self._wait(wait_s)

    def release(self) -> None:
        """Give a slot back: to the oldest waiter if any, else to the pool.

        Raises:
            RuntimeError: More releases than acquisitions (a caller's bug).
        """
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            # A waiter cancelled a moment ago may still be queued: skip it.
            if not waiter.done():
                waiter.set_result(True)
                return
        if self._in_use <= 0:
            raise RuntimeError(f"bulkhead {self.name}: release without acquire")
        self._in_use -= 1

    @property
    def in_use(self) -> int:
        """Slots held right now (including ones handed to a waiter)."""
        return self._in_use

    @property
    def waiting(self) -> int:
        """Callers queued for a slot."""
        return len(self._waiters)

    @property
    def rejected(self) -> int:
        """Callers refused so far (queue full, waiting off, or timed out)."""
        return self._rejected

    @property
    def max_concurrent(self) -> int:
        """The in-flight limit."""
        return self._max

    async def _wait(self, wait_s: float) -> None:
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        timer = asyncio.get_running_loop().create_task(self._expire(waiter, wait_s))
        try:
            got_slot = await waiter
        except asyncio.CancelledError:
            self._abandon(waiter)
            raise
        finally:
            timer.cancel()
        if not got_slot:
            raise self._full(f"no slot came free within {wait_s:.3g}s")

    async def _expire(self, waiter: asyncio.Future[bool], wait_s: float) -> None:
        await self._clock.sleep(wait_s)
        if not waiter.done():
            self._waiters.remove(waiter)
            waiter.set_result(False)

    def _abandon(self, waiter: asyncio.Future[bool]) -> None:
        """Clean up after a waiting caller was cancelled."""
        if waiter.cancelled():
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        elif waiter.result():
            # The slot arrived just as the caller gave up: pass it on.
            self.release()

    def _full(self, why: str) -> BulkheadFullError:
        self._rejected += 1
        return BulkheadFullError(
            f"bulkhead {self.name} full: {why} "
            f"({self._max} max, {len(self._waiters)} queued)",
            retry_after_s=_FULL_RETRY_AFTER_S,
        )


class TenantLimiter:
    """A tenant's concurrency share: non-blocking, ``None`` means unlimited."""

    __slots__ = ("_in_use", "_max")

    def __init__(self, max_concurrent: int | None) -> None:
        """Create the limiter with ``max_concurrent`` slots (None: no limit)."""
        self._max = max_concurrent
        self._in_use = 0

    def try_acquire(self) -> bool:
        """Take a slot if one is free; return whether it did."""
        if self._max is not None and self._in_use >= self._max:
            return False
        self._in_use += 1
        return True

    def release(self) -> None:
        """Give a slot back.

        Raises:
            RuntimeError: More releases than acquisitions (a caller's bug).
        """
        if self._in_use <= 0:
            raise RuntimeError("tenant limiter: release without acquire")
        self._in_use -= 1

    @property
    def in_use(self) -> int:
        """Slots held right now."""
        return self._in_use
