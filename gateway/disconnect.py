"""Client hang-ups: a request's work is cancelled the moment its client goes away.

Just inside the server: cancelling the handler's task unwinds the onion, so the
upstream call is closed and its bulkhead slot and breaker permit are released.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from litestar.types import Receive


class _Watch:
    """Shared flags between a request and its disconnect watcher."""

    __slots__ = ("done", "gone")

    def __init__(self) -> None:
        self.done = False
        self.gone = False


async def run_until_disconnect(
    receive: Receive, work: Coroutine[Any, Any, None]
) -> None:
    """Run ``work`` in this task; cancel it at once if the client hangs up meanwhile."""
    task = asyncio.current_task()
    assert task is not None  # noqa: S101 - always inside a task under an ASGI server
    watch = _Watch()
    watcher = asyncio.get_running_loop().create_task(_watch(receive, task, watch))
    try:
        await work
    except asyncio.CancelledError:
        if not watch.gone:
            raise
        task.uncancel()
    finally:
        watch.done = True
        watcher.cancel()


async def _watch(receive: Receive, task: asyncio.Task[Any], watch: _Watch) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
    if not watch.done:
        watch.gone = True
        task.cancel()
