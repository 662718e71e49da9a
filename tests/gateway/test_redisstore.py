"""Two ``RedisStore`` replicas in one process: what one learns, the other adopts."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, NamedTuple

import pytest
import redis

from gateway.config import StoreConfig
from gateway.redisops import FleetEvent, Keys, encode_event
from gateway.redisstore import RedisStore
from policies.breaker import Breaker, BreakerState
from policies.clock import SystemClock
from policies.config import BreakerConfig, RetryConfig
from tests.redisserver import free_port

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from policies.fleet import FleetPauseBoard, FleetRetryBudget, FleetTenantLimiter

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

BREAKER = BreakerConfig(min_calls=2, failure_rate=0.5, open_s=0.2, half_open_probes=2)
DEP = "p/m"
wall = SystemClock().wall


class Replica(NamedTuple):
    """One store with the objects a runtime would attach to it."""

    store: RedisStore
    breaker: Breaker
    pauses: FleetPauseBoard
    budget: FleetRetryBudget
    limiter: FleetTenantLimiter


def replica(config: StoreConfig) -> Replica:
    """Build a store and attach a breaker, a pause board, a budget and a limiter."""
    clock = SystemClock()
    store = RedisStore(config, clock)
    breaker = Breaker(DEP, BREAKER, clock, store.on_transition)
    pauses = store.pause_board(clock)
    budget = store.retry_budget("p", RetryConfig(budget_ratio=0.5), clock)
    limiter = store.tenant_limiter("t", 3)
    store.attach(
        breakers={DEP: (breaker, BREAKER)},
        budgets={"p": budget},
        pauses=pauses,
        limiters={"t": limiter},
    )
    return Replica(store, breaker, pauses, budget, limiter)


async def eventually(condition: Callable[[], bool], timeout_s: float = 2.0) -> None:
    """Wait (polling every 10 ms, at most ``timeout_s``) until ``condition`` holds."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.fixture
def config(redis_url: str, redis_prefix: str) -> StoreConfig:
    """Return a Redis store config under this test's own key prefix."""
    return StoreConfig(kind="redis", url=redis_url, prefix=redis_prefix)


@contextlib.asynccontextmanager
async def fleet(config: StoreConfig, n: int = 2) -> AsyncIterator[list[Replica]]:
    """Start ``n`` replicas on ``config`` and wait until each hears the fleet."""
    replicas = [replica(config) for _ in range(n)]
    for r in replicas:
        await r.store.start()
    try:
        await eventually(lambda: all(r.store.healthy for r in replicas))
        yield replicas
    finally:
        for r in replicas:
            await r.store.aclose()


def trip(breaker: Breaker) -> None:
    """Record enough failures to open ``breaker``."""
    for _ in range(BREAKER.min_calls):
        breaker.record(breaker.acquire(), failed=True, duration_s=0.01)


async def test_a_trip_opens_the_other_breaker_until_the_same_time(
    config: StoreConfig,
) -> None:
    """B's breaker opens within a second of A's, with A's open-until and reason."""
    async with fleet(config) as (a, b):
        trip(a.breaker)
        await eventually(lambda: b.breaker.state is BreakerState.OPEN, 1.0)
        assert b.breaker.retry_at_wall == pytest.approx(
            a.breaker.retry_at_wall, abs=0.01
        )
        assert "failure rate" in b.breaker.reason
        assert b.breaker.history[-1].is_remote


async def test_a_successful_probe_closes_the_breaker_everywhere(
    config: StoreConfig,
) -> None:
    """A probe that succeeds on A closes B's breaker too."""
    async with fleet(config) as (a, b):
        trip(a.breaker)
        await eventually(lambda: b.breaker.state is BreakerState.OPEN, 1.0)
        await asyncio.sleep(BREAKER.open_s + 0.05)
        permit = a.breaker.acquire()
        assert await a.store.claim_probe(DEP, 5.0)
        a.breaker.record(permit, failed=False, duration_s=0.01)
        await eventually(lambda: b.breaker.state is BreakerState.CLOSED, 1.0)


