"""Traces over OTLP/HTTP: the optional extra ``fusebox-gateway[otel]``.

One SERVER span per request and one child span per upstream attempt, named and
described with the OpenTelemetry GenAI semantic conventions (WIRE.md §6.1), plus
what the resilience stack decided (``fusebox.decision``, ``fusebox.next``).

The spans are built once the request has ended, from the times the pipeline noted
in ``RequestContext.attempt_log`` (explicit start and end times): serving pays for
no span, and nothing at all when tracing is off. A streamed attempt's span ends when
its first content arrived; the request's span ends with the stream. No key, prompt
or completion text ever goes into an attribute.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from gateway.config import MockProviderConfig
from policies.fallback import describe
from providers.errors import (
    BulkheadFullError,
    CircuitOpenError,
    DeploymentPausedError,
    UpstreamStreamCutError,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from opentelemetry.trace import TracerProvider
    from opentelemetry.util.types import AttributeValue

    from gateway.config import AnyProviderConfig, GatewayConfig
    from gateway.request import RequestContext

log = logging.getLogger("fusebox")

#: Read when ``[otel] endpoint`` is not set (the OpenTelemetry standard variable).
ENDPOINT_ENV: Final = "OTEL_EXPORTER_OTLP_ENDPOINT"
INSTALL_HINT: Final = "pip install 'fusebox-gateway[otel]'"
#: GenAI ``gen_ai.operation.name`` per gateway endpoint (others keep their name).
_OPERATIONS: Final = {"chat": "chat", "messages": "chat", "embeddings": "embeddings"}
#: Tokens of an attempt the gateway refused locally: nothing went upstream.
_REFUSED: Final = frozenset(
    {CircuitOpenError.token, BulkheadFullError.token, DeploymentPausedError.token}
)
_OK: Final = "200"
_SERVER_ERROR: Final = 500
_NS: Final = 1_000_000_000
#: One OTLP pipeline per (endpoint, service name) and process: reloads reuse it.
_EXPORTING: dict[tuple[str, str], TracerProvider] = {}
_warned: set[str] = set()


def endpoint_of(config: GatewayConfig, environ: Mapping[str, str]) -> str | None:
    """Return the OTLP endpoint traces go to, or None when tracing is off."""
    return config.otel.endpoint or environ.get(ENDPOINT_ENV) or None


def otel_installed() -> bool:
    """Return whether the ``otel`` extra's packages can be imported."""
    from importlib.util import find_spec  # noqa: PLC0415 - rarely needed

    try:
        return all(
            find_spec(name) is not None
            for name in (
                "opentelemetry.sdk.trace",
                "opentelemetry.exporter.otlp.proto.http.trace_exporter",
            )
        )
    except ImportError:  # a parent package is missing
        return False


def tracing_warnings(config: GatewayConfig, environ: Mapping[str, str]) -> list[str]:
    """Return a warning when traces are configured but cannot be exported."""
    endpoint = endpoint_of(config, environ)
    if endpoint is None or otel_installed():
        return []
    return [_missing_message(endpoint)]


def _missing_message(endpoint: str) -> str:
    return (
        f"traces to {endpoint} need the OpenTelemetry packages:"
        f" {INSTALL_HINT}; serving without traces"
    )


def build_tracing(
    config: GatewayConfig,
    environ: Mapping[str, str],
    provider: TracerProvider | None = None,
) -> Tracing | None:
    """Return the request tracer, or None when tracing is off or cannot run.

    ``provider`` (tests: one with an in-memory exporter) wins over the config.
    """
    if provider is None:
        endpoint = endpoint_of(config, environ)
        if endpoint is None:
            return None
        try:
            provider = _otlp_provider(endpoint, config.otel.service_name)
        except ImportError:
            if endpoint not in _warned:
                _warned.add(endpoint)
                log.warning("%s", _missing_message(endpoint))
            return None
    return Tracing(provider, config)


def _otlp_provider(endpoint: str, service_name: str) -> TracerProvider:
    """Return this process's OTLP/HTTP tracer provider for ``endpoint``."""
    found = _EXPORTING.get((endpoint, service_name))
    if found is not None:
        return found
    # Imported here: they are the optional extra.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider as Sdk  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    url = endpoint.rstrip("/")
    if not url.endswith("/v1/traces"):
        url += "/v1/traces"
    sdk = Sdk(resource=Resource.create({"service.name": service_name}))
    sdk.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    _EXPORTING[(endpoint, service_name)] = sdk
    return sdk


