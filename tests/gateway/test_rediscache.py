"""``RedisBytes``: cache and idempotency entries in Redis, bounded, never failing a request."""

from __future__ import annotations

import logging
import time

import pytest
import redis

from gateway.rediscache import RedisBytes
from gateway.redislink import RedisLink, _redact
from gateway.redisops import Keys
from policies.clock import SystemClock
from tests.redisserver import free_port

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


async def test_an_entry_round_trips_with_its_ttl_and_can_be_deleted(
    redis_url: str, redis_prefix: str
) -> None:
    """What is set comes back, expires with its TTL, and is gone once deleted."""
    link = RedisLink(redis_url, SystemClock())
    store = RedisBytes(link, Keys(redis_prefix))
    try:
        assert await store.set("r:1", b"answer", 60.0)
        assert await store.get("r:1") == b"answer"
        client = redis.Redis.from_url(redis_url, socket_timeout=1)
        assert 0 < client.pttl(f"{redis_prefix}cache:r:1") <= 60_000
        client.close()
        await store.delete("r:1")
        assert await store.get("r:1") is None
    finally:
        await store.aclose()
        await link.aclose()


async def test_an_entry_over_the_size_cap_is_not_kept(
    redis_url: str, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An answer larger than the per-entry cap is dropped with one warning."""
    link = RedisLink(redis_url, SystemClock())
    store = RedisBytes(link, Keys(redis_prefix), max_entry_bytes=8)
    try:
        with caplog.at_level(logging.WARNING, logger="fusebox.cache"):
            assert not await store.set("r:big", b"0123456789", 60.0)
            assert not await store.set("r:big", b"0123456789", 60.0)
        assert len(caplog.records) == 1
        assert await store.get("r:big") is None
    finally:
        await store.aclose()
        await link.aclose()


async def test_without_redis_reads_miss_and_writes_drop_at_once() -> None:
    """A Redis that is not there costs a miss and a dropped write, never an error."""
    link = RedisLink(f"redis://127.0.0.1:{free_port()}/0", SystemClock())
    store = RedisBytes(link, Keys("x:"))
    started = time.monotonic()
    assert await store.get("r:1") is None
    write = store.set_later("r:1", b"answer", 60.0)
    assert write is not None
    await store.aclose()
    assert write.done()
    assert not write.result()
    assert store.set_later("r:2", b"late", 60.0) is None  # closing: nothing new
    await store.delete("r:1")
    assert time.monotonic() - started < 1.0
    await link.aclose()
    assert not await store.set("r:3", b"after close", 60.0)


def test_logs_never_show_the_redis_password() -> None:
    """The URL in the store's log lines has its credentials masked."""
    assert _redact("redis://user:secret@host:6379/0") == "redis://***@host:6379/0"
    assert _redact("redis://host:6379/0") == "redis://host:6379/0"
