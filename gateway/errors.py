"""The only place errors become OpenAI-format bodies (and in-band stream events).

Outermost layer of the onion: whatever went wrong below reaches the client here
as ``{"error": {"message", "type", "param", "code"}}`` with the right status.
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
