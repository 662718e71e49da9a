"""Fleet-aware policies decide locally from their own counts plus the fleet's view."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from policies.breaker import Breaker, BreakerState
from policies.bulkhead import Bulkhead
from policies.config import BreakerConfig, BulkheadConfig, RetryConfig, TimeoutsConfig
from policies.deadline import Deadline
from policies.fleet import FleetPauseBoard, FleetRetryBudget, FleetTenantLimiter
from policies.pause import PauseBoard
from policies.pipeline import Deployment, ProviderResources, Trail, run_deployment
from policies.store import LocalStore
from providers.errors import CircuitOpenError
from providers.types import ChatResponse
from tests.fakes.clock import WALL_OFFSET, FakeClock


def test_the_fleet_budget_counts_the_others_and_the_floor_once(
    clock: FakeClock,
) -> None:
    """Others' requests add to the budget, their retries take from it, one floor in all."""
    budget = FleetRetryBudget(ratio=0.5, min_per_s=0.1, clock=clock)
    assert budget.available == pytest.approx(1.0)
    budget.set_others(10, 0)
    assert budget.available == pytest.approx(6.0)
    budget.set_others(10, 6)
    assert not budget.try_withdraw()
    budget.set_others(-3, -1)  # a count that went backwards reads as nothing
    assert budget.others == (0, 0)


def test_the_fleet_budget_hands_over_what_it_has_not_shared_yet(
    clock: FakeClock,
) -> None:
    """Deposits and granted retries are handed to the store once each."""
    budget = FleetRetryBudget(ratio=0.5, min_per_s=0.0, clock=clock)
    for _ in range(4):
        budget.deposit()
    assert budget.try_withdraw()
    assert budget.try_withdraw()
    assert not budget.try_withdraw()
    assert budget.take_unsent() == (4, 2)
    assert budget.take_unsent() == (0, 0)


def test_a_local_pause_is_shared_and_an_adopted_one_is_not(clock: FakeClock) -> None:
    """The listener hears of new local pauses only: not kept ones, not adopted ones."""
    heard: list[tuple[str, float, str]] = []
    board = FleetPauseBoard(clock, lambda *pause: heard.append(pause))
    board.pause("p/m", 5.0, "429, Retry-After 5s")
    assert heard == [("p/m", clock.wall() + 5.0, "429, Retry-After 5s")]
    board.pause("p/m", 1.0, "shorter")
    board.pause("p/m", 0.0, "nothing")
    board.adopt("p/n", clock.wall() + 8.0, "from elsewhere")
    assert len(heard) == 1
    assert board.paused_for("p/n") == pytest.approx(8.0)
    board.listener = lambda *pause: heard.append(pause)
    board.pause("p/m", 9.0, "longer")
    assert heard[-1][2] == "longer"


def test_a_tenant_share_counts_calls_on_other_replicas() -> None:
    """Calls in flight elsewhere take from the same share; no limit stays no limit."""
    limiter = FleetTenantLimiter(3)
    limiter.others = 2
    assert limiter.try_acquire()
    assert not limiter.try_acquire()
    limiter.others = 0
    assert limiter.try_acquire()
    assert limiter.limit == 3
    unlimited = FleetTenantLimiter(None)
    unlimited.others = 1000
    assert unlimited.try_acquire()


def test_the_local_store_makes_plain_objects(clock: FakeClock) -> None:
    """The embedded store hands out the in-process policies and no probe gate."""
    store = LocalStore()
    assert store.probe_gate is None
    assert type(store.pause_board(clock)) is PauseBoard
    assert store.retry_budget("p", RetryConfig(), clock).available == pytest.approx(20)


class _Provider:
    name = "p"
    supports_prefill = False


class _Gate:
    """A probe gate that answers from a script: True, False, or an exception."""

    def __init__(self, answer: bool | BaseException) -> None:
        self.answer = answer
        self.asked: list[str] = []

    async def claim_probe(self, deployment: str, lease_s: float) -> bool:
        self.asked.append(deployment)
        assert lease_s == TimeoutsConfig().attempt_s
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


def _half_open(clock: FakeClock, gate: _Gate) -> Deployment:
    config = BreakerConfig(min_calls=1, failure_rate=0.5, open_s=1.0)
    breaker = Breaker("p/m", config, clock)
    breaker.force(BreakerState.OPEN, until_wall=clock.now + WALL_OFFSET, reason="t")
    resources = ProviderResources(
        bulkhead=Bulkhead("p", BulkheadConfig(max_concurrent=1), clock),
        budget=FleetRetryBudget(0.2, 2.0, clock),
        retry=RetryConfig(attempts=1),
        timeouts=TimeoutsConfig(),
    )
    provider: Any = _Provider()
    return Deployment(
        provider=provider,
        model="m",
        breaker=breaker,
        resources=resources,
        pauses=PauseBoard(clock),
        clock=clock,
        probes=gate,
    )


async def _ok() -> ChatResponse:
    return ChatResponse(body=b"{}", model="m")


@pytest.mark.anyio
async def test_a_probe_the_fleet_refuses_is_not_sent(clock: FakeClock) -> None:
    """Refused by the gate, the probe gives back its slots and reads as an open circuit."""
    dep = _half_open(clock, _Gate(answer=False))
    trail: Trail = {}
    with pytest.raises(CircuitOpenError, match="another replica"):
        await run_deployment(dep, _ok, deadline=Deadline(clock, 10), trail=trail)
    assert trail == {"p/m": ["open"]}
    assert dep.bulkhead.in_use == 0
    assert dep.breaker.probes_out == 0


@pytest.mark.anyio
async def test_a_probe_the_fleet_grants_goes_out_and_decides(clock: FakeClock) -> None:
    """Granted, the probe is sent and its success closes the breaker; closed calls skip the gate."""
    gate = _Gate(answer=True)
    dep = _half_open(clock, gate)
    await run_deployment(dep, _ok, deadline=Deadline(clock, 10), trail={})
    assert dep.breaker.state is BreakerState.CLOSED
    await run_deployment(dep, _ok, deadline=Deadline(clock, 10), trail={})
    assert gate.asked == ["p/m"]


@pytest.mark.anyio
async def test_a_probe_cancelled_while_claiming_leaks_nothing(clock: FakeClock) -> None:
    """A cancellation during the claim gives back the bulkhead slot and the probe."""
    dep = _half_open(clock, _Gate(answer=asyncio.CancelledError()))
    with pytest.raises(asyncio.CancelledError):
        await run_deployment(dep, _ok, deadline=Deadline(clock, 10), trail={})
    assert dep.bulkhead.in_use == 0
    assert dep.breaker.probes_out == 0