async def test_the_fleet_grants_half_open_probes_per_open_period(
    config: StoreConfig,
) -> None:
    """Two probe slots per open period for the whole fleet; a new period brings new ones."""
    async with fleet(config) as (a, b):
        trip(a.breaker)
        await eventually(lambda: b.breaker.state is BreakerState.OPEN, 1.0)
        await asyncio.sleep(BREAKER.open_s + 0.05)
        claims = [await r.store.claim_probe(DEP, 5.0) for r in (a, b, a)]
        assert claims == [True, True, False]
        assert not await b.store.claim_probe(DEP, 5.0)  # held off without asking Redis
        a.breaker.acquire()
        a.breaker.record(a.breaker.acquire(), failed=True, duration_s=0.01)  # re-open
        ends = a.breaker.retry_at_wall
        assert ends is not None
        await eventually(lambda: b.breaker.retry_at_wall == pytest.approx(ends), 1.0)
        await asyncio.sleep(ends - wall() + 0.05)
        assert await a.store.claim_probe(DEP, 5.0)


async def test_a_replica_still_in_the_fleets_open_period_stays_open(
    config: StoreConfig,
) -> None:
    """A local breaker whose period ended early adopts the fleet's longer one instead of probing."""
    async with fleet(config, 1) as (a,):
        key = Keys(config.prefix).breaker(DEP)
        client = redis.Redis.from_url(config.url or "", socket_timeout=1)
        trip(a.breaker)
        await eventually(lambda: client.get(key) is not None, 1.0)
        until = wall() + 5
        record = FleetEvent(
            origin="elsewhere",
            kind="breaker",
            deployment=DEP,
            state="open",
            until_wall=until,
            at_wall=wall(),
            reason="another replica re-opened it",
        )
        client.set(key, encode_event(record))
        client.close()
        await asyncio.sleep(BREAKER.open_s + 0.05)
        assert a.breaker.acquire().is_probe
        assert not await a.store.claim_probe(DEP, 5.0)
        assert a.breaker.state is BreakerState.OPEN
        assert a.breaker.retry_at_wall == pytest.approx(until, abs=0.01)


async def test_a_pause_reaches_the_other_replica_and_the_longer_one_wins(
    config: StoreConfig,
) -> None:
    """A's 429 pause holds on B; a later, shorter pause does not shorten it."""
    async with fleet(config) as (a, b):
        a.pauses.pause(DEP, 10.0, "429, Retry-After 10s")
        await eventually(lambda: b.pauses.paused_for(DEP) > 9.0, 1.0)
        b.pauses.pause(DEP, 2.0, "429, Retry-After 2s")
        await asyncio.sleep(0.3)
        assert a.pauses.paused_for(DEP) > 9.0
        assert "Retry-After 10s" in a.pauses.snapshot()[DEP].reason


async def test_each_replica_sees_the_others_requests_and_retries(
    config: StoreConfig,
) -> None:
    """Requests deposited on A raise B's budget; A's retries lower it."""
    async with fleet(config) as (a, b):
        floor = b.budget.available
        for _ in range(10):
            a.budget.deposit()
        assert a.budget.try_withdraw()
        await eventually(lambda: b.budget.others == (10, 1), 1.0)
        assert b.budget.available == pytest.approx(floor + 0.5 * 10 - 1)
        assert a.budget.others == (0, 0)


async def test_tenant_slots_are_shared_and_a_lost_replicas_slots_expire(
    config: StoreConfig,
) -> None:
    """A's calls in flight count on B; a replica that stopped syncing counts no more."""
    async with fleet(config) as (a, b):
        key = Keys(config.prefix).tenant("t")
        client = redis.Redis.from_url(config.url or "", socket_timeout=1)
        expired_ms = int((wall() - 1) * 1000)
        client.hset(key, "crashed-replica", f"3:{expired_ms}")
        assert a.limiter.try_acquire()
        assert a.limiter.try_acquire()
        await eventually(lambda: b.limiter.others == 2, 1.0)
        assert b.limiter.try_acquire()
        assert not b.limiter.try_acquire()
        assert not client.hexists(key, "crashed-replica")
        client.close()


