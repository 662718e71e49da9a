"""The store seam: one behavioural suite, run against the local and the Redis backend.

Whatever the backend, one replica's policy objects behave exactly like the
plain in-process ones, the store says what it is and whether it is healthy,
and sharing never raises into the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import pytest

from gateway.config import StoreConfig
from gateway.store import build_store
from policies.breaker import Breaker, BreakerState
from policies.clock import SystemClock
from policies.config import BreakerConfig, RetryConfig
from providers.errors import CircuitOpenError, DeploymentPausedError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from policies.store import Store

pytestmark = pytest.mark.anyio

BREAKER = BreakerConfig(min_calls=2, failure_rate=0.5, open_s=0.2, half_open_probes=1)


@pytest.fixture(params=["local", pytest.param("redis", marks=pytest.mark.redis)])
def store_kind(request: pytest.FixtureRequest) -> str:
    """Run the test once per backend."""
    kind: str = request.param
    return kind


@pytest.fixture
def config(store_kind: str, redis_url: str, redis_prefix: str) -> StoreConfig:
    """Return a store config of the backend under test (its own Redis key prefix)."""
    if store_kind == "redis":
        return StoreConfig(kind="redis", url=redis_url, prefix=redis_prefix)
    return StoreConfig(kind="local")


async def eventually(condition: Callable[[], bool], timeout_s: float = 2.0) -> None:
    """Wait (polling every 10 ms, at most ``timeout_s``) until ``condition`` holds."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def started(
    store: Store, breakers: dict[str, Breaker] | None = None
) -> AsyncIterator[Store]:
    """Attach a pause board, ``breakers`` and nothing else; start; close at the end."""
    clock = SystemClock()
    store.attach(
        breakers={name: (b, BREAKER) for name, b in (breakers or {}).items()},
        budgets={},
        pauses=store.pause_board(clock),
        limiters={},
    )
    await store.start()
    try:
        yield store
    finally:
        await store.aclose()


async def test_a_started_store_says_what_it_is_and_that_it_is_healthy(
    config: StoreConfig,
) -> None:
    """The snapshot names the backend, and a reachable store reports healthy."""
    store = build_store(config, SystemClock())
    async with started(store):
        await eventually(lambda: store.healthy)
        snapshot = store.snapshot()
        assert snapshot["kind"] == config.kind == store.kind
        assert snapshot["healthy"] is True


async def test_its_retry_budget_grants_the_floor_then_the_ratio(
    config: StoreConfig,
) -> None:
    """Alone, a store's budget allows min_per_s × 10 s retries, then ratio × requests."""
    clock = SystemClock()
    store = build_store(config, clock)
    budget = store.retry_budget(
        "p", RetryConfig(budget_ratio=0.5, budget_min_per_s=0.1), clock
    )
    store.attach(
        breakers={}, budgets={"p": budget}, pauses=store.pause_board(clock), limiters={}
    )
    await store.start()
    try:
        assert [budget.try_withdraw() for _ in range(2)] == [True, False]
        budget.deposit()
        budget.deposit()
        assert budget.try_withdraw()
        assert not budget.try_withdraw()
        assert budget.requests == 2
        assert budget.retries == 2
    finally:
        await store.aclose()


async def test_its_pause_board_skips_a_paused_deployment(config: StoreConfig) -> None:
    """A pause holds for its time, names its reason and keeps the longer of two."""
    clock = SystemClock()
    store = build_store(config, clock)
    async with started(store):
        board = store.pause_board(clock)
        board.pause("p/m", 5.0, "429, Retry-After 5s")
        board.pause("p/m", 1.0, "a shorter one")
        assert 4.5 < board.paused_for("p/m") <= 5.0
        with pytest.raises(DeploymentPausedError, match="Retry-After 5s"):
            board.check("p/m")
        assert board.paused_for("p/other") == 0


async def test_its_tenant_limiter_caps_concurrency(config: StoreConfig) -> None:
    """A share of two admits two calls, refuses a third, and admits again after a release."""
    store = build_store(config, SystemClock())
    limiter = store.tenant_limiter("t", 2)
    unlimited = store.tenant_limiter("u", None)
    async with started(store):
        assert [limiter.try_acquire() for _ in range(3)] == [True, True, False]
        limiter.release()
        assert limiter.try_acquire()
        assert all(unlimited.try_acquire() for _ in range(100))


async def test_one_replica_lets_out_one_probe_per_open_period(
    config: StoreConfig,
) -> None:
    """Alone, a replica probes a half-open deployment once, whatever the backend."""
    clock = SystemClock()
    store = build_store(config, clock)
    breaker = Breaker("p/m", BREAKER, clock, store.on_transition)
    async with started(store, {"p/m": breaker}):
        await eventually(lambda: store.healthy)
        for _ in range(2):
            breaker.record(breaker.acquire(), failed=True, duration_s=0.01)
        assert breaker.state is BreakerState.OPEN
        await asyncio.sleep(0.25)  # the open period (0.2 s) ends
        permit = breaker.acquire()
        assert permit.is_probe
        gate = store.probe_gate
        assert gate is None or await gate.claim_probe("p/m", 5.0)
        with pytest.raises(CircuitOpenError):
            breaker.acquire()
        breaker.record(permit, failed=False, duration_s=0.01)
        assert breaker.state.value == "closed"


async def test_sharing_never_raises_before_start_or_after_close(
    config: StoreConfig,
) -> None:
    """Transitions and pauses reported to a stopped store are accepted quietly."""
    clock = SystemClock()
    store = build_store(config, clock)
    breaker = Breaker("p/m", BREAKER, clock, store.on_transition)
    board = store.pause_board(clock)
    for _ in range(2):
        breaker.record(breaker.acquire(), failed=True, duration_s=0.01)
    board.pause("p/m", 1.0, "429")
    async with started(store, {"p/m": breaker}):
        pass
    await store.aclose()
    breaker.force(BreakerState.CLOSED, until_wall=None, reason="test", notify=True)
    board.pause("p/m", 2.0, "429 again")
    assert breaker.state is BreakerState.CLOSED
