"""Writing answers to the client: headers every answer carries, JSON and SSE starts.

The outermost layer's output side: ``x-request-id``, ``x-fusebox-served-by``,
``x-fusebox-attempts`` and the degradation headers go on every answer here, and
the request context learns its status and first-byte time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from policies.fallback import describe

if TYPE_CHECKING:
    from litestar.types import Send

    from gateway.dialect import ErrorStyle
    from gateway.request import RequestContext
    from providers.errors import GatewayError

_SSE_HEADERS: Final = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]
_JSON: Final = (b"content-type", b"application/json")


def answer_headers(ctx: RequestContext) -> list[tuple[bytes, bytes]]:
    """Return the headers every answer carries (DESIGN.md §4)."""
    headers = [
        (b"x-request-id", ctx.request_id.encode()),
        # The anthropic SDK reads its ``request_id`` from this one.
        (b"request-id", ctx.request_id.encode()),
        (b"x-fusebox-attempts", describe(ctx.trail).encode()),
    ]
    if ctx.served_by:
        headers.append((b"x-fusebox-served-by", ctx.served_by.encode()))
    if ctx.degraded:
        headers.append((b"x-fusebox-degraded", ctx.degraded.encode()))
    if ctx.cache_age_s is not None:
        headers.append((b"x-fusebox-cache-age", b"%d" % ctx.cache_age_s))
    if ctx.idempotent_replay:
        headers.append((b"x-fusebox-idempotent-replay", b"true"))
    return headers


async def start_stream(send: Send, ctx: RequestContext) -> None:
    """Start a 200 SSE response."""
    ctx.status = 200
    ctx.first_byte_at = ctx.clock.monotonic()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [*_SSE_HEADERS, *answer_headers(ctx)],
        }
    )


async def send_body(send: Send, data: bytes, *, more: bool = True) -> None:
    """Send a piece of the body (the last one with ``more=False``)."""
    await send({"type": "http.response.body", "body": data, "more_body": more})


async def send_json(
    send: Send,
    ctx: RequestContext,
    status: int,
    body: bytes,
    extra: list[tuple[bytes, bytes]],
) -> None:
    """Send a whole JSON answer with its status."""
    headers = [
        _JSON,
        (b"content-length", b"%d" % len(body)),
        *answer_headers(ctx),
        *extra,
    ]
    ctx.status = status
    ctx.first_byte_at = ctx.clock.monotonic()
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_error(
    send: Send,
    ctx: RequestContext,
    exc: GatewayError,
    *,
    final: bool,
    style: ErrorStyle,
) -> None:
    """Send ``exc`` as the answer, in the endpoint's error style."""
    status, body, extra = style.error(exc, final=final)
    await send_json(send, ctx, status, body, extra)
