"""The injected clock: the only door to time and randomness in the onion.

Every policy layer (deadline, retry, breaker, bulkhead, budget, pauses) reads
``monotonic()`` for decisions, ``wall()`` for what it shows people, sleeps
through ``sleep()`` and draws jitter from ``random()``. Tests swap in
``tests.fakes.clock.FakeClock`` so time-dependent behaviour is deterministic.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Protocol


class Clock(Protocol):
    """Time and randomness as the policies see them."""

    def monotonic(self) -> float:
        """Return monotonic seconds: the only time decisions are made on."""
        ...

    def wall(self) -> float:
        """Return unix time in seconds, for status pages and headers only."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (a backoff, a bounded queue wait)."""
        ...

    def random(self) -> float:
        """Return a uniform float in [0, 1), for jitter."""
        ...


class SystemClock:
    """The real clock: ``time.monotonic``, ``time.time`` and ``asyncio.sleep``."""

    __slots__ = ("_rng",)

    def __init__(self, seed: int | None = None) -> None:
        """Create the clock; ``seed`` makes the jitter reproducible."""
        # Jitter spreads retries; it is no secret, so a PRNG is the right tool.
        self._rng = random.Random(seed)  # noqa: S311

    def monotonic(self) -> float:
        """Return ``time.monotonic()``."""
        return time.monotonic()

    def wall(self) -> float:
        """Return ``time.time()``."""
        return time.time()  # noqa: TID251 - this module is the one allowed caller

    async def sleep(self, seconds: float) -> None:
        """Sleep on the running event loop."""
        await asyncio.sleep(seconds)

    def random(self) -> float:
        """Return a uniform float in [0, 1) from this clock's generator."""
        return self._rng.random()
