"""With the Redis store, cached answers and idempotency records serve every replica."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import redis

from tests.fleet import fleet_config, post, replicas
from tests.redisserver import wait_until

pytestmark = pytest.mark.redis


if TYPE_CHECKING:
    from gateway.fakeupstream import FakeUpstream

CACHED = """
[cache]
fresh_s = {fresh_s}
stale_s = 600

[providers.fake.retry]
attempts = 1

[models.chat]
chain = ["fake/gpt-a", "@cache"]
"""


def entries(url: str, prefix: str) -> int:
    """Return how many cache or idempotency entries the fleet keeps in Redis."""
    client = redis.Redis.from_url(url, socket_timeout=1)
    try:
        return len(list(client.scan_iter(match=f"{prefix}cache:*", count=100)))
    finally:
        client.close()


def test_a_fresh_answer_cached_by_one_replica_is_served_by_another(
    upstream: FakeUpstream, redis_url: str, redis_prefix: str
) -> None:
    """B answers a repeat from the cache A filled, without calling the upstream."""
    text = fleet_config(upstream, redis_url, redis_prefix, CACHED.format(fresh_s=60))
    with replicas(text, 2) as (a, b):
        first = post(a)
        assert first.headers["x-fusebox-served-by"] == "fake/gpt-a"
        wait_until(
            lambda: entries(redis_url, redis_prefix) == 1, 2.0, "the answer kept"
        )
        again = post(b)
        assert again.headers["x-fusebox-served-by"] == "@cache"
        assert "x-fusebox-degraded" not in again.headers
        assert again.json() == first.json()
    assert upstream.count("gpt-a") == 1


def test_the_cache_rung_of_another_replica_serves_a_stale_answer(
    upstream: FakeUpstream, redis_url: str, redis_prefix: str
) -> None:
    """When the live rung fails on B, B's @cache rung serves the answer A got earlier."""
    text = fleet_config(upstream, redis_url, redis_prefix, CACHED.format(fresh_s=0))
    with replicas(text, 2) as (a, b):
        first = post(a)
        wait_until(
            lambda: entries(redis_url, redis_prefix) == 1, 2.0, "the answer kept"
        )
        upstream.set_mode("gpt-a", "503")
        stale = post(b)
        assert stale.status_code == 200
        assert stale.headers["x-fusebox-served-by"] == "@cache"
        assert stale.headers["x-fusebox-degraded"] == "cache"
        assert stale.json() == first.json()


def test_an_idempotent_repeat_sent_to_another_replica_is_a_replay(
    upstream: FakeUpstream, redis_url: str, redis_prefix: str
) -> None:
    """The same Idempotency-Key on B replays A's answer; the upstream is called once."""
    text = fleet_config(upstream, redis_url, redis_prefix, CACHED.format(fresh_s=0))
    with replicas(text, 2) as (a, b):
        first = post(a, idempotency_key="order-42")
        assert first.status_code == 200
        # The answer and its idempotency record.
        wait_until(
            lambda: entries(redis_url, redis_prefix) == 2, 2.0, "the record kept"
        )
        again = post(b, idempotency_key="order-42")
        assert again.headers["x-fusebox-idempotent-replay"] == "true"
        assert again.json() == first.json()
        conflict = post(b, idempotency_key="order-42", temperature=0.5)
        assert conflict.status_code == 422
    assert upstream.count("gpt-a") == 1
