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
    from policies.pipeline import Call, Deployment, GuardedStream

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
    ctx = RequestContext(scope, runtime.clock)
    try:
        await _handle(runtime, ctx, receive, send)
    finally:
        runtime.on_request_end(ctx)


async def _handle(
    runtime: Runtime, ctx: RequestContext, receive: Receive, send: Send
) -> None:
    try:
        tenant = authenticate(runtime, ctx)
        body = await read_body(receive, runtime.config.server.max_body_mib)
        payload, chat = wire.decode_chat(body)
        ctx.alias = chat.model
        ctx.stream = bool(chat.stream)
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
    exchange = Exchange(runtime, ctx, route, (payload, chat), send)
    try:
        await _with_disconnect_watch(receive, exchange.serve())
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


class Exchange:
    """One chat request on its way through the chain, with what it needs to call."""

    __slots__ = ("chat", "ctx", "deadline", "include_usage", "payload", "route", "send")

    def __init__(
        self,
        runtime: Runtime,
        ctx: RequestContext,
        route: Route,
        body: tuple[dict[str, Any], wire.ChatBody],
        send: Send,
    ) -> None:
        """Start the request's deadline now."""
        self.ctx = ctx
        self.route = route
        self.payload, self.chat = body
        self.send = send
        budget = deadline_budget(runtime.config.server.deadline_s, ctx.headers)
        self.deadline = Deadline(runtime.clock, budget)
        options = self.chat.stream_options
        self.include_usage = bool(options and options.include_usage)

    def make_call(self, dep: Deployment, prefill: str = "") -> Call:
        """Return the attempt function for ``dep`` (a continuation if ``prefill``)."""

        def call() -> Awaitable[ChatResponse | ChatStream]:
            left = self.deadline.left()
            request = ChatRequest(
                payload=self.payload,
                model=dep.model,
                stream=bool(self.chat.stream),
                include_usage=self.include_usage,
                limits=AttemptLimits(
                    connect_s=min(dep.timeouts.connect_s, left),
                    read_s=min(dep.timeouts.read_s, left),
                ),
                prefill=prefill,
            )
            if request.stream:
                return dep.provider.open_stream(request)
            return dep.provider.complete(request)

        return call

    async def serve(self) -> None:
        """Run the chain and write the answer, the tail rung, or the final error."""
        try:
            dep, answer = await run_chain(
                self.route.deployments,
                self.make_call,
                deadline=self.deadline,
                trail=self.ctx.trail,
            )
        except ChainExhaustedError as exc:
            await self._exhausted(exc)
            return
        except (UpstreamError, DeadlineExceededError) as exc:
            await _send_error(self.send, self.ctx, exc, final=True)
            return
        self.ctx.served_by = dep.name
        self.ctx.degraded = "fallback" if dep is not self.route.deployments[0] else None
        if isinstance(answer, ChatResponse):
            self.ctx.usage = answer.usage
            await _send_json(self.send, self.ctx, 200, answer.body, [])
        else:
            await self._pump(answer)
            self.ctx.usage = answer.usage

    async def _exhausted(self, exc: ChainExhaustedError) -> None:
        static = self.route.static
        if static is None:
            await _send_error(self.send, self.ctx, exc.final, final=True)
            return
        self.ctx.served_by = "@static"
        self.ctx.degraded = "static"
        self.ctx.trail.setdefault("@static", []).append("200")
        if self.chat.stream:
            await _start_stream(self.send, self.ctx)
            for frame in wire.static_stream(self.route.alias, static):
                await _body(self.send, frame)
            await _body(self.send, DONE, more=False)
        else:
            body = wire.static_completion(self.route.alias, static)
            await _send_json(self.send, self.ctx, 200, body, [])

    async def _pump(self, stream: GuardedStream) -> None:
        """Forward a stream; after the first byte, failures continue or go in-band."""
        send = self.send
        await _start_stream(send, self.ctx)
        delivered = ""
        current: GuardedStream | None = stream
        while current is not None:
            failed = current
            try:
                async for frame in failed:
                    await _body(send, frame)
            except GatewayError as exc:
                delivered += failed.text
                cause = exc
            else:
                await _body(send, DONE, more=False)
                return
            finally:
                await failed.aclose()
            current = await self._continuation(failed, delivered)
            if current is None:
                await _body(send, stream_error_frame(cause), more=False)

    async def _continuation(
        self, failed: GuardedStream, delivered: str
    ) -> GuardedStream | None:
        """Continue the answer on the next rung, if it accepts an assistant prefill.

        A deployment without prefill is never sent one: the client then gets the
        clean in-band error of the real cause.
        """
        deployments = self.route.deployments
        names = [d.name for d in deployments]
        rest = deployments[names.index(failed.deployment) + 1 :]
        if not rest or not rest[0].provider.supports_prefill or not delivered:
            return None
        capable = [d for d in rest if d.provider.supports_prefill]
        try:
            dep, answer = await run_chain(
                capable,
                lambda d: self.make_call(d, delivered),
                deadline=self.deadline,
                trail=self.ctx.trail,
            )
        except GatewayError:
            return None
        assert not isinstance(answer, ChatResponse)  # noqa: S101 - streams beget streams
        await _body(self.send, f": fusebox continued on {dep.name}\n\n".encode())
        return answer.without_role_head()


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
    ctx.status = 200
    ctx.first_byte_at = ctx.clock.monotonic()
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
    ctx.status = status
    ctx.first_byte_at = ctx.clock.monotonic()
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_error(
    send: Send, ctx: RequestContext, exc: GatewayError, *, final: bool
) -> None:
    extra = [
        (k.encode(), v.encode()) for k, v in error_headers(exc, final=final).items()
    ]
    await _send_json(send, ctx, status_of(exc), render(exc), extra)
