"""Traces: one server span per request, one child span per upstream attempt."""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING

import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

from gateway import tracing
from gateway.config import parse_config
from gateway.server import _load
from gateway.tracing import INSTALL_HINT, build_tracing, tracing_warnings
from tests.harness import DEMO_KEY, GatewayThread, config_text, running_gateway

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from gateway.fakeupstream import FakeUpstream

SECRET = "sk-upstream-SECRET-tracing-42"
PROMPT = "a private prompt about the merger"
CHAINS = """
[models.chat]
chain = ["fake/gpt-a", "fake2/gpt-b"]
"""
_OTEL_MODULES = (
    "opentelemetry.sdk.trace",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
)


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    """Return an in-memory exporter that keeps every finished span."""
    return InMemorySpanExporter()


@pytest.fixture
def gateway(
    upstream: FakeUpstream, exporter: InMemorySpanExporter
) -> Iterator[GatewayThread]:
    """Serve a gateway whose traces go to ``exporter``."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    text = config_text(upstream.url, CHAINS)
    with running_gateway(text, {"FAKE_KEY": SECRET}, tracer_provider=provider) as gw:
        yield gw


def _client(gw: GatewayThread) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gw.url + "/v1", api_key=DEMO_KEY, max_retries=0, timeout=10
    )


def _spans(exporter: InMemorySpanExporter) -> tuple[ReadableSpan, list[ReadableSpan]]:
    """Return the one server span and its children, oldest first.

    Spans are built when the request ends, just after the answer went out: wait
    (bounded) for the server span, which is ended after its children.
    """
    ticker = threading.Event()
    spans = exporter.get_finished_spans()
    for _ in range(400):
        spans = exporter.get_finished_spans()
        if any(s.kind is SpanKind.SERVER for s in spans):
            break
        ticker.wait(0.005)
    (root,) = [s for s in spans if s.kind is SpanKind.SERVER]
    children = [s for s in spans if s is not root]
    assert root.context is not None
    for child in children:
        assert child.parent is not None
        assert child.parent.span_id == root.context.span_id
        assert child.context is not None
        assert child.context.trace_id == root.context.trace_id
    return root, sorted(children, key=lambda s: s.start_time or 0)


def _attrs(span: ReadableSpan) -> dict[str, object]:
    return dict(span.attributes or {})


def test_failover_gives_a_server_span_and_a_client_span_per_attempt(
    gateway: GatewayThread, upstream: FakeUpstream, exporter: InMemorySpanExporter
) -> None:
    """Three 503s on the primary, then a 200 on the fallback: four attempt spans."""
    upstream.set_mode("gpt-a", "503")
    answer = _client(gateway).chat.completions.create(
        model="chat", messages=[{"role": "user", "content": PROMPT}]
    )
    assert answer.choices[0].message.content
    root, children = _spans(exporter)

    assert root.name == "chat chat"
    attrs = _attrs(root)
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "chat"
    assert attrs["gen_ai.response.model"] == answer.model
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.stream"] is False
    assert answer.usage is not None
    assert attrs["gen_ai.usage.input_tokens"] == answer.usage.prompt_tokens
    assert attrs["gen_ai.usage.output_tokens"] == answer.usage.completion_tokens
    assert attrs["http.response.status_code"] == 200
    assert attrs["fusebox.served_by"] == "fake2/gpt-b"
    assert attrs["fusebox.degraded"] == "fallback"
    assert attrs["fusebox.tenant"] == "acme"
    assert attrs["fusebox.attempts"] == "fake/gpt-a=503,503,503; fake2/gpt-b=200"

    assert [s.kind for s in children] == [SpanKind.CLIENT] * 4
    assert [s.name for s in children] == ["chat gpt-a"] * 3 + ["chat gpt-b"]
    got = [
        (
            a["fusebox.deployment"],
            a["fusebox.attempt"],
            a["fusebox.decision"],
            a["fusebox.next"],
            a.get("error.type"),
        )
        for a in map(_attrs, children)
    ]
    assert got == [
        ("fake/gpt-a", 1, "503", "retry", "503"),
        ("fake/gpt-a", 2, "503", "retry", "503"),
        ("fake/gpt-a", 3, "503", "failover", "503"),
        ("fake2/gpt-b", 1, "200", "end", None),
    ]
    assert [s.status.status_code for s in children] == [StatusCode.ERROR] * 3 + [
        StatusCode.UNSET
    ]
    for child in children:
        a = _attrs(child)
        assert a["gen_ai.provider.name"] == "openai"
        assert a["gen_ai.request.model"] in {"gpt-a", "gpt-b"}
        assert a["server.address"] == "127.0.0.1"
        assert isinstance(a["server.port"], int)
        assert root.start_time is not None
        assert root.end_time is not None
        assert child.start_time is not None
        assert child.end_time is not None
        assert root.start_time <= child.start_time <= child.end_time <= root.end_time
    for span in (root, *children):
        for value in _attrs(span).values():
            assert SECRET not in str(value)
            assert DEMO_KEY not in str(value)
            assert "merger" not in str(value)


def test_open_breaker_shows_as_a_local_refusal_span(
    upstream: FakeUpstream, exporter: InMemorySpanExporter
) -> None:
    """A breaker that opens mid-retry: the refused attempt is an INTERNAL ``open`` span."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    text = config_text(
        upstream.url, CHAINS, defaults="[defaults.breaker]\nmin_calls = 2"
    )
    upstream.set_mode("gpt-a", "503")
    with running_gateway(text, {"FAKE_KEY": SECRET}, tracer_provider=provider) as gw:
        _client(gw).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}]
        )
    root, children = _spans(exporter)
    assert (
        _attrs(root)["fusebox.attempts"] == "fake/gpt-a=503,503,open; fake2/gpt-b=200"
    )
    got = [
        (s.kind, _attrs(s)["fusebox.decision"], _attrs(s)["fusebox.next"])
        for s in children
    ]
    assert got == [
        (SpanKind.CLIENT, "503", "retry"),
        (SpanKind.CLIENT, "503", "retry"),
        (SpanKind.INTERNAL, "open", "failover"),
        (SpanKind.CLIENT, "200", "end"),
    ]


