"""Fixtures for the gateway tests that need Redis (the scale-out suites)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.redisserver import OwnRedis, drop_prefix, ensure_shared_redis, unique_prefix

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="session")
def redis_url() -> str:
    """Return the shared Redis on 127.0.0.1:6379, started if it was not running."""
    return ensure_shared_redis()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """Give a test a key prefix of its own and delete its keys afterwards."""
    prefix = unique_prefix()
    yield prefix
    drop_prefix(redis_url, prefix)


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    """Run a Redis of the test's own on a free port; stop it by PID at the end."""
    server = OwnRedis().start()
    try:
        yield server
    finally:
        server.stop()
