"""The response cache: whole answers kept per tenant, best effort.

Two places in the onion read it: the fresh cache (``cache.fresh_s > 0``) before
the chain, and the ``@cache`` rung after every live rung failed, which serves
an answer younger than ``cache.stale_s``. Entries live in the byte store
(``gateway.store.ByteStore``: local disk, or Redis for a fleet) under keys
made of the tenant, the alias and the canonical request, so a tenant never
gets another tenant's answer; whatever the store does, a lookup is at worst a
miss and a store at worst dropped. Chat completions and ``/v1/messages`` are
kept, each in its own API's format under keys namespaced by endpoint, so one
endpoint never gets the other's answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import msgspec

from gateway import replay
from gateway.config import CACHE_RUNG
from gateway.diskstore import digest

if TYPE_CHECKING:
    from collections.abc import Callable

    from gateway.config import CacheConfig
    from gateway.request import RequestContext
    from gateway.runtime import Route
    from gateway.store import ByteStore
    from policies.clock import Clock

#: Request fields that do not change the answer: not part of the cache key.
IGNORED_FIELDS: Final = frozenset(
    {
        "model",
        "stream",
        "stream_options",
        "user",
        "metadata",
        "store",
        "service_tier",
        "prompt_cache_key",
        "safety_identifier",
    }
)


#: The endpoints whose answers are kept.
CACHED_ENDPOINTS: Final = frozenset({"chat", "messages"})


def cache_key(
    tenant: str, alias: str, payload: dict[str, Any], endpoint: str = "chat"
) -> str:
    """Return the response-cache key: the tenant, the alias, the canonical request.

    Keys of endpoints other than chat also name the endpoint: the same JSON
    sent to two APIs is two requests.
    """
    request = {k: v for k, v in payload.items() if k not in IGNORED_FIELDS}
    if endpoint == "chat":
        return "r:" + digest([tenant, alias, request])
    return "r:" + digest([tenant, alias, request, endpoint])


class CachedAnswer(msgspec.Struct, frozen=True, array_like=True):
    """One stored answer: its JSON (in its endpoint's format) and when it was made."""

    body: bytes
    created_wall: float


_encode_answer: Final = msgspec.msgpack.Encoder().encode
_decode_answer: Final = msgspec.msgpack.Decoder(CachedAnswer).decode


def _decode_entry(
    raw: bytes, replayable: Callable[[bytes], bool]
) -> CachedAnswer | None:
    try:
        entry = _decode_answer(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return entry if replayable(entry.body) else None


class Hit(msgspec.Struct, frozen=True):
    """A stored answer found for a request, and its age in seconds."""

    body: bytes
    age_s: float


class ResponseCache:
    """The tenant-scoped answer cache behind the fresh cache and the ``@cache`` rung."""

    def __init__(self, disk: ByteStore, config: CacheConfig, clock: Clock) -> None:
        """Share ``disk``; the TTLs come from ``[cache]``."""
        self.disk = disk
        self.fresh_s = config.fresh_s
        self.stale_s = config.stale_s
        self.clock = clock

    def lookup(
        self,
        ctx: RequestContext,
        route: Route,
        payload: dict[str, Any],
        replayable: Callable[[bytes], bool] = replay.is_replayable,
    ) -> CacheLookup | None:
        """Return the cache view of one request, or None when it uses no cache.

        Cheap when caching is off: no key is computed and no thread is used.
        Only chat completions and messages are kept (``CACHED_ENDPOINTS``);
        ``replayable`` tells a stored answer of the endpoint from a corrupt one.
        """
        if ctx.endpoint not in CACHED_ENDPOINTS or ctx.tenant is None:
            return None
        if self.fresh_s <= 0 and not route.has_cache:
            return None
        if payload.get("n") not in (None, 1):
            return None
        lookup = CacheLookup(self, ctx.tenant, route.alias, payload, route.has_cache)
        lookup.endpoint = ctx.endpoint
        lookup.replayable = replayable
        return lookup


class CacheLookup:
    """One request's view of the cache: its key is computed once, when needed."""

    __slots__ = (
        "_alias",
        "_cache",
        "_entry",
        "_key",
        "_loaded",
        "_payload",
        "_tenant",
        "endpoint",
        "has_cache",
        "replayable",
    )

    def __init__(
        self,
        cache: ResponseCache,
        tenant: str,
        alias: str,
        payload: dict[str, Any],
        has_cache: bool,  # noqa: FBT001 - internal, passed positionally by lookup
    ) -> None:
        """Bind the request; nothing is read yet."""
        self._cache = cache
        self._tenant = tenant
        self._alias = alias
        self._payload = payload
        self.has_cache = has_cache
        self._key: str | None = None
        self._loaded = False
        self._entry: CachedAnswer | None = None
        self.endpoint = "chat"
        #: Tells a stored answer of ``endpoint`` from a corrupt one.
        self.replayable: Callable[[bytes], bool] = replay.is_replayable

    @property
    def key(self) -> str:
        """Return the cache key (tenant, alias, canonical request, endpoint)."""
        if self._key is None:
            self._key = cache_key(
                self._tenant, self._alias, self._payload, self.endpoint
            )
        return self._key

    async def hit(self, ctx: RequestContext, *, stale: bool) -> Hit | None:
        """Return the answer for a fresh hit, or for the ``@cache`` rung if ``stale``.

        Notes it in ``ctx``: ``@cache=hit|miss`` in the trail (a fresh miss is
        not noted), who served, the age, and ``degraded = "cache"`` on the rung.
        """
        found = await (self.stale() if stale else self.fresh())
        if stale or found is not None:
            ctx.trail["@cache"] = ["hit" if found is not None else "miss"]
        if found is not None:
            ctx.served_by = CACHE_RUNG
            ctx.degraded = "cache" if stale else None
            ctx.cache_age_s = found.age_s
        return found

    async def fresh(self) -> Hit | None:
        """Return the stored answer if it is younger than ``fresh_s``."""
        return await self._younger_than(self._cache.fresh_s)

    async def stale(self) -> Hit | None:
        """Return the stored answer if it is younger than ``stale_s`` (the rung)."""
        return await self._younger_than(self._cache.stale_s)

    async def _younger_than(self, max_age_s: float) -> Hit | None:
        if max_age_s <= 0:
            return None
        entry = await self._load()
        if entry is None:
            return None
        age_s = max(0.0, self._cache.clock.wall() - entry.created_wall)
        return Hit(entry.body, age_s) if age_s < max_age_s else None

    async def _load(self) -> CachedAnswer | None:
        if not self._loaded:
            self._loaded = True
            self._entry = await self._read()
        return self._entry

    async def _read(self) -> CachedAnswer | None:
        disk = self._cache.disk
        raw = await disk.get(self.key)
        if raw is None:
            return None
        entry = _decode_entry(raw, self.replayable)
        if entry is None:
            disk.failed("decode", "a stored answer is corrupt; it is dropped")
            await disk.delete(self.key)
        return entry

    def keep(self, body: bytes) -> None:
        """Store a successful answer in the background, for as long as it can serve."""
        cache = self._cache
        ttl_s = max(cache.fresh_s, cache.stale_s if self.has_cache else 0.0)
        if ttl_s <= 0:
            return
        entry = CachedAnswer(body=body, created_wall=cache.clock.wall())
        cache.disk.set_later(self.key, _encode_answer(entry), ttl_s)