async def test_malformed_and_stale_events_are_ignored(config: StoreConfig) -> None:
    """Junk on the channel and an event older than B's own state change nothing."""
    async with fleet(config) as (a, b):
        trip(b.breaker)
        b.breaker.force(BreakerState.CLOSED, until_wall=None, reason="test")
        stale = FleetEvent(
            origin=a.store.replica,
            kind="breaker",
            deployment=DEP,
            state="open",
            until_wall=wall() + 30,
            at_wall=b.breaker.since_wall - 1,
            reason="old news",
        )
        client = redis.Redis.from_url(config.url or "", socket_timeout=1)
        channel = Keys(config.prefix).channel
        client.publish(channel, b"not json")
        client.publish(channel, encode_event(stale))
        client.close()
        await asyncio.sleep(0.2)
        assert b.breaker.state is BreakerState.CLOSED
        assert b.store.healthy


async def test_without_redis_every_decision_stays_local() -> None:
    """With nothing listening on the port, the store is unhealthy and never blocks."""
    config = StoreConfig(kind="redis", url=f"redis://127.0.0.1:{free_port()}/0")
    r = replica(config)
    await r.store.start()
    try:
        await eventually(
            lambda: r.store.link.reason is not None and "failed" in r.store.link.reason
        )
        trip(r.breaker)
        r.pauses.pause(DEP, 1.0, "429")
        started = time.monotonic()
        assert await r.store.claim_probe(DEP, 5.0)
        assert time.monotonic() - started < 0.3
        assert not r.store.healthy
        snapshot = r.store.snapshot()
        assert snapshot["kind"] == "redis"
        assert snapshot["healthy"] is False
        assert "redis" in snapshot["reason"]
    finally:
        await r.store.aclose()


async def test_a_probe_that_ends_without_a_verdict_gives_its_slot_back(
    config: StoreConfig,
) -> None:
    """A's probe released without a verdict (a hang-up, a 429) frees its fleet slot."""
    async with fleet(config, 3) as (a, b, c):
        trip(a.breaker)
        await eventually(lambda: b.breaker.state is BreakerState.OPEN, 1.0)
        await asyncio.sleep(BREAKER.open_s + 0.05)
        permits = [a.breaker.acquire(), a.breaker.acquire()]
        assert [await a.store.claim_probe(DEP, 30.0) for _ in permits] == [True, True]
        assert not await b.store.claim_probe(DEP, 30.0)
        a.breaker.release(permits[0])
        await asyncio.sleep(0.4)  # the sync task gives the slot back within 0.25 s
        assert await c.store.claim_probe(DEP, 30.0)
        assert not await c.store.claim_probe(DEP, 30.0)


async def test_a_resync_republishes_a_close_the_fleet_never_heard(
    config: StoreConfig,
) -> None:
    """A breaker that closed while Redis was away tells the fleet on the next re-sync."""
    async with fleet(config, 1) as (a,):
        key = Keys(config.prefix).breaker(DEP)
        client = redis.Redis.from_url(config.url or "", socket_timeout=1)
        trip(a.breaker)
        await eventually(lambda: client.get(key) is not None, 1.0)
        # Closed without telling anyone, as if the CLOSED event had been lost.
        a.breaker.force(BreakerState.CLOSED, until_wall=None, reason="probe succeeded")
        await a.store._sync.resync()
        await eventually(lambda: b'"state":"closed"' in (client.get(key) or b""), 1.0)
        client.close()


async def test_a_half_open_replica_adopts_a_re_open_it_heard_of_late(
    config: StoreConfig,
) -> None:
    """B went half-open just after A's probe failed: A's longer re-open still wins on B."""
    async with fleet(config) as (a, b):
        trip(a.breaker)
        await eventually(lambda: b.breaker.state is BreakerState.OPEN, 1.0)
        await asyncio.sleep(BREAKER.open_s + 0.05)
        a.breaker.record(a.breaker.acquire(), failed=True, duration_s=0.01)  # re-open
        b.breaker.acquire()  # B's own period ran out: half-open, after A's re-open
        assert b.breaker.state is BreakerState.HALF_OPEN
        await eventually(lambda: b.breaker.state is BreakerState.OPEN, 1.0)
        assert b.breaker.retry_at_wall == pytest.approx(a.breaker.retry_at_wall)
