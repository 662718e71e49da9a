"""Readiness: started, not draining, and the configured store reachable.

The store check touches the disk (``local``) or the network (``redis``), so its
result is cached for ``CACHE_S``; ``/readyz`` and ``/fusebox/status`` share it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from gateway.config import StoreConfig
    from gateway.runtime import Runtime
    from policies.clock import Clock
    from policies.store import Store

#: How long one store check stands.
CACHE_S: Final = 1.0
#: The longest a Redis ping may take before the store counts as unreachable.
REDIS_TIMEOUT_S: Final = 0.5


class StoreHealth:
    """The last store check: healthy or not, and why not."""

    __slots__ = ("healthy", "reason")

    def __init__(self, *, healthy: bool, reason: str | None = None) -> None:
        """Hold one verdict."""
        self.healthy = healthy
        self.reason = reason


def local_store_health(path: str) -> StoreHealth:
    """Check that ``path`` is a writable directory, or could be created."""
    target = Path(path).absolute()
    probe = target
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe != target and not probe.is_dir():
        return StoreHealth(
            healthy=False, reason=f"store path {path}: {probe} is a file"
        )
    if probe == target and not target.is_dir():
        return StoreHealth(
            healthy=False, reason=f"store path {path} is not a directory"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        return StoreHealth(healthy=False, reason=f"store path {path} is not writable")
    return StoreHealth(healthy=True)


async def redis_store_health(url: str) -> StoreHealth:
    """Ping the Redis server at ``url`` within ``REDIS_TIMEOUT_S``."""
    import redis.asyncio as aioredis  # noqa: PLC0415 - only for store.kind = "redis"

    client = aioredis.Redis.from_url(
        url,
        socket_connect_timeout=REDIS_TIMEOUT_S,
        socket_timeout=REDIS_TIMEOUT_S,
    )
    try:
        await client.ping()
    except Exception as exc:
        return StoreHealth(
            healthy=False, reason=f"redis unreachable: {type(exc).__name__}"
        )
    finally:
        await client.aclose()
    return StoreHealth(healthy=True)


class StoreProbe:
    """The configured store's health, checked at most once per ``CACHE_S``."""

    def __init__(
        self, store: StoreConfig, clock: Clock, live: Store | None = None
    ) -> None:
        """Probe ``store``; nothing is checked until asked.

        ``live`` is the runtime's store: a Redis store already knows whether
        Redis answers (its sync runs every 250 ms), so it is asked instead.
        """
        self.store = store
        self._live = live
        self._clock = clock
        self._last: StoreHealth | None = None
        self._checked_at = 0.0

    async def health(self) -> StoreHealth:
        """Return the store's health, from the cache when it is fresh."""
        live = self._live
        if live is not None and live.kind == "redis":
            reason = live.snapshot().get("reason")
            return StoreHealth(
                healthy=live.healthy, reason=None if live.healthy else reason
            )
        now = self._clock.monotonic()
        if self._last is not None and now - self._checked_at < CACHE_S:
            return self._last
        if self.store.kind == "redis" and self.store.url:
            found = await redis_store_health(self.store.url)
        else:
            found = local_store_health(self.store.path)
        self._last, self._checked_at = found, self._clock.monotonic()
        return found


async def not_ready_reason(runtime: Runtime) -> str | None:
    """Return why the gateway is not ready, or None when it is."""
    if not runtime.started:
        return "starting"
    if runtime.draining:
        return "draining"
    store = await runtime.store_probe.health()
    if not store.healthy:
        return store.reason or "store unreachable"
    return None
