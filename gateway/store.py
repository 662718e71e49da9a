"""Build the configured store (``[store] kind``) and where the cache lives.

``policies.store`` defines the seam and the embedded ``local`` backend;
``gateway.redisstore`` is the ``redis`` backend, imported only when chosen so
the local default never loads the Redis client. ``ByteStore`` is the facade the
response cache and idempotency records use: on disk (``local``) or in Redis.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from gateway.diskstore import DiskStore
from policies.store import LocalStore, Store

if TYPE_CHECKING:
    import asyncio

    from gateway.config import GatewayConfig, StoreConfig
    from policies.clock import Clock


def build_store(config: StoreConfig, clock: Clock) -> Store:
    """Return the store ``config`` names; nothing connects until ``start()``."""
    if config.kind == "redis":
        from gateway.redisstore import RedisStore  # noqa: PLC0415 - redis only when used

        return RedisStore(config, clock)
    return LocalStore()


class ByteStore(Protocol):
    """Bytes by key, best effort: where answers and idempotency records are kept.

    ``gateway.diskstore.DiskStore`` (local disk, shared by one host's workers)
    and ``gateway.rediscache.RedisBytes`` (Redis, shared by the fleet).
    """

    async def get(self, key: str) -> bytes | None:
        """Return the bytes under ``key``, or None (absent or unreachable)."""
        ...

    async def set(self, key: str, value: bytes, expire_s: float) -> bool:
        """Store ``value`` for ``expire_s`` seconds; tell whether it was written."""
        ...

    async def delete(self, key: str) -> None:
        """Forget ``key``; failures are ignored."""
        ...

    def set_later(
        self, key: str, value: bytes, expire_s: float
    ) -> asyncio.Task[bool] | None:
        """Store ``value`` in the background; return the task, or None if dropped."""
        ...

    def failed(self, op: str, what: BaseException | str) -> None:
        """Log a failure of ``op`` (once per kind as a warning)."""
        ...

    async def aclose(self) -> None:
        """Let pending writes finish briefly, then let go."""
        ...


def build_byte_store(config: GatewayConfig, store: Store, clock: Clock) -> ByteStore:
    """Return where answers and idempotency records live for ``config``'s store."""
    if config.store.kind == "redis":
        from gateway.rediscache import RedisBytes  # noqa: PLC0415 - redis only when used
        from gateway.redisstore import RedisStore  # noqa: PLC0415

        if isinstance(store, RedisStore):
            return RedisBytes(store.link, store.keys)
    return DiskStore(
        Path(config.store.path) / "cache",
        size_limit_mib=config.cache.max_size_mib,
        clock=clock,
    )
