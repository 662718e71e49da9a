"""A deterministic clock for policy tests.

Time moves only when a test calls ``advance`` or something sleeps: ``sleep``
jumps the clock forward by the amount and yields to the event loop once, so a
backoff or a queue timeout happens at once but still lets other tasks run.
"""

from __future__ import annotations

import asyncio
import random

#: Offset between monotonic and wall time, so wall values look like real dates.
WALL_OFFSET = 1_700_000_000.0


class FakeClock:
    """A ``policies.clock.Clock`` whose time only moves when told to."""

    def __init__(self, start: float = 1000.0, seed: int = 0) -> None:
        self.now = start
        self.slept: list[float] = []
        self._rng = random.Random(seed)

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + WALL_OFFSET

    def advance(self, dt: float) -> None:
        """Move time forward by ``dt`` seconds (never backwards)."""
        if dt < 0:
            raise ValueError("time never goes backwards")
        self.now += dt

    async def sleep(self, seconds: float) -> None:
        """Jump forward by ``seconds`` and yield to the event loop once."""
        self.slept.append(seconds)
        self.advance(max(seconds, 0.0))
        await asyncio.sleep(0)

    def random(self) -> float:
        return self._rng.random()
