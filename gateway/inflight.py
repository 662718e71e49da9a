"""Requests in flight on one ``Runtime``, so a reload retires it only when idle.

A handler enters ``runtime.in_flight`` right after reading ``app.state.runtime``
(with no await in between) and leaves it when its response, stream included,
is done. A reload swaps the runtime and then waits, bounded by
``server.drain_s``, for the old one's count to reach zero before closing its
connection pools.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import TracebackType


class InFlight:
    """A counter of requests in flight, with a bounded wait for it to reach zero."""

    __slots__ = ("_count", "_idle")

    def __init__(self) -> None:
        """Start at zero; the idle event is made when someone first waits."""
        self._count = 0
        self._idle: asyncio.Event | None = None

    @property
    def count(self) -> int:
        """Requests in flight right now."""
        return self._count

    def __enter__(self) -> None:
        """Count one more request in flight."""
        self._count += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Count one request less; wake the waiters when none is left."""
        self._count -= 1
        if self._count == 0 and self._idle is not None:
            self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no request is in flight, at most ``timeout_s``.

        Returns:
            Whether the count reached zero in time.
        """
        if self._count == 0:
            return True
        if self._idle is None or self._idle.is_set():
            self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True
