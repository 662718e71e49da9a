"""Redis trouble never takes the gateway down; state re-syncs when Redis returns.

These tests run a Redis of their own (``own_redis``: a ``redis-server`` on a
free port) so they can stop it, freeze it and start it again by PID.
"""

from __future__ import annotations

import time

import httpx
import pytest

from policies.breaker import BreakerState
from tests.fleet import breaker, fleet_config, is_synced, post, replicas
from tests.redisserver import OwnRedis, wait_until

pytestmark = pytest.mark.redis


OUTAGE = """
[providers.fake.retry]
attempts = 1

[providers.fake.breaker]
min_calls = 3
failure_rate = 0.5
open_s = 30

[providers.fake2.retry]
attempts = 1

[models.chat]
chain = ["fake/gpt-a", "fake2/gpt-b"]

[models.other]
chain = ["fake2/gpt-p", "fake/gpt-ok"]
"""


def readyz(url: str) -> httpx.Response:
    """GET ``/readyz``."""
    return httpx.get(url + "/readyz", timeout=5)


def store_status(url: str) -> dict[str, object]:
    """Return the ``store`` part of ``/fusebox/status`` (loopback needs no key)."""
    store: dict[str, object] = httpx.get(url + "/fusebox/status", timeout=5).json()[
        "store"
    ]
    return store


def test_requests_keep_succeeding_while_redis_is_down_and_state_resyncs_after(
    upstream, own_redis: OwnRedis
) -> None:
    """With Redis stopped, both replicas serve and say so; after a restart B learns A's trip and pause."""
    text = fleet_config(upstream, own_redis.url, "fusebox:", OUTAGE)
    with replicas(text, 2) as (a, b):
        assert readyz(a.url).status_code == 200
        own_redis.stop()
        wait_until(lambda: not (is_synced(a) or is_synced(b)), 2.0, "Redis missed")

        for _ in range(3):
            started = time.monotonic()
            assert post(b).status_code == 200
            assert time.monotonic() - started < 1.0
        not_ready = readyz(a.url)
        assert not_ready.status_code == 503
        assert "redis" in not_ready.json()["reason"]
        assert store_status(a.url)["healthy"] is False
        assert store_status(a.url)["kind"] == "redis"

        # A learns of an outage and a 429 while B cannot hear about them.
        upstream.set_mode("gpt-a", "503")
        upstream.set_mode("gpt-p", "429ra30")
        for _ in range(3):
            assert post(a).status_code == 200
        assert post(a, model="other").headers["x-fusebox-served-by"] == "fake/gpt-ok"
        assert breaker(a).state is BreakerState.OPEN
        assert breaker(b).state is BreakerState.CLOSED

        own_redis.start()
        wait_until(lambda: is_synced(a) and is_synced(b), 6.0, "both replicas back")
        wait_until(
            lambda: breaker(b).state is BreakerState.OPEN, 2.0, "B adopting A's trip"
        )
        wait_until(
            lambda: b.runtime.pauses.until_wall("fake2/gpt-p") is not None,
            2.0,
            "B adopting A's pause",
        )
        assert readyz(b.url).status_code == 200
        assert store_status(b.url)["healthy"] is True
        calls = upstream.count("gpt-a")
        assert (
            post(b).headers["x-fusebox-attempts"] == "fake/gpt-a=open; fake2/gpt-b=200"
        )
        assert upstream.count("gpt-a") == calls


HUNG = """
[cache]
fresh_s = 60

[providers.fake.breaker]
min_calls = 2
open_s = 30

[models.chat]
chain = ["fake/gpt-a", "@cache"]
"""


def test_a_hung_redis_costs_a_request_at_most_the_store_timeout(
    upstream, own_redis: OwnRedis
) -> None:
    """A frozen Redis (SIGSTOP) makes cache reads miss within 0.2 s; requests still answer."""
    text = fleet_config(upstream, own_redis.url, "fusebox:", HUNG, timeout_s=0.2)
    with replicas(text, 1) as (gw,):
        own_redis.freeze()
        try:
            for i in range(4):
                started = time.monotonic()
                resp = post(gw, messages=[{"role": "user", "content": f"q{i}"}])
                assert resp.status_code == 200
                assert resp.headers["x-fusebox-served-by"] == "fake/gpt-a"
                assert time.monotonic() - started < 0.8
            wait_until(lambda: not is_synced(gw), 2.0, "the store noticing")
            assert readyz(gw.url).status_code == 503
        finally:
            own_redis.thaw()
        wait_until(lambda: is_synced(gw), 6.0, "the store recovering")
        assert readyz(gw.url).status_code == 200
