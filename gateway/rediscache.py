"""``RedisBytes``: the response cache and idempotency records in Redis, for the fleet.

Beside the onion, like ``gateway.diskstore.DiskStore``, whose facade it
implements (``get``, ``set``, ``set_later``, ``delete``, ``failed``,
``aclose``): with ``store.kind = "redis"`` the fresh cache, the ``@cache`` rung
and idempotency replays are served by whichever replica gets the request.
Every entry has a TTL (the caller's ``expire_s``) and a size cap, so Redis
memory stays bounded by traffic × TTL even without ``maxmemory``. Calls go
through the store's ``RedisLink`` (short timeouts, its breaker): a slow or
dead Redis is a cache miss or a dropped write, never a failed request.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

from gateway.redislink import StoreDownError
from gateway.writebehind import WriteBehind

if TYPE_CHECKING:
    from gateway.redislink import RedisLink
    from gateway.redisops import Keys

log = logging.getLogger("fusebox.cache")

#: The largest entry kept (a completion is rarely over a few hundred KiB).
MAX_ENTRY_BYTES: Final = 4 * 1024 * 1024


class RedisBytes(WriteBehind):
    """Bytes by string key in Redis; every call may quietly give nothing."""

    def __init__(
        self, link: RedisLink, keys: Keys, *, max_entry_bytes: int = MAX_ENTRY_BYTES
    ) -> None:
        """Keep entries under ``keys.cache(...)`` through ``link``."""
        super().__init__()
        self._link = link
        self._keys = keys
        self._max_entry_bytes = max_entry_bytes

    async def get(self, key: str) -> bytes | None:
        """Return the bytes stored under ``key``, or None (absent or unreachable)."""
        name = self._keys.cache(key)
        try:
            value = await self._link.call(lambda c: c.get(name), "cache read")
        except StoreDownError as exc:
            self.failed("read", exc)
            return None
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, expire_s: float) -> bool:
        """Store ``value`` for ``expire_s`` seconds; tell whether it was written."""
        if len(value) > self._max_entry_bytes:
            self.failed("write", f"entry over {self._max_entry_bytes} bytes")
            return False
        ttl_ms = max(int(expire_s * 1000), 1)
        name = self._keys.cache(key)
        try:
            await self._link.call(
                lambda c: c.set(name, value, px=ttl_ms), "cache write"
            )
        except StoreDownError as exc:
            self.failed("write", exc)
            return False
        return True

    async def delete(self, key: str) -> None:
        """Forget ``key`` (a corrupt entry); failures are ignored."""
        name = self._keys.cache(key)
        try:
            await self._link.call(lambda c: c.delete(name), "cache delete")
        except StoreDownError as exc:
            self.failed("delete", exc)

    async def aclose(self) -> None:
        """Let pending writes finish (briefly); the link is the store's to close."""
        await self._drain_writes()
