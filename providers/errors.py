"""The error taxonomy every layer of the onion speaks.

Providers raise these (mapped once, in ``providers._http`` and each adapter's error
mapper); policies read their class attributes instead of walking ``isinstance``
ladders; only ``gateway.errors`` renders them for clients.

```
GatewayError
  ConfigError                  startup / reload only
  ClientError                  4xx to the caller; never retried or counted
    AuthError 401, ModelNotAllowedError 403, UnknownModelError 404,
    InvalidRequestError 400, PayloadTooLargeError 413, IdempotencyConflictError 422,
    TenantQuotaError 429
  UpstreamError(deployment)    one attempt failed
    UpstreamTimeoutError       not retried, failover, counts (slow)
    UpstreamConnectError       connect error / reset before headers: retry, failover,
                               counts
    UpstreamUnavailableError   5xx / 529: retry, failover, counts
    UpstreamRateLimitError     429 + retry_after_s: pause, failover, not counted
    UpstreamAuthError          401/403/404 from upstream: failover, counts
    UpstreamProtocolError      bad JSON / SSE: retry, failover, counts
    UpstreamContextLengthError 400 context_length_exceeded: failover, uncounted
    UpstreamBadRequestError    other 400/413/422: back to the client as is
    UpstreamStreamCutError     failure after content reached the client
  RejectedError                local decision, no upstream call; failover, not counted
    CircuitOpenError, BulkheadFullError, RetryBudgetError, DeploymentPausedError,
    AllRefusedError            503 + Retry-After: the chain was refused end to end
  DeadlineExceededError        504
```
"""

from __future__ import annotations

from typing import ClassVar


class GatewayError(Exception):
    """Base of every error Fusebox raises on purpose."""

    http_status: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"
    code: ClassVar[str | None] = None
    retryable: ClassVar[bool] = False
    failover: ClassVar[bool] = False
    counts_as_failure: ClassVar[bool] = False
    #: The token written into ``x-fusebox-attempts`` for this outcome.
    token: ClassVar[str] = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(GatewayError):
    """The configuration file is invalid; carries every problem found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class ClientError(GatewayError):
    """The caller's request cannot be served as sent."""

    http_status = 400
    error_type = "invalid_request_error"

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.param = param
        self.client_code = code


class AuthError(ClientError):
    """No key, or a key no tenant owns."""

    http_status = 401
    code = "invalid_api_key"


class ModelNotAllowedError(ClientError):
    """The tenant may not call this alias."""

    http_status = 403
    error_type = "permission_error"
    code = "model_not_allowed"


class UnknownModelError(ClientError):
    """No alias of that name."""

    http_status = 404
    code = "model_not_found"


class InvalidRequestError(ClientError):
    """Malformed JSON, a missing field or a field of the wrong type."""

    code = "invalid_request"


class PayloadTooLargeError(ClientError):
    """The body is larger than ``server.max_body_mib``."""

    http_status = 413
    code = "request_too_large"


class IdempotencyConflictError(ClientError):
    """An ``Idempotency-Key`` reused with a different body."""

    http_status = 422
    code = "idempotency_key_reused"


class TenantQuotaError(ClientError):
    """The tenant already has ``max_concurrent`` requests in flight."""

    http_status = 429
    error_type = "rate_limit_error"
    code = "tenant_concurrency_exceeded"


class UpstreamError(GatewayError):
    """One upstream attempt failed."""

    http_status = 502
    error_type = "server_error"
    code = "upstream_error"
    failover = True

    def __init__(
        self,
        message: str,
        *,
        deployment: str = "",
        status: int | None = None,
        upstream_code: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.deployment = deployment
        self.status = status
        self.upstream_code = upstream_code
        self.retry_after_s = retry_after_s

    @property
    def attempt_token(self) -> str:
        """Return the ``x-fusebox-attempts`` token: the HTTP status, if any."""
        return str(self.status) if self.status is not None else self.token


class UpstreamTimeoutError(UpstreamError):
    """The upstream was silent past a timeout: a silent deployment is not retried."""

    http_status = 504
    code = "upstream_timeout"
    counts_as_failure = True
    token = "timeout"


class UpstreamConnectError(UpstreamError):
    """Connection refused or reset before response headers."""

    code = "upstream_unavailable"
    retryable = True
    counts_as_failure = True
    token = "connect"


class UpstreamUnavailableError(UpstreamError):
    """A 5xx or 529 answer: the upstream is overloaded or broken."""

    code = "upstream_unavailable"
    retryable = True
    counts_as_failure = True


class UpstreamRateLimitError(UpstreamError):
    """A 429: the deployment is paused until its reset time; not a breaker failure."""

    http_status = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"
    retryable = True


class UpstreamAuthError(UpstreamError):
    """Our key or model name was refused upstream (401, 403, 404)."""

    code = "upstream_auth_error"
    counts_as_failure = True


class UpstreamProtocolError(UpstreamError):
    """The upstream answered something that is not valid JSON or SSE."""

    code = "upstream_protocol_error"
    retryable = True
    counts_as_failure = True
    token = "protocol"


class UpstreamContextLengthError(UpstreamError):
    """The prompt does not fit this model; a larger one further down may."""

    http_status = 400
    error_type = "invalid_request_error"
    code = "context_length_exceeded"


class UpstreamBadRequestError(UpstreamError):
    """The request itself is bad (400/413/422): it goes back to the client as is."""

    http_status = 400
    error_type = "invalid_request_error"
    code = "invalid_request"
    failover = False

    def __init__(
        self,
        message: str,
        *,
        deployment: str = "",
        status: int | None = None,
        upstream_code: str | None = None,
        upstream_type: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(
            message, deployment=deployment, status=status, upstream_code=upstream_code
        )
        self.upstream_type = upstream_type
        self.param = param


class UpstreamStreamCutError(UpstreamError):
    """The stream failed after content reached the client."""

    code = "upstream_stream_interrupted"
    counts_as_failure = True
    token = "cut"


class RejectedError(GatewayError):
    """Refused locally, with no upstream call: fail over, never counted."""

    http_status = 503
    code = "unavailable"
    failover = True

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class CircuitOpenError(RejectedError):
    """The deployment's breaker is open (or its half-open probes are taken)."""

    token = "open"


class BulkheadFullError(RejectedError):
    """The provider has no free slot within ``wait_s``."""

    token = "full"


class RetryBudgetError(RejectedError):
    """The provider's retry budget is empty: fail over instead of retrying."""

    token = "budget"


class DeploymentPausedError(RejectedError):
    """The deployment is paused after a 429 until its reset time."""

    token = "paused"


class AllRefusedError(RejectedError):
    """Every rung of the chain was refused locally (open, paused, full, budget)."""

    code = "all_rungs_unavailable"


class DeadlineExceededError(GatewayError):
    """The request's deadline ran out."""

    http_status = 504
    error_type = "server_error"
    code = "deadline_exceeded"
    token = "deadline"
