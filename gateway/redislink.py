"""The connection to Redis: short timeouts, no client retries, a breaker of its own.

Beside the onion, never in it: the Redis store's background tasks (and the few
half-open probe claims) reach Redis only through ``RedisLink.call``. Each call
is bounded by ``CALL_TIMEOUT_S``; failures trip the link's own breaker (the
same ``policies.breaker.Breaker`` that guards deployments), so a dead Redis is
not hammered and callers learn at once that it is down. ``healthy`` and
``reason`` are what ``/readyz`` and ``/fusebox/status`` report.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final, TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from policies.breaker import Breaker, BreakerState, Transition
from policies.config import BreakerConfig
from providers.errors import CircuitOpenError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from redis.commands.core import AsyncScript

    from policies.clock import Clock

log = logging.getLogger("fusebox.store")
T = TypeVar("T")

#: The longest one Redis call may take; then it counts as failed.
CALL_TIMEOUT_S: Final = 0.2
#: The link's breaker: two failures in a row open it for 0.5 s, doubling to 2 s.
LINK_BREAKER: Final = BreakerConfig(
    window_s=5.0,
    min_calls=2,
    failure_rate=0.5,
    slow_s=CALL_TIMEOUT_S * 2,
    slow_rate=1.0,
    open_s=0.5,
    max_open_s=2.0,
    half_open_probes=1,
)


class StoreDownError(Exception):
    """Redis did not answer (in time, or at all): carry on with local state."""


class RedisLink:
    """One Redis client whose every call is bounded, counted and never retried."""

    def __init__(
        self, url: str, clock: Clock, *, timeout_s: float = CALL_TIMEOUT_S
    ) -> None:
        """Remember where Redis is; the client is made in ``open`` (in the loop)."""
        self.url = url
        self.timeout_s = timeout_s
        self._clock = clock
        self._client: Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._closed = False
        self._breaker = Breaker("store", LINK_BREAKER, clock, self._on_transition)
        self.healthy = False
        self.reason: str | None = "not connected yet"

    def open(self) -> Redis:
        """Return the client, making it on first use (it connects lazily)."""
        if self._client is None:
            self._client = Redis.from_url(
                self.url,
                socket_timeout=self.timeout_s,
                socket_connect_timeout=self.timeout_s,
                # Our breaker decides when to try again, not the client.
                retry=Retry(NoBackoff(), 0),
                retry_on_timeout=False,
            )
        return self._client

    def script(self, text: str) -> AsyncScript:
        """Return the Lua script ``text``, registered once with the client."""
        script = self._scripts.get(text)
        if script is None:
            script = self.open().register_script(text)
            self._scripts[text] = script
        return script

    @property
    def is_open(self) -> bool:
        """Whether the link's breaker is refusing calls right now."""
        return self._breaker.state is BreakerState.OPEN

    async def call(self, op: Callable[[Redis], Awaitable[T]], what: str) -> T:
        """Run ``op`` on the client within the timeout, through the breaker.

        Raises:
            StoreDownError: The breaker is open, or the call failed or timed out.
        """
        if self._closed:
            raise StoreDownError("the store is closed")
        try:
            permit = self._breaker.acquire()
        except CircuitOpenError as exc:
            raise StoreDownError(self.reason or "redis is down") from exc
        started = self._clock.monotonic()
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await op(self.open())
        except (RedisError, OSError, TimeoutError) as exc:
            duration_s = self._clock.monotonic() - started
            self._breaker.record(permit, failed=True, duration_s=duration_s)
            self._mark_down(f"redis {what} failed: {type(exc).__name__}")
            raise StoreDownError(self.reason or what) from exc
        except BaseException:
            self._breaker.release(permit)
            raise
        duration_s = self._clock.monotonic() - started
        self._breaker.record(permit, failed=False, duration_s=duration_s)
        self._mark_up()
        return result

    def _mark_down(self, reason: str) -> None:
        if self.healthy:
            log.warning("store: %s; carrying on with local state", reason)
        else:
            log.debug("store: %s", reason)
        self.healthy = False
        self.reason = reason

    def _mark_up(self) -> None:
        if not self.healthy:
            log.info("store: redis reachable at %s", _redact(self.url))
        self.healthy = True
        self.reason = None

    def _on_transition(self, transition: Transition) -> None:
        log.debug(
            "store link breaker: %s -> %s (%s)",
            transition.from_state.value,
            transition.to_state.value,
            transition.reason,
        )

    async def aclose(self) -> None:
        """Close the client and its connections; later calls fail at once."""
        self._closed = True
        client, self._client = self._client, None
        self._scripts.clear()
        if client is not None:
            try:
                await client.aclose()
            except (RedisError, OSError) as exc:
                log.debug("store: closing the redis client failed: %s", exc)


def _redact(url: str) -> str:
    """Return ``url`` without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    return f"{scheme}{sep}***@{rest.rpartition('@')[2]}"
