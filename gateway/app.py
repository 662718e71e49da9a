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

from gateway.chat import handle_chat
from gateway.errors import render
from gateway.request import RequestContext, authenticate
from gateway.runtime import Runtime
from providers.errors import ClientError, GatewayError, InvalidRequestError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from gateway.config import GatewayConfig
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
    await handle_chat(_runtime(scope), scope, receive, send)


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
    err = ClientError(message, code="not_found" if status == 404 else None)  # noqa: PLR2004
    body = render(err)
    return Response(content=body, status_code=status, media_type=MediaType.JSON)


def create_app(
    config: GatewayConfig,
    *,
    clock: Clock | None = None,
    environ: Mapping[str, str] | None = None,
) -> Litestar:
    """Build the app; its runtime is created now and its pools closed on shutdown."""
    runtime = Runtime(config, clock=clock, environ=environ)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await app.state.runtime.aclose()

    app = Litestar(
        route_handlers=[chat_completions, list_models, healthz],
        lifespan=[lifespan],
        exception_handlers={Exception: _http_exception},
        openapi_config=None,
        logging_config=None,
    )
    app.state.runtime = runtime
    return app
