"""The Litestar application: routes, lifespan, and the ``Runtime`` on ``app.state``.

``create_app(config)`` is the one entry point for the server and for tests.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from litestar import Litestar, MediaType, Request, Response, asgi, get
from litestar.exceptions import HTTPException
from litestar.types import Receive, Scope, Send

from gateway.chat import handle_chat, serve_request
from gateway.embeddings import EMBEDDINGS
from gateway.errors import render
from gateway.lifecycle import process_lifespan
from gateway.messages import COUNT_TOKENS, MESSAGES
from gateway.ops import OPS_ROUTES
from gateway.reload import Reloader, reload_config
from gateway.request import RequestContext, authenticate
from gateway.runtime import Runtime
from providers.errors import ClientError, GatewayError, InvalidRequestError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from opentelemetry.trace import TracerProvider

    from gateway.config import GatewayConfig
    from gateway.dialect import Reader
    from policies.clock import Clock

log = logging.getLogger("fusebox")


def _runtime(scope: Scope | Request[Any, Any, Any]) -> Runtime:
    app = scope["app"] if isinstance(scope, dict) else scope.app
    runtime: Runtime = app.state.runtime
    return runtime


@asgi("/v1/chat/completions", copy_scope=False)
async def chat_completions(scope: Scope, receive: Receive, send: Send) -> None:
    """``POST /v1/chat/completions``: plain and SSE."""
    if scope.get("method") != "POST":
        await _method_not_allowed(send)
        return
    runtime = _runtime(scope)
    with runtime.in_flight:  # a reload closes this runtime only once it is idle
        await handle_chat(runtime, scope, receive, send)


async def _serve(scope: Scope, receive: Receive, send: Send, reader: Reader) -> None:
    if scope.get("method") != "POST":
        await _method_not_allowed(send)
        return
    runtime = _runtime(scope)
    with runtime.in_flight:
        await serve_request(runtime, scope, receive, send, reader)


@asgi("/v1/messages", copy_scope=False)
async def messages(scope: Scope, receive: Receive, send: Send) -> None:
    """``POST /v1/messages``: the Anthropic Messages API, plain and SSE."""
    await _serve(scope, receive, send, MESSAGES)


@asgi("/v1/messages/count_tokens", copy_scope=False)
async def count_tokens(scope: Scope, receive: Receive, send: Send) -> None:
    """``POST /v1/messages/count_tokens``: forwarded to the chain's Anthropic rungs."""
    await _serve(scope, receive, send, COUNT_TOKENS)


@asgi("/v1/embeddings", copy_scope=False)
async def embeddings(scope: Scope, receive: Receive, send: Send) -> None:
    """``POST /v1/embeddings``: over an embeddings alias's chain."""
    await _serve(scope, receive, send, EMBEDDINGS)


async def _method_not_allowed(send: Send) -> None:
    body = render(
        InvalidRequestError("use POST for this endpoint", code="method_not_allowed")
    )
    await send(
        {
            "type": "http.response.start",
            "status": 405,
            "headers": [(b"content-type", b"application/json"), (b"allow", b"POST")],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


@get("/v1/models", sync_to_thread=False)
def list_models(request: Request[Any, Any, Any]) -> Response[Any]:
    """``GET /v1/models``: the aliases the calling tenant may use."""
    runtime = _runtime(request)
    ctx = RequestContext(request.scope, runtime.clock, endpoint="models")
    try:
        tenant = authenticate(runtime, ctx)
    except ClientError as exc:
        return _error_response(exc)
    created = int(runtime.started_wall)
    data = [
        {"id": alias, "object": "model", "created": created, "owned_by": "fusebox"}
        for alias in runtime.allowed(tenant)
    ]
    return Response(
        content={"object": "list", "data": data},
        headers={"x-request-id": ctx.request_id},
    )


@get("/healthz", sync_to_thread=False, media_type=MediaType.JSON)
def healthz() -> dict[str, str]:
    """``GET /healthz``: liveness from memory; never touches an upstream."""
    return {"status": "ok"}


def _error_response(exc: GatewayError) -> Response[bytes]:
    return Response(
        content=render(exc), status_code=exc.http_status, media_type=MediaType.JSON
    )


def _http_exception(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Render Litestar's own errors (404 route, 405, 500) in OpenAI's format."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status >= 500:  # noqa: PLR2004
        log.error("unhandled error", exc_info=exc)
        message = "internal error in the gateway"
    else:
        message = exc.detail if isinstance(exc, HTTPException) else str(exc)
    err: GatewayError
    if status >= 500:  # noqa: PLR2004
        err = GatewayError(message)
    else:
        err = ClientError(message, code="not_found" if status == 404 else None)  # noqa: PLR2004
    body = render(err)
    return Response(content=body, status_code=status, media_type=MediaType.JSON)


class Gateway:
    """The ASGI entry point: the model endpoints go straight to their handlers.

    They are raw ASGI handlers already; skipping Litestar's router and middleware
    for them saves a measurable share of the per-request CPU (see benchmarks/).
    Everything else, lifespan included, is the Litestar app, whose attributes this
    object passes through.
    """

    __slots__ = ("_fast", "litestar")

    def __init__(self, litestar: Litestar) -> None:
        """Wrap ``litestar``."""
        self.litestar = litestar
        self._fast = {
            str(handler.paths.copy().pop()): handler.fn for handler in _MODEL_ROUTES
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Dispatch one ASGI call."""
        if scope["type"] == "http":  # type: ignore[comparison-overlap]
            handler = self._fast.get(scope["path"])
            if handler is not None:
                scope["app"] = self.litestar
                await handler(scope, receive, send)
                return
        await self.litestar(scope, receive, send)

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401 - a transparent proxy
        """Pass everything else (``state``, ``debug``, ...) to the Litestar app."""
        return getattr(self.litestar, name)


_MODEL_ROUTES = (chat_completions, messages, count_tokens, embeddings)


def create_app(
    config: GatewayConfig,
    *,
    clock: Clock | None = None,
    environ: Mapping[str, str] | None = None,
    config_path: str | None = None,
    tracer_provider: TracerProvider | None = None,
) -> Gateway:
    """Build the app; its runtime is created now and its pools closed on shutdown.

    ``config_path`` is the file a reload re-reads (default: ``$FUSEBOX_CONFIG``);
    ``tracer_provider``, if given, receives the traces instead of ``[otel]``.
    """
    runtime = Runtime(
        config, clock=clock, environ=environ, tracer_provider=tracer_provider
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await app.state.runtime.start()
        app.state.runtime.started = True
        try:
            yield
        finally:
            await app.state.runtime.aclose()

    app = Litestar(
        route_handlers=[
            chat_completions,
            messages,
            count_tokens,
            embeddings,
            list_models,
            healthz,
            *OPS_ROUTES,
            reload_config,
        ],
        lifespan=[lifespan, process_lifespan],
        exception_handlers={Exception: _http_exception},
        openapi_config=None,
        logging_config=None,
    )
    app.state.runtime = runtime
    app.state.reloader = Reloader(config_path, environ)
    return Gateway(app)
