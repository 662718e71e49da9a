"""Replicas on one Redis act as one gateway: breakers, probes, pauses, budgets, tenants.

Each test runs two or three in-thread gateways (real sockets on loopback) with
``store.kind = "redis"`` and a key prefix of its own, against one fake upstream.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

import httpx
import pytest

from gateway.server import CONFIG_ENV
from policies.breaker import BreakerState
from tests.fleet import breaker, burst, fleet_config, post, replicas
from tests.harness import OTHER_KEY
from tests.redisserver import wait_until

pytestmark = pytest.mark.redis


if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from gateway.fakeupstream import FakeUpstream
    from tests.harness import GatewayThread

BREAKER = """
[providers.fake.retry]
attempts = 1

[providers.fake.breaker]
min_calls = 3
failure_rate = 0.5
open_s = 1
max_open_s = 8
half_open_probes = 1

[models.chat]
chain = ["fake/gpt-a", "fake2/gpt-b"]
"""


@pytest.fixture
def breaker_fleet(
    upstream: FakeUpstream, redis_url: str, redis_prefix: str
) -> Iterator[list[GatewayThread]]:
    """Serve two replicas whose primary trips after 3 failures, open for 1 s."""
    with replicas(fleet_config(upstream, redis_url, redis_prefix, BREAKER), 2) as gws:
        yield gws


def open_period_over(gw: GatewayThread) -> bool:
    """Tell whether ``gw``'s open primary breaker has reached its probe time."""
    retry_at = breaker(gw).retry_at_wall
    return retry_at is not None and gw.runtime.clock.wall() >= retry_at + 0.02


def test_an_outage_seen_by_one_replica_opens_the_breaker_in_the_other(
    breaker_fleet: list[GatewayThread], upstream: FakeUpstream
) -> None:
    """B skips the failing deployment without ever calling it, because A saw it fail."""
    a, b = breaker_fleet
    upstream.set_mode("gpt-a", "503")
    for _ in range(3):
        assert post(a).headers["x-fusebox-served-by"] == "fake2/gpt-b"
    assert breaker(a).state is BreakerState.OPEN
    wait_until(
        lambda: breaker(b).state is BreakerState.OPEN, 1.0, "B's breaker opening"
    )
    for _ in range(5):
        resp = post(b)
        assert resp.headers["x-fusebox-attempts"] == "fake/gpt-a=open; fake2/gpt-b=200"
    assert upstream.count("gpt-a") == 3
    assert breaker(b).history[-1].is_remote
    assert breaker(b).retry_at_wall == pytest.approx(breaker(a).retry_at_wall, abs=0.01)


def test_the_fleet_sends_one_probe_per_open_period_then_closes_everywhere(
    breaker_fleet: list[GatewayThread], upstream: FakeUpstream
) -> None:
    """After each open period, concurrent traffic on both replicas sends one probe in all."""
    a, b = breaker_fleet
    upstream.set_mode("gpt-a", "503")
    for _ in range(3):
        post(a)
    wait_until(
        lambda: breaker(b).state is BreakerState.OPEN, 1.0, "B's breaker opening"
    )
    before = upstream.count("gpt-a")
    wait_until(lambda: open_period_over(a), 3.0, "the open period ending")
    answers = asyncio.run(burst([a, b], 6))
    assert all(r.status_code == 200 for r in answers)
    assert upstream.count("gpt-a") == before + 1  # one failed probe: re-open everywhere

    # A slow success: the rest of the burst arrives while the one probe is out.
    upstream.set_mode("gpt-a", "delay800")
    wait_until(
        lambda: open_period_over(a) and open_period_over(b), 5.0, "the re-open ending"
    )
    answers = asyncio.run(burst([a, b], 6))
    assert all(r.status_code == 200 for r in answers)
    assert upstream.count("gpt-a") == before + 2  # one probe, which succeeded
    wait_until(
        lambda: breaker(a).state is breaker(b).state is BreakerState.CLOSED,
        1.0,
        "both breakers closing",
    )
    assert post(b).headers["x-fusebox-attempts"] == "fake/gpt-a=200"


