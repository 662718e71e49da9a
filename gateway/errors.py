"""The only place errors become client bodies (and in-band stream events).

Outermost layer of the onion: whatever went wrong below reaches the client here
as ``{"error": {"message", "type", "param", "code"}}`` with the right status, or,
on the Anthropic endpoints, as ``{"type": "error", "error": {"type", "message"}}``.
"""

from __future__ import annotations

import math
from typing import Final

import msgspec

from providers.errors import (
    ClientError,
    GatewayError,
    RejectedError,
    TenantQuotaError,
    UpstreamBadRequestError,
    UpstreamError,
    UpstreamRateLimitError,
)

_encode: Final = msgspec.json.Encoder().encode
#: A tenant over its concurrency may retry as soon as one of its calls ends.
TENANT_RETRY_AFTER_S: Final = 1.0


class ErrorBody(msgspec.Struct):
    """OpenAI's ``Error`` object: every key present, nulls included."""

    message: str
    type: str
    param: str | None
    code: str | None


class ErrorEnvelope(msgspec.Struct):
    """OpenAI's ``ErrorResponse``."""

    error: ErrorBody


def error_body(exc: GatewayError) -> ErrorBody:
    """Describe ``exc`` as OpenAI's error object."""
    param: str | None = None
    code = exc.code
    error_type = exc.error_type
    if isinstance(exc, ClientError):
        param = exc.param
        code = exc.client_code or code
    elif isinstance(exc, UpstreamBadRequestError):
        param = exc.param
        code = exc.upstream_code or code
        error_type = exc.upstream_type or error_type
    elif isinstance(exc, UpstreamError) and exc.upstream_code and exc.http_status < 500:  # noqa: PLR2004
        code = exc.upstream_code
    return ErrorBody(message=exc.message, type=error_type, param=param, code=code)


def status_of(exc: GatewayError) -> int:
    """Return the HTTP status the client gets for ``exc``."""
    if isinstance(exc, UpstreamBadRequestError) and exc.status in {400, 413, 422}:
        return exc.status
    return exc.http_status


def error_headers(exc: GatewayError, *, final: bool) -> dict[str, str]:
    """Return ``Retry-After`` / ``x-should-retry`` for ``exc``.

    ``final`` marks an error after Fusebox did the retrying a client SDK would
    do: the SDK is told not to retry, except after a local refusal (503), where
    ``Retry-After`` says when trying again makes sense.
    """
    headers: dict[str, str] = {}
    wait: float | None = None
    if isinstance(exc, RejectedError) or (
        isinstance(exc, UpstreamRateLimitError) and exc.retry_after_s is not None
    ):
        wait = exc.retry_after_s
    elif isinstance(exc, TenantQuotaError):
        wait = TENANT_RETRY_AFTER_S
    if wait is not None:
        headers["retry-after"] = str(max(1, math.ceil(wait)))
    if final and not isinstance(exc, RejectedError):
        headers["x-should-retry"] = "false"
    return headers


def render(exc: GatewayError) -> bytes:
    """Return the JSON body for ``exc``."""
    return _encode(ErrorEnvelope(error=error_body(exc)))


def stream_error_frame(exc: GatewayError) -> bytes:
    """Return the in-band SSE error event sent after a stream has started."""
    return b"data: " + render(exc) + b"\n\n"


# ---------------------------------------------------------- the Anthropic format

#: Anthropic's ``error.type`` for each status the gateway answers with.
_ANTHROPIC_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_ANTHROPIC_KNOWN: Final = frozenset(_ANTHROPIC_TYPES.values()) | {"billing_error"}
_OVERLOAD_STATUSES: Final = frozenset({503, 529})
_OVERLOAD_CODES: Final = frozenset({"overloaded_error", "overloaded"})
HTTP_OVERLOADED: Final = 529


class AnthropicErrorBody(msgspec.Struct):
    """Anthropic's error object."""

    type: str
    message: str


class AnthropicErrorEnvelope(msgspec.Struct, tag="error", tag_field="type"):
    """Anthropic's error answer: ``{"type": "error", "error": {...}}``."""

    error: AnthropicErrorBody


def anthropic_status(exc: GatewayError) -> tuple[int, str]:
    """Return the status and Anthropic ``error.type`` the client gets for ``exc``.

    An upstream overload (503, 529) stays an overload (529 ``overloaded_error``,
    the anthropic SDK's ``OverloadedError``) instead of OpenAI's 502.
    """
    status = status_of(exc)
    if isinstance(exc, UpstreamError) and status == 502 and _overloaded(exc):  # noqa: PLR2004
        return HTTP_OVERLOADED, "overloaded_error"
    fallback = "api_error" if status >= 500 else "invalid_request_error"  # noqa: PLR2004
    return status, _ANTHROPIC_TYPES.get(status, fallback)


def _overloaded(exc: UpstreamError) -> bool:
    return exc.status in _OVERLOAD_STATUSES or exc.upstream_code in _OVERLOAD_CODES


def render_anthropic(exc: GatewayError) -> tuple[int, bytes]:
    """Return the status and Anthropic-format JSON body for ``exc``."""
    status, kind = anthropic_status(exc)
    body = AnthropicErrorEnvelope(AnthropicErrorBody(type=kind, message=exc.message))
    return status, _encode(body)


def anthropic_stream_error_frame(exc: GatewayError) -> bytes:
    """Return the ``event: error`` that ends a started Anthropic stream.

    An upstream's own error type (``overloaded_error`` from a Claude stream)
    is kept; anything else is typed by its status.
    """
    code = exc.upstream_code if isinstance(exc, UpstreamError) else None
    kind = code if code in _ANTHROPIC_KNOWN else anthropic_status(exc)[1]
    body = AnthropicErrorEnvelope(AnthropicErrorBody(type=kind, message=exc.message))
    return b"event: error\ndata: " + _encode(body) + b"\n\n"
