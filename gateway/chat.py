"""``POST /v1/chat/completions``: the outermost layer of the onion for chat.

auth → tenant, body limit, decode, alias → the tenant's chain, tenant bulkhead,
deadline, then fallback over the chain (``policies.fallback``), then the tail
rungs (``@static``), and the answer written as JSON or SSE. A raw ASGI handler:
the hot path pays for nothing it does not use. ``/v1/messages`` and
``/v1/embeddings`` run the same machinery (``serve_request``) in their own
dialect (``gateway.dialect``).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

from gateway.dialect import CHAT
from gateway.disconnect import run_until_disconnect
from gateway.request import RequestContext, authenticate, read_body
from gateway.respond import send_body, send_error, send_json, start_stream
from policies.deadline import Deadline, deadline_budget
from policies.fallback import ChainExhaustedError, run_chain
from providers.errors import (
    AllRefusedError,
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
    from collections.abc import Awaitable

    from litestar.types import Receive, Scope, Send

    from gateway.cache import CacheLookup
    from gateway.dialect import Dialect, Reader
    from gateway.runtime import Route, Runtime
    from policies.pipeline import Call, Deployment, GuardedStream

#: How long past its deadline a request may still spend writing to its client.
SEND_GRACE_S: Final = 1.0


async def handle_chat(
    runtime: Runtime, scope: Scope, receive: Receive, send: Send
) -> None:
    """Serve one chat completion; never raises to the server."""
    await serve_request(runtime, scope, receive, send, CHAT)


async def serve_request(
    runtime: Runtime, scope: Scope, receive: Receive, send: Send, reader: Reader
) -> None:
    """Serve one request of ``reader``'s endpoint; never raises to the server."""
    ctx = RequestContext(scope, runtime.clock, endpoint=reader.endpoint)
    if runtime.tracing is not None:
        ctx.attempt_log = []
    try:
        await _handle(runtime, ctx, receive, send, reader)
    finally:
        runtime.on_request_end(ctx)


async def _handle(
    runtime: Runtime,
    ctx: RequestContext,
    receive: Receive,
    send: Send,
    reader: Reader,
) -> None:
    try:
        tenant = authenticate(runtime, ctx)
        body = await read_body(receive, runtime.config.server.max_body_mib)
        dialect = reader.decode(body)
        ctx.alias = dialect.alias
        ctx.stream = dialect.stream
        route = dialect.fit(_route(runtime, tenant, dialect.alias, reader.serves))
    except GatewayError as exc:
        await send_error(send, ctx, exc, final=False, style=reader)
        return
    limiter = runtime.limiters[tenant]
    if not limiter.try_acquire():
        await send_error(
            send,
            ctx,
            TenantQuotaError(f"tenant {tenant} has too many requests in flight"),
            final=False,
            style=reader,
        )
        return
    exchange = Exchange(runtime, ctx, route, dialect, send)
    try:
        work = runtime.idempotency.serve(tenant, exchange)  # around Exchange.serve
        await run_until_disconnect(receive, work)
    finally:
        limiter.release()


def _route(runtime: Runtime, tenant: str, alias: str, serves: str) -> Route:
    route = runtime.routes.get((tenant, alias))
    if route is None:
        raise UnknownModelError(f"the model `{alias}` does not exist", param="model")
    allowed = runtime.config.tenants[tenant].models
    if allowed is not None and alias not in allowed:
        raise ModelNotAllowedError(
            f"this key may not use the model `{alias}`", param="model"
        )
    if runtime.config.models[alias].endpoint != serves:
        raise InvalidRequestError(_WRONG_ENDPOINT[serves].format(alias), param="model")
    return route


_WRONG_ENDPOINT: Final = {
    "chat": "the model `{}` serves /v1/embeddings only",
    "embeddings": "the model `{}` is a chat model: /v1/embeddings needs an "
    'alias declared with endpoint = "embeddings"',
}