def test_a_429_pause_set_through_one_replica_is_honoured_by_the_other(
    breaker_fleet: list[GatewayThread], upstream: FakeUpstream
) -> None:
    """A 429 with Retry-After seen by A pauses the deployment on B too, until the same time."""
    a, b = breaker_fleet
    upstream.set_mode("gpt-a", "429ra5")
    first = post(a)
    assert first.headers["x-fusebox-attempts"] == "fake/gpt-a=429; fake2/gpt-b=200"
    wait_until(
        lambda: b.runtime.pauses.until_wall("fake/gpt-a") is not None,
        1.0,
        "B learning the pause",
    )
    resp = post(b)
    assert resp.headers["x-fusebox-attempts"] == "fake/gpt-a=paused; fake2/gpt-b=200"
    assert upstream.count("gpt-a") == 1
    ends_a = a.runtime.pauses.until_wall("fake/gpt-a")
    assert b.runtime.pauses.until_wall("fake/gpt-a") == pytest.approx(ends_a, abs=0.05)
    assert breaker(b).state is BreakerState.CLOSED  # a 429 is not a failure


def wait_fleet_requests(gw: GatewayThread, n: int) -> None:
    """Wait until ``gw``'s budget for ``fake`` counts ``n`` requests in the fleet."""
    budget = gw.runtime.resources["fake"].budget
    wait_until(
        lambda: budget.requests + budget.others[0] == n, 2.0, "the counts syncing"
    )


STORM = """
[providers.fake.retry]
attempts = 3
budget_ratio = 0.25
budget_min_per_s = 0.1

[providers.fake.breaker]
min_calls = 1000

[models.chat]
chain = ["fake/gpt-a", "fake2/gpt-b"]
"""


def test_the_retry_budget_holds_for_the_fleet_under_a_storm(
    upstream: FakeUpstream, redis_url: str, redis_prefix: str
) -> None:
    """Three replicas in a 503 storm retry 0.25 × the fleet's requests + one floor in all."""
    upstream.set_mode("gpt-a", "503")
    text = fleet_config(upstream, redis_url, redis_prefix, STORM)
    with replicas(text, 3) as fleet:
        for i, gw in enumerate(fleet):
            for _ in range(4):
                assert post(gw).headers["x-fusebox-served-by"] == "fake2/gpt-b"
            for other in fleet:
                wait_fleet_requests(other, 4 * (i + 1))
    retries = upstream.count("gpt-a") - 12
    # ratio × 12 requests + the floor (0.1/s × 10 s) counted once for the fleet.
    assert retries == 4  # each replica alone would have allowed 2 (6 in all)


TENANTS = """
[models.chat]
chain = ["fake/gpt-slow~delay1500"]
"""


def test_a_tenants_concurrency_limit_holds_across_replicas(
    upstream: FakeUpstream, redis_url: str, redis_prefix: str
) -> None:
    """Two calls in flight on A use globex's two slots: B refuses a third with 429."""
    text = fleet_config(
        upstream, redis_url, redis_prefix, TENANTS, globex="max_concurrent = 2"
    )
    with replicas(text, 2) as (a, b):
        held = [threading.Thread(target=post, args=(a, OTHER_KEY)) for _ in range(2)]
        for thread in held:
            thread.start()
        limiter = b.runtime.limiters["globex"]
        wait_until(lambda: limiter.others == 2, 1.0, "B seeing A's calls")
        refused = post(b, OTHER_KEY)
        assert refused.status_code == 429
        assert "too many requests in flight" in refused.json()["error"]["message"]
        for thread in held:
            thread.join(5)
        wait_until(lambda: limiter.others == 0, 1.0, "A's calls ending")
        assert post(b, OTHER_KEY).status_code == 200


def test_a_reloaded_replica_keeps_sharing_the_state_it_carried_over(
    upstream: FakeUpstream,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a hot reload, A's carried breaker and pause board still reach B."""
    text = fleet_config(upstream, redis_url, redis_prefix, BREAKER)
    path = tmp_path / "fusebox.toml"
    path.write_text(text)
    monkeypatch.setenv(CONFIG_ENV, str(path))
    with replicas(text, 2) as (a, b):
        old = a.runtime
        assert httpx.post(a.url + "/fusebox/reload", timeout=10).status_code == 200
        assert a.app.state.runtime is not old
        a.runtime = a.app.state.runtime
        wait_until(lambda: a.runtime.store.healthy, 3.0, "the new store syncing")
        assert not old.store.healthy  # the old store stopped sharing
        upstream.set_mode("gpt-a", "429ra1")
        post(a)
        wait_until(
            lambda: b.runtime.pauses.until_wall("fake/gpt-a") is not None,
            1.0,
            "B learning the pause",
        )
        upstream.set_mode("gpt-a", "503")
        wait_until(
            lambda: a.runtime.pauses.until_wall("fake/gpt-a") is None,
            6.0,
            "the pause ending",
        )
        for _ in range(3):
            post(a)
        wait_until(
            lambda: breaker(b).state is BreakerState.OPEN, 1.0, "B's breaker opening"
        )