class Tracing:
    """Turns one finished request's context into its spans."""

    def __init__(self, provider: TracerProvider, config: GatewayConfig) -> None:
        """Bind the tracer; note each provider's GenAI name and server address."""
        from opentelemetry import trace  # noqa: PLC0415 - the optional extra

        self._api = trace
        self.provider = provider
        self._tracer = provider.get_tracer("fusebox")
        self._kinds = {name: _kind(cfg) for name, cfg in config.providers.items()}
        self._servers = {name: _server(cfg) for name, cfg in config.providers.items()}

    def record(self, ctx: RequestContext) -> None:
        """Emit the request's span and one child span per noted attempt."""
        api = self._api
        now, now_ns = ctx.clock.monotonic(), time.time_ns()

        def ns(t: float) -> int:
            return now_ns - int((now - t) * _NS)

        operation = _OPERATIONS.get(ctx.endpoint, ctx.endpoint)
        root = self._tracer.start_span(
            f"{operation} {ctx.alias}" if ctx.alias else operation,
            kind=api.SpanKind.SERVER,
            attributes=self._request_attributes(ctx, operation),
            start_time=ns(ctx.started),
        )
        if ctx.status is not None and ctx.status >= _SERVER_ERROR:
            root.set_attribute("error.type", str(ctx.status))
            root.set_status(api.Status(api.StatusCode.ERROR))
        parent = api.set_span_in_context(root)
        log_ = ctx.attempt_log or []
        for i, (deployment, first, started, ended) in enumerate(log_):
            later = [d for d, *_ in log_[i + 1 :]]
            attrs = self._attempt_attributes(ctx, operation, i, deployment, first)
            attrs["fusebox.next"] = (
                "end"
                if not later
                else "retry"
                if later[0] == deployment
                else "failover"
            )
            refused = attrs["fusebox.decision"] in _REFUSED
            span = self._tracer.start_span(
                f"{operation} {deployment.partition('/')[2]}",
                context=parent,
                kind=api.SpanKind.INTERNAL if refused else api.SpanKind.CLIENT,
                attributes=attrs,
                start_time=ns(started),
            )
            if "error.type" in attrs:
                span.set_status(api.Status(api.StatusCode.ERROR))
            span.end(end_time=ns(ended))
        root.end(end_time=now_ns)

    def _request_attributes(
        self, ctx: RequestContext, operation: str
    ) -> dict[str, AttributeValue]:
        attrs: dict[str, AttributeValue] = {
            "gen_ai.operation.name": operation,
            "gen_ai.request.stream": ctx.stream,
            "fusebox.request_id": ctx.request_id,
            "fusebox.attempts": describe(ctx.trail),
        }
        optional: dict[str, AttributeValue | None] = {
            "gen_ai.request.model": ctx.alias,
            "gen_ai.response.model": ctx.response_model,
            "http.response.status_code": ctx.status,
            "fusebox.tenant": ctx.tenant,
            "fusebox.served_by": ctx.served_by,
            "fusebox.degraded": ctx.degraded,
        }
        if ctx.served_by is not None:
            kind = self._kinds.get(ctx.served_by.partition("/")[0])
            optional["gen_ai.provider.name"] = kind
        if ctx.usage is not None:
            optional["gen_ai.usage.input_tokens"] = ctx.usage.prompt_tokens
            optional["gen_ai.usage.output_tokens"] = ctx.usage.completion_tokens
        attrs.update({k: v for k, v in optional.items() if v is not None})
        return attrs

    def _attempt_attributes(
        self,
        ctx: RequestContext,
        operation: str,
        index: int,
        deployment: str,
        first: int,
    ) -> dict[str, AttributeValue]:
        """Describe one attempt: its tokens end where the next one's begin."""
        log_ = ctx.attempt_log or []
        provider, _, model = deployment.partition("/")
        following = [f for d, f, *_ in log_[index + 1 :] if d == deployment]
        all_tokens = ctx.trail.get(deployment, [])
        tokens = all_tokens[first : following[0] if following else len(all_tokens)]
        attrs: dict[str, AttributeValue] = {
            "gen_ai.operation.name": operation,
            "gen_ai.request.model": model,
            "fusebox.deployment": deployment,
            "fusebox.attempt": sum(1 for d, *_ in log_[: index + 1] if d == deployment),
            # Its outcome, then what followed it (``503,budget``, ``200,cut``).
            "fusebox.decision": ",".join(tokens) or "cancelled",
        }
        kind = self._kinds.get(provider)
        if kind is not None:
            attrs["gen_ai.provider.name"] = kind
        server = self._servers.get(provider)
        if server is not None:
            attrs["server.address"], attrs["server.port"] = server
        if tokens and tokens[0] != _OK:
            attrs["error.type"] = tokens[0]
        elif UpstreamStreamCutError.token in tokens:
            attrs["error.type"] = UpstreamStreamCutError.token
        return attrs


def _kind(cfg: AnyProviderConfig) -> str:
    """Return the provider's ``gen_ai.provider.name`` (its ``kind``)."""
    tag = type(cfg).__struct_config__.tag
    return str(tag) if tag is not None else "_OTHER"


def _server(cfg: AnyProviderConfig) -> tuple[str, int] | None:
    """Return the upstream's host and port, or None for an in-process mock."""
    if isinstance(cfg, MockProviderConfig):
        return None
    parts = urlsplit(cfg.base_url)
    if parts.hostname is None:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)
