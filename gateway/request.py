"""Per-request context and the first checks: who is calling, and how much they send."""

from __future__ import annotations

import itertools
import os
from typing import TYPE_CHECKING, Final

from gateway.tenants import resolve_tenant
from providers.errors import AuthError, InvalidRequestError, PayloadTooLargeError

if TYPE_CHECKING:
    from litestar.types import Receive, Scope

    from gateway.runtime import Runtime
    from policies.clock import Clock
    from policies.pipeline import AttemptLog, Trail
    from providers.types import Usage

_PREFIX: Final = os.urandom(4).hex()
_counter = itertools.count(1)
_MIB: Final = 1024 * 1024


def new_request_id() -> str:
    """Return a unique request id (cheap: a per-process prefix and a counter)."""
    return f"req_{_PREFIX}{next(_counter):010x}"


class RequestContext:
    """What the gateway learns about one request as it goes down the onion.

    The request log and the metrics read it once the request has ended
    (``Runtime.on_request_end``); nothing in it is a key, a prompt or a completion.
    """

    __slots__ = (
        "alias",
        "attempt_log",
        "cache_age_s",
        "clock",
        "degraded",
        "endpoint",
        "first_byte_at",
        "headers",
        "idempotent_replay",
        "request_id",
        "response_model",
        "served_by",
        "started",
        "status",
        "stream",
        "tenant",
        "trail",
        "usage",
    )

    def __init__(self, scope: Scope, clock: Clock, endpoint: str = "chat") -> None:
        """Index the request's headers (lower-case names, latin-1 values)."""
        self.clock = clock
        self.headers: dict[str, str] = {
            k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]
        }
        self.request_id = new_request_id()
        self.endpoint = endpoint
        self.started = clock.monotonic()
        self.trail: Trail = {}
        #: Each attempt's times, kept only while tracing is on (``gateway.tracing``).
        self.attempt_log: AttemptLog | None = None
        self.tenant: str | None = None
        self.alias: str | None = None
        self.stream = False
        self.served_by: str | None = None
        #: The model the answering upstream reported.
        self.response_model: str | None = None
        self.degraded: str | None = None
        #: HTTP status sent (200 for a stream, even one that ended in-band).
        self.status: int | None = None
        #: Monotonic time the first response byte went out.
        self.first_byte_at: float | None = None
        self.usage: Usage | None = None
        self.cache_age_s: float | None = None
        #: The answer is a stored one replayed for a repeated ``Idempotency-Key``.
        self.idempotent_replay = False


def bearer_key(headers: dict[str, str]) -> str | None:
    """Return the key from ``Authorization: Bearer KEY`` (or ``x-api-key``)."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, key = auth.partition(" ")
        if scheme.lower() == "bearer" and key.strip():
            return key.strip()
        return None
    return headers.get("x-api-key") or None


def authenticate(runtime: Runtime, ctx: RequestContext) -> str:
    """Return the calling tenant's name, or raise ``AuthError`` (401)."""
    key = bearer_key(ctx.headers)
    if key is None:
        raise AuthError(
            "no API key: send `Authorization: Bearer <key>`", code="missing_api_key"
        )
    tenant = resolve_tenant(runtime.keys, key)
    if tenant is None:
        raise AuthError("the API key is not valid", code="invalid_api_key")
    ctx.tenant = tenant
    return tenant


async def read_body(receive: Receive, max_mib: float) -> bytes:
    """Read the whole request body, refusing more than ``max_mib`` (413)."""
    limit = int(max_mib * _MIB)
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidRequestError("the client went away")
        chunk: bytes = message.get("body", b"")  # type: ignore[assignment]
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(
                f"the request body is larger than {max_mib:g} MiB"
            )
        parts.append(chunk)
        if not message.get("more_body", False):
            break
    return parts[0] if len(parts) == 1 else b"".join(parts)
