"""``POST /v1/chat/completions``: the outermost layer of the onion for chat.

auth → tenant, body limit, decode, alias → the tenant's chain, tenant bulkhead,
deadline, then fallback over the chain (``policies.fallback``), then the tail
rungs (``@static``), and the answer written as JSON or SSE. A raw ASGI handler:
the hot path pays for nothing it does not use.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final

from gateway import wire
from gateway.errors import error_headers, render, status_of, stream_error_frame
from gateway.request import RequestContext, authenticate, read_body
from policies.deadline import Deadline, deadline_budget
from policies.fallback import ChainExhaustedError, describe, run_chain
from providers.errors import (
    DeadlineExceededError,
    GatewayError,
    InvalidRequestError,
    ModelNotAllowedError,
    TenantQuotaError,
    UnknownModelError,
    UpstreamError,
)
from providers.types import AttemptLimits, ChatRequest, ChatResponse, ChatStream

if TYPE_CHECKING:
    from collections.abc import Awaitable, Coroutine

    from litestar.types import Receive, Scope, Send

    from gateway.runtime import Route, Runtime
    from policies.pipeline import Answer, Call, Deployment, GuardedStream

_SSE_HEADERS: Final = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]
_JSON: Final = (b"content-type", b"application/json")
DONE: Final = b"data: [DONE]\n\n"


async def handle_chat(
    runtime: Runtime, scope: Scope, receive: Receive, send: Send
) -> None:
    """Serve one chat completion; never raises to the server."""
    ctx = RequestContext(scope)
    try:
        tenant = authenticate(runtime, ctx)
        body = await read_body(receive, runtime.config.server.max_body_mib)
        payload, chat = wire.decode_chat(body)
        route = _route(runtime, tenant, chat.model)
    except GatewayError as exc:
        await _send_error(send, ctx, exc, final=False)
        return
    limiter = runtime.limiters[tenant]
    if not limiter.try_acquire():
        await _send_error(
            send,
            ctx,
            TenantQuotaError(f"tenant {tenant} has too many requests in flight"),
            final=False,
        )
        return
    try:
        await _with_disconnect_watch(
            receive, _serve(runtime, ctx, route, payload, chat, send)
        )
    finally:
        limiter.release()


def _route(runtime: Runtime, tenant: str, alias: str) -> Route:
    route = runtime.routes.get((tenant, alias))
    if route is None:
        raise UnknownModelError(f"the model `{alias}` does not exist", param="model")
    allowed = runtime.config.tenants[tenant].models
    if allowed is not None and alias not in allowed:
        raise ModelNotAllowedError(
            f"this key may not use the model `{alias}`", param="model"
        )
    if runtime.config.models[alias].endpoint != "chat":
        raise InvalidRequestError(
            f"the model `{alias}` serves /v1/embeddings only", param="model"
        )
    return route


class _Watch:
    """Shared flags between a request and its disconnect watcher."""

    __slots__ = ("done", "gone")

    def __init__(self) -> None:
        self.done = False
        self.gone = False


async def _with_disconnect_watch(
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


async def _serve(
    runtime: Runtime,
    ctx: RequestContext,
    route: Route,
    payload: dict[str, Any],
    chat: wire.ChatBody,
    send: Send,
) -> None:
    deadline = Deadline(
        runtime.clock, deadline_budget(runtime.config.server.deadline_s, ctx.headers)
    )
    include_usage = bool(chat.stream_options and chat.stream_options.include_usage)

    def make_call(dep: Deployment) -> Call:
        def call() -> Awaitable[ChatResponse | ChatStream]:
            left = deadline.left()
            request = ChatRequest(
                payload=payload,
                model=dep.model,
                stream=bool(chat.stream),
                include_usage=include_usage,
                limits=AttemptLimits(
                    connect_s=min(dep.timeouts.connect_s, left),
                    read_s=min(dep.timeouts.read_s, left),
                ),
            )
            if request.stream:
                return dep.provider.open_stream(request)
            return dep.provider.complete(request)

        return call

    try:
        dep, answer = await run_chain(
            route.deployments, make_call, deadline=deadline, trail=ctx.trail
        )
    except ChainExhaustedError as exc:
        await _exhausted(send, ctx, route, chat, exc)
        return
    except (UpstreamError, DeadlineExceededError) as exc:
        await _send_error(send, ctx, exc, final=True)
        return
    ctx.served_by = dep.name
    ctx.degraded = "fallback" if dep is not route.deployments[0] else None
    await _send_answer(send, ctx, answer)


async def _exhausted(
    send: Send,
    ctx: RequestContext,
    route: Route,
    chat: wire.ChatBody,
    exc: ChainExhaustedError,
) -> None:
    if route.static is not None:
        ctx.served_by = "@static"
        ctx.degraded = "static"
        ctx.trail.setdefault("@static", []).append("200")
        if chat.stream:
            await _start_stream(send, ctx)
            for frame in wire.static_stream(route.alias, route.static):
                await _body(send, frame)
            await _body(send, DONE, more=False)
        else:
            body = wire.static_completion(route.alias, route.static)
            await _send_json(send, ctx, 200, body, [])
        return
    await _send_error(send, ctx, exc.final, final=True)


async def _send_answer(send: Send, ctx: RequestContext, answer: Answer) -> None:
    if isinstance(answer, ChatResponse):
        await _send_json(send, ctx, 200, answer.body, [])
        return
    await _pump(send, ctx, answer)


async def _pump(send: Send, ctx: RequestContext, stream: GuardedStream) -> None:
    """Forward a stream; after the first byte, failures go in-band."""
    await _start_stream(send, ctx)
    try:
        async for frame in stream:
            await _body(send, frame)
    except GatewayError as exc:
        await _body(send, stream_error_frame(exc), more=False)
        return
    finally:
        await stream.aclose()
    await _body(send, DONE, more=False)


def _answer_headers(ctx: RequestContext) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"x-request-id", ctx.request_id.encode()),
        (b"x-fusebox-attempts", describe(ctx.trail).encode()),
    ]
    if ctx.served_by:
        headers.append((b"x-fusebox-served-by", ctx.served_by.encode()))
    if ctx.degraded:
        headers.append((b"x-fusebox-degraded", ctx.degraded.encode()))
    return headers


async def _start_stream(send: Send, ctx: RequestContext) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [*_SSE_HEADERS, *_answer_headers(ctx)],
        }
    )


async def _body(send: Send, data: bytes, *, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": more})


async def _send_json(
    send: Send,
    ctx: RequestContext,
    status: int,
    body: bytes,
    extra: list[tuple[bytes, bytes]],
) -> None:
    headers = [_JSON, *_answer_headers(ctx), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_error(
    send: Send, ctx: RequestContext, exc: GatewayError, *, final: bool
) -> None:
    extra = [
        (k.encode(), v.encode()) for k, v in error_headers(exc, final=final).items()
    ]
    await _send_json(send, ctx, status_of(exc), render(exc), extra)
