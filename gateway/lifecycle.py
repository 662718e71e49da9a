"""Process signals, per worker: SIGHUP reloads, SIGTERM and SIGINT start a drain.

Installed by the app's lifespan (``process_lifespan``) in the worker's main
thread, so it works with uvicorn's factory mode and ``--workers``; an app
served from another thread (the tests, ``fusebox demo``) installs nothing.

Graceful drain is uvicorn's: on SIGTERM it closes the listening socket (new
connections are refused), closes idle keep-alive connections, lets in-flight
requests and streams finish for up to ``server.drain_s``
(``timeout_graceful_shutdown``), then runs the lifespan shutdown, which closes
every upstream pool. This module only chains a handler in front of uvicorn's
that sets ``runtime.draining`` first, so ``/readyz`` answers 503 from the
first moment. ``exit_zero_on_sigterm`` makes that drained exit status 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import threading
from typing import TYPE_CHECKING, Any, Final

from gateway.reqlog import log_event

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from types import FrameType

    from litestar import Litestar

    from gateway.reload import Reloader

log = logging.getLogger("fusebox")
#: The signals that start a graceful drain.
STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)


def exit_zero_on_sigterm() -> None:
    """Make a SIGTERM that uvicorn re-raises after its drain end the process with 0.

    uvicorn restores the handler it found and raises the signal again once it
    has shut down; with the default handler the process would die of SIGTERM.
    """
    signal.signal(signal.SIGTERM, _exit_zero)


def _exit_zero(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001
    raise SystemExit(0)


@contextlib.asynccontextmanager
async def process_lifespan(app: Litestar) -> AsyncIterator[None]:
    """Install the signal handlers; at shutdown close the runtimes a reload retired."""
    installed = threading.current_thread() is threading.main_thread()
    previous: dict[int, Any] = {}
    if installed:
        previous = _install(app)
    try:
        yield
    finally:
        if installed:
            _uninstall(previous)
        reloader: Reloader = app.state.reloader
        await reloader.aclose()


def _install(app: Litestar) -> dict[int, Any]:
    loop = asyncio.get_running_loop()
    reloader: Reloader = app.state.reloader
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGHUP, reloader.reload_soon, app)
    previous: dict[int, Any] = {}
    for signum in STOP_SIGNALS:
        before = signal.getsignal(signum)
        previous[signum] = before
        signal.signal(signum, functools.partial(_on_stop, app, loop, before))
    return previous


def _uninstall(previous: dict[int, Any]) -> None:
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
    for signum, before in previous.items():
        current = signal.getsignal(signum)
        if isinstance(current, functools.partial) and current.func is _on_stop:
            signal.signal(signum, before)


def _on_stop(
    app: Litestar,
    loop: asyncio.AbstractEventLoop,
    before: Any,  # noqa: ANN401 - whatever signal.getsignal returned
    signum: int,
    frame: FrameType | None,
) -> None:
    """Mark the runtime draining, then hand the signal on to the server's handler."""
    app.state.runtime.draining = True
    # No logging inside a signal handler (its locks may be held): do it on the loop.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_log_drain, app, signum)
    if callable(before):
        before(signum, frame)
    elif before == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)


def _log_drain(app: Litestar, signum: int) -> None:
    runtime = app.state.runtime
    log_event(
        "drain_started",
        signal=signal.Signals(signum).name,
        drain_s=runtime.config.server.drain_s,
        in_flight=runtime.in_flight.count,
    )
