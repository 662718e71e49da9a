"""Provider bulkheads and tenant limiters: bounded concurrency, bounded queues."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from policies.bulkhead import Bulkhead, TenantLimiter
from policies.clock import SystemClock
from policies.config import BulkheadConfig
from providers.errors import BulkheadFullError

if TYPE_CHECKING:
    from tests.fakes.clock import FakeClock

pytestmark = pytest.mark.anyio


def _bulkhead(
    clock: FakeClock, *, slots: int = 1, waiting: int = 10, wait_s: float = 0.5
) -> Bulkhead:
    config = BulkheadConfig(max_concurrent=slots, max_waiting=waiting, wait_s=wait_s)
    return Bulkhead("openai", config, clock)


async def _queued(bulkhead: Bulkhead, count: int) -> None:
    """Yield until ``count`` callers are queued."""
    while bulkhead.waiting < count:
        await asyncio.sleep(0)


async def test_a_free_slot_is_taken_without_waiting(clock: FakeClock) -> None:
    """With a free slot and nobody queued, acquiring never suspends the caller."""
    bulkhead = _bulkhead(clock, slots=2)
    coro = bulkhead.acquire(1.0)
    with pytest.raises(StopIteration):
        coro.send(None)
    assert bulkhead.in_use == 1
    assert bulkhead.max_concurrent == 2
    assert clock.slept == []


async def test_released_slots_go_to_waiters_in_arrival_order(clock: FakeClock) -> None:
    """Queued callers get freed slots first come, first served."""
    bulkhead = _bulkhead(clock)
    await bulkhead.acquire(1.0)
    served: list[str] = []

    async def caller(name: str) -> None:
        await bulkhead.acquire(10.0)
        served.append(name)

    tasks = [asyncio.create_task(caller(name)) for name in "abc"]
    await _queued(bulkhead, 3)
    for _ in range(3):
        bulkhead.release()
    await asyncio.gather(*tasks)
    assert served == ["a", "b", "c"]
    assert (bulkhead.in_use, bulkhead.waiting, bulkhead.rejected) == (1, 0, 0)


async def test_a_full_queue_refuses_at_once(clock: FakeClock) -> None:
    """Once max_waiting callers are queued, the next one is refused without waiting."""
    bulkhead = _bulkhead(clock, waiting=1)
    await bulkhead.acquire(1.0)
    first = asyncio.create_task(bulkhead.acquire(10.0))
    await _queued(bulkhead, 1)
    with pytest.raises(BulkheadFullError, match="queue is full") as info:
        await bulkhead.acquire(10.0)
    assert info.value.retry_after_s > 0
    assert bulkhead.rejected == 1
    bulkhead.release()
    await first


@pytest.mark.parametrize(("wait_s", "timeout_s"), [(0.0, 10.0), (0.5, 0.0)])
async def test_no_time_to_wait_means_refused_at_once(
    clock: FakeClock, wait_s: float, timeout_s: float
) -> None:
    """With wait_s = 0 or no time left, a busy bulkhead refuses without queueing."""
    bulkhead = _bulkhead(clock, wait_s=wait_s)
    await bulkhead.acquire(1.0)
    with pytest.raises(BulkheadFullError, match="no time to wait"):
        await bulkhead.acquire(timeout_s)
    assert (bulkhead.waiting, bulkhead.rejected, clock.slept) == (0, 1, [])


@pytest.mark.parametrize(("timeout_s", "waited"), [(10.0, 0.5), (0.2, 0.2)])
async def test_a_wait_times_out_on_the_clock(
    clock: FakeClock, timeout_s: float, waited: float
) -> None:
    """A queued caller gives up after min(wait_s, its own time left) and leaves the queue."""
    bulkhead = _bulkhead(clock, wait_s=0.5)
    await bulkhead.acquire(1.0)
    with pytest.raises(BulkheadFullError, match="no slot came free"):
        await bulkhead.acquire(timeout_s)
    assert clock.slept == [waited]
    assert (bulkhead.in_use, bulkhead.waiting, bulkhead.rejected) == (1, 0, 1)


async def test_a_cancelled_waiter_leaves_no_trace(clock: FakeClock) -> None:
    """A caller cancelled while queued frees its queue place and takes no slot."""
    bulkhead = _bulkhead(clock)
    await bulkhead.acquire(1.0)
    waiter = asyncio.create_task(bulkhead.acquire(10.0))
    await _queued(bulkhead, 1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert bulkhead.waiting == 0
    bulkhead.release()
    assert bulkhead.in_use == 0


async def test_a_waiter_cancelled_after_its_timer_ran_leaves_no_trace(
    clock: FakeClock,
) -> None:
    """A caller cancelled once its wait already ran out neither leaks nor gets a slot."""
    bulkhead = _bulkhead(clock)
    await bulkhead.acquire(1.0)
    waiter = asyncio.create_task(bulkhead.acquire(10.0))
    await _queued(bulkhead, 1)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert (bulkhead.in_use, bulkhead.waiting) == (1, 0)


async def test_a_release_skips_a_waiter_cancelled_a_moment_ago(
    clock: FakeClock,
) -> None:
    """A slot freed right after a queued caller was cancelled goes back to the pool."""
    bulkhead = _bulkhead(clock)
    await bulkhead.acquire(1.0)
    waiter = asyncio.create_task(bulkhead.acquire(10.0))
    await _queued(bulkhead, 1)
    waiter.cancel()
    bulkhead.release()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert (bulkhead.in_use, bulkhead.waiting) == (0, 0)


async def test_a_timed_out_waiter_cancelled_before_waking_takes_nothing(
    clock: FakeClock,
) -> None:
    """A caller whose wait ran out and who is then cancelled leaves the slot alone."""
    bulkhead = _bulkhead(clock)
    await bulkhead.acquire(1.0)
    waiter = asyncio.create_task(bulkhead.acquire(10.0))
    await _queued(bulkhead, 1)
    while bulkhead.waiting:
        await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert (bulkhead.in_use, bulkhead.waiting) == (1, 0)


async def test_a_slot_handed_to_a_cancelled_waiter_is_passed_on(
    clock: FakeClock,
) -> None:
    """If a slot reaches a caller just as it is cancelled, the next caller gets it."""
    bulkhead = _bulkhead(clock)
    await bulkhead.acquire(1.0)
    first = asyncio.create_task(bulkhead.acquire(10.0))
    second = asyncio.create_task(bulkhead.acquire(10.0))
    await _queued(bulkhead, 2)
    bulkhead.release()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await second
    assert (bulkhead.in_use, bulkhead.waiting, bulkhead.rejected) == (1, 0, 0)


async def test_a_served_waiter_leaves_no_timer_behind() -> None:
    """Once a queued caller gets its slot, its wait timer is gone at once."""
    config = BulkheadConfig(max_concurrent=1, max_waiting=1, wait_s=60)
    bulkhead = Bulkhead("openai", config, SystemClock())
    tasks_before = asyncio.all_tasks()
    await bulkhead.acquire(1.0)
    waiter = asyncio.create_task(bulkhead.acquire(60.0))
    await _queued(bulkhead, 1)
    bulkhead.release()
    await waiter
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == tasks_before


async def test_releasing_more_than_acquired_is_a_bug(clock: FakeClock) -> None:
    """A double release is reported instead of silently growing the bulkhead."""
    bulkhead = _bulkhead(clock)
    with pytest.raises(RuntimeError, match="release without acquire"):
        bulkhead.release()


def test_a_tenant_limiter_refuses_beyond_its_share() -> None:
    """A tenant at max_concurrent is refused until one of its calls ends."""
    limiter = TenantLimiter(2)
    assert [limiter.try_acquire() for _ in range(3)] == [True, True, False]
    limiter.release()
    assert limiter.try_acquire()
    assert limiter.in_use == 2


def test_an_unlimited_tenant_is_only_counted() -> None:
    """A tenant without max_concurrent is never refused but still shows its load."""
    limiter = TenantLimiter(None)
    assert all(limiter.try_acquire() for _ in range(1000))
    assert limiter.in_use == 1000
    for _ in range(1000):
        limiter.release()
    with pytest.raises(RuntimeError, match="release without acquire"):
        limiter.release()