class Exchange:
    """One request on its way through the chain, with what it needs to call.

    Its ``dialect`` (``gateway.dialect``) says how the endpoint calls a
    deployment and spells answers, stream frames and errors.
    """

    __slots__ = (
        "answer",
        "cache",
        "ctx",
        "deadline",
        "dialect",
        "include_usage",
        "keeps_answer",
        "payload",
        "route",
        "send",
        "stream",
    )

    def __init__(
        self,
        runtime: Runtime,
        ctx: RequestContext,
        route: Route,
        dialect: Dialect,
        send: Send,
    ) -> None:
        """Start the request's deadline now."""
        self.ctx = ctx
        self.route = route
        self.dialect = dialect
        self.payload = dialect.payload
        self.stream = dialect.stream
        self.include_usage = dialect.include_usage
        self.send = send
        budget = deadline_budget(runtime.config.server.deadline_s, ctx.headers)
        self.deadline = Deadline(runtime.clock, budget)
        self.cache: CacheLookup | None = runtime.cache.lookup(
            ctx, route, self.payload, dialect.replayable
        )
        #: Set by idempotency: then ``answer`` gets the live answer's completion.
        self.keeps_answer = False
        self.answer: bytes | None = None

    def make_call(self, dep: Deployment, prefill: str = "") -> Call:
        """Return the attempt function for ``dep`` (a continuation if ``prefill``)."""

        def call() -> Awaitable[ChatResponse | ChatStream]:
            left = self.deadline.left()
            request = ChatRequest(
                payload=self.payload,
                model=dep.model,
                stream=self.stream,
                include_usage=self.include_usage,
                limits=AttemptLimits(
                    connect_s=min(dep.timeouts.connect_s, left),
                    read_s=min(dep.timeouts.read_s, left),
                ),
                prefill=prefill,
            )
            return self.dialect.call(dep, request)

        return call

    async def serve(self) -> None:
        """Serve the request, within its deadline even if the client stops reading."""
        try:
            async with asyncio.timeout(self.deadline.left() + SEND_GRACE_S):
                await self._serve()
        except TimeoutError:
            # Only a client that stopped reading gets here: everything upstream
            # is bounded by the deadline already. Unwinding freed its resources.
            if self.ctx.status is None:
                exc = DeadlineExceededError("the request's deadline ran out")
                await send_error(
                    self.send, self.ctx, exc, final=True, style=self.dialect
                )

    async def _serve(self) -> None:
        """Run the chain and write the answer, the tail rung, or the final error."""
        if self.cache is not None and await self._from_cache(stale=False):
            return
        try:
            dep, answer = await run_chain(
                self.route.deployments,
                self.make_call,
                deadline=self.deadline,
                trail=self.ctx.trail,
                log=self.ctx.attempt_log,
            )
        except ChainExhaustedError as exc:
            await self._exhausted(exc)
            return
        except DeadlineExceededError as exc:
            # The local rungs (@cache, @static) answer at once: still worth trying.
            await self._exhausted(ChainExhaustedError(exc, [exc]))
            return
        except UpstreamError as exc:
            await send_error(self.send, self.ctx, exc, final=True, style=self.dialect)
            return
        self.ctx.served_by = dep.name
        self.ctx.degraded = "fallback" if dep is not self.route.deployments[0] else None
        self.ctx.response_model = answer.model
        if isinstance(answer, ChatResponse):
            self.ctx.usage = answer.usage
            await send_json(self.send, self.ctx, 200, answer.body, [])
            self._keep(answer.body)
        else:
            await self._forward(answer)

    async def _forward(self, stream: GuardedStream) -> None:
        whole = await self._pump(stream)
        self.ctx.usage = stream.usage
        if whole is not None and (self.cache is not None or self.keeps_answer):
            wall = self.ctx.clock.wall()
            self._keep(self.dialect.assemble(*whole, stream.model, wall))

    def _keep(self, body: bytes | None) -> None:
        """Keep a live answer for idempotency and the cache (stored after sending)."""
        self.answer = body
        if body is not None and self.cache is not None:
            self.cache.keep(body)

    async def _from_cache(self, *, stale: bool) -> bool:
        """Answer from the cache: fresh before the chain, or the ``@cache`` rung."""
        hit = await self.cache.hit(self.ctx, stale=stale) if self.cache else None
        if hit is not None:
            await self.serve_stored(hit.body)
        return hit is not None

    async def serve_stored(self, body: bytes) -> None:
        """Send a stored answer (the dialect's JSON): as is, or re-streamed."""
        if not self.stream:
            await send_json(self.send, self.ctx, 200, body, [])
            return
        await start_stream(self.send, self.ctx)
        for frame in self.dialect.stored_stream(body):
            await send_body(self.send, frame)
        await send_body(self.send, self.dialect.done, more=False)

    async def fail(self, exc: GatewayError) -> None:
        """Send ``exc`` as this request's answer (before anything else was sent)."""
        await send_error(self.send, self.ctx, exc, final=False, style=self.dialect)

    async def _exhausted(self, exc: ChainExhaustedError) -> None:
        if self.route.has_cache and await self._from_cache(stale=True):
            return
        static = self.route.static
        if static is None:
            if isinstance(exc.final, AllRefusedError) and "@cache" in self.ctx.trail:
                exc.final.message += "; @cache=miss"  # the 503 names every rung
            await send_error(
                self.send, self.ctx, exc.final, final=True, style=self.dialect
            )
            return
        self.ctx.served_by = "@static"
        self.ctx.degraded = "static"
        self.ctx.trail.setdefault("@static", []).append("200")
        if self.stream:
            await start_stream(self.send, self.ctx)
            for frame in self.dialect.static_stream(self.route.alias, static):
                await send_body(self.send, frame)
            await send_body(self.send, self.dialect.done, more=False)
        else:
            body = self.dialect.static_answer(self.route.alias, static)
            await send_json(self.send, self.ctx, 200, body, [])

    async def _pump(self, stream: GuardedStream) -> tuple[str, GuardedStream] | None:
        """Forward a stream; after the first byte, failures continue or go in-band.

        Return the whole text and the stream that ended it, or None if it failed.
        """
        send = self.send
        try:
            await start_stream(send, self.ctx)
        except BaseException:
            await stream.aclose()  # the stream owns a slot and a permit
            raise
        delivered = ""
        current: GuardedStream | None = stream
        while current is not None:
            failed = current
            try:
                async for frame in failed:
                    if out := self.dialect.relay(frame):
                        await send_body(send, out)
            except GatewayError as exc:
                delivered += failed.text
                cause = exc
                # For the log and metrics (the attempts header has gone out).
                self.ctx.trail.setdefault(failed.deployment, []).append("cut")
            else:
                await send_body(send, self.dialect.done, more=False)
                return delivered + failed.text, failed
            finally:
                await failed.aclose()
            current = await self._continuation(failed, delivered)
            if current is None:
                await send_body(send, self.dialect.stream_error(cause), more=False)
        return None

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
                log=self.ctx.attempt_log,
            )
        except GatewayError:
            return None
        assert not isinstance(answer, ChatResponse)  # noqa: S101 - streams beget streams
        try:
            await send_body(
                self.send, f": fusebox continued on {dep.name}\n\n".encode()
            )
        except BaseException:
            await answer.aclose()
            raise
        return answer.without_role_head()