def test_streamed_answer_is_traced_with_its_usage(
    gateway: GatewayThread, exporter: InMemorySpanExporter
) -> None:
    """A healthy stream: one attempt span, the stream flag and the usage on the root."""
    chunks = list(
        _client(gateway).chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage = chunks[-1].usage
    assert usage is not None
    root, children = _spans(exporter)
    attrs = _attrs(root)
    assert attrs["gen_ai.request.stream"] is True
    assert attrs["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert attrs["fusebox.served_by"] == "fake/gpt-a"
    assert "fusebox.degraded" not in attrs
    (child,) = children
    assert _attrs(child)["fusebox.decision"] == "200"
    assert child.kind is SpanKind.CLIENT


def test_exhausted_chain_marks_the_request_span_as_an_error(
    gateway: GatewayThread, upstream: FakeUpstream, exporter: InMemorySpanExporter
) -> None:
    """When every rung fails, the server span carries the status and ``error.type``."""
    upstream.set_mode("gpt-a", "503")
    upstream.set_mode("gpt-b", "503")
    with pytest.raises(openai.APIStatusError) as info:
        _client(gateway).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}]
        )
    root, children = _spans(exporter)
    attrs = _attrs(root)
    assert attrs["http.response.status_code"] == info.value.status_code
    assert attrs["error.type"] == str(info.value.status_code)
    assert root.status.status_code is StatusCode.ERROR
    assert "fusebox.served_by" not in attrs
    assert len(children) == 6  # three attempts on each rung
    assert _attrs(children[-1])["fusebox.next"] == "end"


def test_tracing_is_off_without_an_endpoint(upstream: FakeUpstream) -> None:
    """With no ``[otel]`` endpoint and no provider, nothing is traced or noted."""
    with running_gateway(config_text(upstream.url, CHAINS), {"FAKE_KEY": SECRET}) as gw:
        assert gw.runtime.tracing is None
        answer = _client(gw).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}]
        )
        assert answer.choices[0].message.content


def test_endpoint_from_config_or_environment_builds_an_otlp_exporter() -> None:
    """``[otel] endpoint`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` turns tracing on."""
    configured = parse_config('[otel]\nendpoint = "http://127.0.0.1:4318"\n')
    first = build_tracing(configured, {})
    assert first is not None
    again = build_tracing(configured, {})
    assert again is not None
    assert again.provider is first.provider  # a reload reuses the pipeline
    from_env = build_tracing(
        parse_config(""), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    )
    assert from_env is not None
    assert build_tracing(parse_config(""), {}) is None


def test_missing_extra_is_named_and_the_gateway_serves_without_traces(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without the OpenTelemetry packages, serve warns with the pip command, no traceback."""
    for name in _OTEL_MODULES:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setattr(tracing, "_EXPORTING", {})
    monkeypatch.setattr(tracing, "_warned", set())
    config = parse_config('[otel]\nendpoint = "http://127.0.0.1:4319"\n')

    assert build_tracing(config, {}) is None
    assert INSTALL_HINT in caplog.text
    assert "Traceback" not in caplog.text
    (warning,) = tracing_warnings(config, {})
    assert INSTALL_HINT in warning

    path = tmp_path / "fusebox.toml"
    path.write_text('[otel]\nendpoint = "http://127.0.0.1:4319"\n')
    assert _load(str(path)) is not None
    err = capsys.readouterr().err
    assert INSTALL_HINT in err
    assert "Traceback" not in err
