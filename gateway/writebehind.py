"""What every byte store behind the cache shares: late writes, quiet failures.

Beside the onion: ``DiskStore`` and ``RedisBytes`` both store answers in the
background once the client has them, bound how many writes may pile up, drain
them briefly on close, and log each kind of failure once as a warning.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from typing import Final

log = logging.getLogger("fusebox.cache")

#: Background writes pending beyond this are dropped.
MAX_IN_FLIGHT: Final = 64
#: ``aclose`` waits this long for pending writes before it cancels them.
DRAIN_S: Final = 2.0


class WriteBehind(abc.ABC):
    """Background writes and once-per-kind failure logging for a byte store."""

    def __init__(self) -> None:
        self._writes: set[asyncio.Task[bool]] = set()
        self._logged: set[str] = set()
        #: No new background writes (the store is closing).
        self._closing = False

    @abc.abstractmethod
    async def set(self, key: str, value: bytes, expire_s: float) -> bool:
        """Store ``value`` under ``key`` for ``expire_s``; False if it was not kept."""

    def set_later(
        self, key: str, value: bytes, expire_s: float
    ) -> asyncio.Task[bool] | None:
        """Store ``value`` in the background; return the task, or None if dropped.

        The answer has been sent already: a write never adds latency to it.
        """
        if self._closing:
            return None
        if len(self._writes) >= MAX_IN_FLIGHT:
            self.failed("write", "too many pending writes")
            return None
        task = asyncio.get_running_loop().create_task(self.set(key, value, expire_s))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        return task

    def _is_known(self, what: BaseException | str) -> bool:  # noqa: ARG002
        """Tell whether a failure was already explained (then logged at debug)."""
        return False

    def failed(self, op: str, what: BaseException | str) -> None:
        """Log a cache failure: the first of its kind as a warning, then at debug."""
        why = what if isinstance(what, str) else f"{type(what).__name__}: {what}"
        kind = f"{op}: {what if isinstance(what, str) else type(what).__name__}"
        if kind in self._logged or self._is_known(what):
            log.debug("cache %s failed: %s", op, why)
            return
        self._logged.add(kind)
        log.warning(
            "cache %s failed (%s); requests go on without it, and further "
            "failures of this kind are logged at debug level",
            op,
            why,
        )

    async def _drain_writes(self) -> bool:
        """Stop taking writes and let pending ones finish briefly; False if closing."""
        if self._closing:
            return False
        self._closing = True
        writes = list(self._writes)
        if writes:
            _, pending = await asyncio.wait(writes, timeout=DRAIN_S)
            for task in pending:
                task.cancel()
        return True
