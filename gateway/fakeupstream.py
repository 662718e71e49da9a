"""A fault-injecting fake OpenAI + Anthropic upstream on a real socket.

Outside the onion: test equipment for the suite, the benchmarks and the demo.
The data plane (``gateway.fakeserver``) speaks both wire formats:

* ``POST /v1/chat/completions``, ``GET /v1/models``, ``POST /v1/embeddings``;
* ``POST /v1/messages``, ``POST /v1/messages/count_tokens``.

It answers deterministically (``gateway.fakeanswer``) and misbehaves as told
(``gateway.fakefault`` documents the fault grammar). This module is the
control plane, for steering it:

* in process, ``FakeUpstream`` serves from a background thread with its own
  event loop and is scripted through Python calls;
* out of process, ``run_forever`` backs ``fusebox mock-upstream`` and is
  scripted over HTTP: ``POST /_control/script`` ``{"model", "faults": [...]}``,
  ``POST /_control/mode`` ``{"model", "fault"}``, ``GET /_control/records``
  (``?model=X``, ``&bodies=1``), ``POST /_control/reset``,
  ``GET /_control/health``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any, Final, Self

import msgspec
from aiohttp import web

from gateway.fakefault import FaultBook, Record
from gateway.fakeserver import DataPlane

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from gateway.fakeanswer import Json

__all__ = ["FakeUpstream", "Record", "run_forever"]

_HOST: Final = "127.0.0.1"
#: Longest wait for the server thread to start or stop.
_WAIT_S: Final = 5.0
#: Grace given to in-flight handlers on stop before they are cancelled.
_SHUTDOWN_S: Final = 0.05
#: Largest request body accepted (aiohttp's default is 1 MiB).
_MAX_BODY: Final = 64 * 1024 * 1024
_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


class _ControlPlane:
    """The ``/_control`` handlers around one ``FaultBook``."""

    def __init__(self, book: FaultBook) -> None:
        self._book = book

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/_control/script", self.script),
            web.post("/_control/mode", self.mode),
            web.get("/_control/records", self.records),
            web.post("/_control/reset", self.reset),
            web.get("/_control/health", self.health),
        ]

    async def script(self, request: web.Request) -> web.StreamResponse:
        body = await _control_body(request)
        faults = body.get("faults")
        if not isinstance(faults, list) or not all(isinstance(f, str) for f in faults):
            raise _bad_control("'faults' must be an array of strings")
        _control_call(self._book.script, _control_model(body), faults)
        return web.json_response({"ok": True})

    async def mode(self, request: web.Request) -> web.StreamResponse:
        body = await _control_body(request)
        fault = body.get("fault")
        if fault is not None and not isinstance(fault, str):
            raise _bad_control("'fault' must be a string or null")
        _control_call(self._book.set_mode, _control_model(body), fault)
        return web.json_response({"ok": True})

    async def records(self, request: web.Request) -> web.StreamResponse:
        records = msgspec.to_builtins(self._book.records(request.query.get("model")))
        if request.query.get("bodies") != "1":
            for record in records:
                record.pop("body", None)
        return web.Response(body=_encode(records), content_type="application/json")

    async def reset(self, request: web.Request) -> web.StreamResponse:  # noqa: ARG002
        self._book.reset()
        return web.json_response({"ok": True})

    async def health(self, request: web.Request) -> web.StreamResponse:  # noqa: ARG002
        return web.json_response({"ok": True})


def _bad_control(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(
        text=_encode({"error": message}).decode(), content_type="application/json"
    )


async def _control_body(request: web.Request) -> Json:
    try:
        body = _decode(await request.read())
    except msgspec.DecodeError as exc:
        raise _bad_control(f"invalid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise _bad_control("the body must be a JSON object")
    return body


def _control_model(body: Json) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad_control("'model' must be a non-empty string")
    return model


def _control_call(
    method: Callable[[str, Any], None], model: str, argument: object
) -> None:
    try:
        method(model, argument)
    except ValueError as exc:
        raise _bad_control(str(exc)) from exc


async def _open(book: FaultBook, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve ``book``'s application on ``host:port``; return the runner and port."""
    app = web.Application(client_max_size=_MAX_BODY)
    app.add_routes([*DataPlane(book).routes(), *_ControlPlane(book).routes()])
    runner = web.AppRunner(
        app,
        handler_cancellation=True,  # a client that goes away ends hang and stall
        shutdown_timeout=_SHUTDOWN_S,
        access_log=None,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, int(runner.addresses[0][1])


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Run ``loop`` in this thread until stopped, then close it cleanly."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


class FakeUpstream:
    """The fake upstream, served from a background thread with its own loop.

    Scripts, modes and records live here, not in the server, so they survive
    ``restart()``. Use it as a context manager or call ``start``/``stop``.
    """

    def __init__(self) -> None:
        """Create a stopped fake; ``start`` binds it."""
        self.port = 0
        self.url = ""
        self._book = FaultBook()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    def start(self, port: int = 0) -> None:
        """Serve on ``127.0.0.1:port`` (0: any free port); set ``port`` and ``url``."""
        if self._thread is not None:
            raise RuntimeError("the fake upstream is already running")
        loop = _new_loop()
        thread = threading.Thread(
            target=_run_loop, args=(loop,), name="fake-upstream", daemon=True
        )
        thread.start()
        opened = asyncio.run_coroutine_threadsafe(_open(self._book, _HOST, port), loop)
        try:
            runner, bound = opened.result(timeout=_WAIT_S)
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_WAIT_S)
            raise
        self._loop, self._thread, self._runner = loop, thread, runner
        self.port = bound
        self.url = f"http://{_HOST}:{bound}"

    def stop(self) -> None:
        """Stop serving and kill in-flight connections; a no-op when stopped."""
        loop, thread, runner = self._loop, self._thread, self._runner
        if loop is None or thread is None or runner is None:
            return
        self._loop = self._thread = self._runner = None
        try:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(_WAIT_S)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_WAIT_S)

    def restart(self) -> None:
        """Stop, killing in-flight connections, and serve again on the same port."""
        port = self.port
        self.stop()
        self.start(port)

    def script(self, model: str, *faults: str) -> None:
        """Queue fault strings for ``model``; each coming request consumes one."""
        self._book.script(model, faults)

    def set_mode(self, model: str, fault: str | None) -> None:
        """Apply ``fault`` to ``model`` whenever its script is empty; None clears."""
        self._book.set_mode(model, fault)

    def records(self, model: str | None = None) -> list[Record]:
        """Return the requests received, oldest first, for ``model`` if given."""
        return self._book.records(model)

    def count(self, model: str) -> int:
        """Return how many requests named ``model`` (fault suffix stripped)."""
        return self._book.count(model)

    def reset(self) -> None:
        """Forget records, scripts, modes and once-state."""
        self._book.reset()

    def __enter__(self) -> Self:
        """Start serving on a free port unless already started."""
        if self._thread is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop serving."""
        self.stop()


async def _serve_until_signal(host: str, port: int) -> int:
    runner, bound = await _open(FaultBook(), host, port)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    sys.stdout.write(f"fake upstream listening on http://{host}:{bound}\n")
    sys.stdout.flush()
    try:
        await stopping.wait()
    finally:
        with contextlib.suppress(Exception):
            await runner.cleanup()
    return 0


def run_forever(host: str, port: int) -> int:
    """Serve a fake upstream on ``host:port`` until SIGINT or SIGTERM; return 0."""
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        return runner.run(_serve_until_signal(host, port))
