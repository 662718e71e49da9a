"""The Anthropic adapter against fake upstreams on real sockets.

The session's ``FakeUpstream`` speaks the Messages API and misbehaves on request
(a model suffix such as ``claude-a~529`` or ``claude-a~cut3``); one test runs its
own tiny aiohttp server for an answer the fake cannot give.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.fakeanswer import echo_text, split_tokens, tool_arguments
from providers.anthropic import AnthropicProvider, AnthropicStream
from providers.errors import (
    UpstreamAuthError,
    UpstreamBadRequestError,
    UpstreamContextLengthError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRateLimitError,
    UpstreamStreamCutError,
    UpstreamUnavailableError,
)
from providers.types import AttemptLimits, ChatRequest
from tests.openapi import validate

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from gateway.fakeupstream import FakeUpstream

pytestmark = pytest.mark.anyio

KEY = "sk-ant-test-0123456789"
HELLO = [{"role": "user", "content": "hello there"}]
FULL = echo_text("hello there")
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}},
            },
        },
    }
]
LIMITS = AttemptLimits(connect_s=2.0, read_s=2.0)


@pytest.fixture
async def provider(upstream: FakeUpstream) -> AsyncIterator[AnthropicProvider]:
    """Return an adapter aimed at the fake upstream, closed after the test."""
    adapter = AnthropicProvider(
        "claude",
        base_url=upstream.url,
        api_key=KEY,
        anthropic_version="2023-06-01",
        max_tokens_default=333,
        prefill=True,
        pool_size=4,
        wall_clock=lambda: 1_700_000_000.5,
    )
    yield adapter
    await adapter.aclose()


def chat(model: str, **kwargs: Any) -> ChatRequest:
    """Return an attempt at ``model`` saying hello (``payload`` overridable)."""
    payload = kwargs.pop("payload", {"model": "smart", "messages": HELLO})
    return ChatRequest(payload=payload, model=model, limits=LIMITS, **kwargs)


def decode(frames: list[bytes]) -> list[dict[str, Any]]:
    """Decode and schema-check streamed frames."""
    chunks = []
    for frame in frames:
        assert frame.startswith(b"data: ")
        assert frame.endswith(b"\n\n")
        chunk = json.loads(frame[6:])
        validate("CreateChatCompletionStreamResponse", chunk)
        chunks.append(chunk)
    return chunks


def content_of(chunks: list[dict[str, Any]]) -> str:
    """Join the content deltas of decoded chunks."""
    return "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
    )


async def collect(stream: AnthropicStream) -> list[bytes]:
    """Read a stream to its end, closing it in any case."""
    try:
        return [frame async for frame in stream]
    finally:
        await stream.aclose()


async def read_into(stream: AnthropicStream, frames: list[bytes]) -> None:
    """Append every frame of ``stream`` to ``frames`` (kept when it raises)."""
    async for frame in stream:
        frames.append(frame)  # noqa: PERF401 - the frames before a raise count


async def test_plain_answer(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    """A plain request is sent as Messages JSON and answered as a chat.completion."""
    response = await provider.complete(chat("claude-a", payload={"messages": HELLO}))
    body = json.loads(response.body)
    validate("CreateChatCompletionResponse", body)
    assert body["choices"][0]["message"]["content"] == FULL
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["created"] == 1_700_000_000
    assert response.model == body["model"] == "claude-a"
    assert response.usage is not None
    assert response.usage.completion_tokens == len(split_tokens(FULL))
    (record,) = upstream.records("claude-a")
    assert record.path == "/v1/messages"
    assert record.headers["x-api-key"] == KEY
    assert record.headers["anthropic-version"] == "2023-06-01"
    assert record.headers["content-type"].startswith("application/json")
    assert record.body["max_tokens"] == 333
    assert "stream" not in record.body


async def test_streamed_answer(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    """A stream opens after its first content and yields OpenAI chunks to the end."""
    stream = await provider.open_stream(
        chat("claude-a", stream=True, include_usage=True)
    )
    assert stream.text  # the first content is already in
    chunks = decode(await collect(stream))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert content_of(chunks) == FULL == stream.text
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == len(split_tokens(FULL))
    assert stream.finish_reason == "stop"
    assert stream.model == "claude-a"
    assert upstream.records("claude-a")[0].body["stream"] is True
    await stream.aclose()  # a second close is harmless


async def test_streamed_tool_call(provider: AnthropicProvider) -> None:
    """A streamed tool_use becomes tool_call deltas with index 0 and its arguments."""
    request = chat("claude-a", stream=True, payload={"messages": HELLO, "tools": TOOLS})
    chunks = decode(await collect(await provider.open_stream(request)))
    calls = [
        call
        for c in chunks
        for call in c["choices"][0]["delta"].get("tool_calls") or []
    ]
    assert calls[0]["function"]["name"] == "search"
    assert calls[0]["type"] == "function"
    assert {call["index"] for call in calls} == {0}
    arguments = "".join(call["function"]["arguments"] for call in calls)
    assert arguments == tool_arguments("hello there")
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("stream", [False, True])
async def test_overloaded_529_is_unavailable(
    provider: AnthropicProvider, *, stream: bool
) -> None:
    """A 529 raises UpstreamUnavailableError with the status and overloaded_error."""
    request = chat("claude-a~529", stream=stream)
    call = provider.open_stream if stream else provider.complete
    with pytest.raises(UpstreamUnavailableError) as caught:
        await call(request)
    assert caught.value.status == 529
    assert caught.value.upstream_code == "overloaded_error"
    assert caught.value.deployment == "claude/claude-a~529"


async def test_rate_limit_carries_retry_after(provider: AnthropicProvider) -> None:
    """A 429 with Retry-After raises UpstreamRateLimitError with that wait."""
    with pytest.raises(UpstreamRateLimitError) as caught:
        await provider.complete(chat("claude-a~429ra7"))
    assert caught.value.retry_after_s == 7.0
    assert caught.value.upstream_code == "rate_limit_error"


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        ("401", UpstreamAuthError),
        ("404", UpstreamAuthError),
        ("ctx", UpstreamContextLengthError),
        ("bad", UpstreamBadRequestError),
        ("500", UpstreamUnavailableError),
    ],
)
async def test_error_statuses_are_mapped(
    provider: AnthropicProvider, fault: str, kind: type[UpstreamError]
) -> None:
    """Each upstream error answer raises its class, never echoing a 401's text."""
    with pytest.raises(kind) as caught:
        await provider.complete(chat(f"claude-a~{fault}"))
    assert "invalid x-api-key" not in caught.value.message
    assert KEY not in caught.value.message


@pytest.mark.parametrize(
    ("fault", "code"),
    [("cut3", None), ("errorevent3", "overloaded_error"), ("malformed3", None)],
)
async def test_failure_after_content_is_a_stream_cut(
    provider: AnthropicProvider, fault: str, code: str | None
) -> None:
    """After content reached the caller, any failure raises UpstreamStreamCutError."""
    stream = await provider.open_stream(chat(f"claude-a~{fault}", stream=True))
    frames: list[bytes] = []
    with pytest.raises(UpstreamStreamCutError) as caught:
        await read_into(stream, frames)
    await stream.aclose()
    delivered = "".join(split_tokens(FULL)[:3])
    assert content_of(decode(frames)) == delivered == stream.text
    assert caught.value.upstream_code == code
    assert caught.value.deployment == f"claude/claude-a~{fault}"


async def test_missing_message_stop_is_a_stream_cut(
    provider: AnthropicProvider,
) -> None:
    """A stream that ends without message_stop is cut, not a truncated success."""
    stream = await provider.open_stream(chat("claude-a~nodone", stream=True))
    with pytest.raises(UpstreamStreamCutError, match="message_stop"):
        await collect(stream)
    assert stream.finish_reason is None


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        ("errorevent0", UpstreamUnavailableError),
        ("malformed0", UpstreamProtocolError),
        ("cut0", UpstreamError),
    ],
)
async def test_failure_before_content_raises_from_open_stream(
    provider: AnthropicProvider, fault: str, kind: type[UpstreamError]
) -> None:
    """Before the first content, failures raise the mapped error so the chain fails over."""
    with pytest.raises(kind) as caught:
        await provider.open_stream(chat(f"claude-a~{fault}", stream=True))
    assert not isinstance(caught.value, UpstreamStreamCutError)


async def test_streamed_prefill_continues_without_doubling_the_space(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    """A continuation after "…hello " yields exactly the rest of the answer."""
    delivered = "Echo: hello "
    request = chat("claude-b", stream=True, prefill=delivered)
    chunks = decode(await collect(await provider.open_stream(request)))
    assert delivered + content_of(chunks) == FULL
    sent = upstream.records("claude-b")[0].body["messages"][-1]
    assert sent == {
        "role": "assistant",
        "content": [{"type": "text", "text": "Echo: hello"}],
    }


async def test_plain_prefill_continues_mid_word(provider: AnthropicProvider) -> None:
    """A prefill cut mid-word continues exactly where it stopped."""
    delivered = FULL[:9]
    response = await provider.complete(chat("claude-b", prefill=delivered))
    content = json.loads(response.body)["choices"][0]["message"]["content"]
    assert delivered + content == FULL


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def tiny_upstream(handler: Handler) -> AsyncIterator[AnthropicProvider]:
    """Serve ``handler`` at /v1/messages and yield an adapter aimed at it."""
    app = web.Application()
    app.router.add_post("/v1/messages", handler)
    async with TestServer(app, host="127.0.0.1") as server:
        adapter = AnthropicProvider(
            "claude", base_url=str(server.make_url("")), api_key=KEY, pool_size=2
        )
        try:
            yield adapter
        finally:
            await adapter.aclose()


def refusal(message: str) -> web.Response:
    """Answer 400 with Anthropic's error body."""
    error = {"type": "invalid_request_error", "message": message}
    return web.json_response({"type": "error", "error": error}, status=400)


async def test_models_refusing_temperature_are_retried_once_without_it() -> None:
    """A 400 refusing temperature is retried without it, and remembered per model."""
    seen: list[dict[str, Any]] = []

    async def messages(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        seen.append(body)
        if "temperature" in body:
            return refusal("`temperature` is deprecated for this model.")
        answer = {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [{"type": "text", "text": "ok"}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }
        return web.json_response(answer)

    payload = {"messages": HELLO, "temperature": 0.3}
    async with tiny_upstream(messages) as adapter:
        for _ in range(2):
            response = await adapter.complete(chat("claude-new", payload=payload))
            message = json.loads(response.body)["choices"][0]["message"]
            assert message["content"] == "ok"
    assert ["temperature" in body for body in seen] == [True, False, False]


async def test_a_failing_retry_without_temperature_raises_its_own_error() -> None:
    """When the retry without temperature fails too, its error is the one raised."""

    async def messages(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if "temperature" in body:
            return refusal("`temperature` is deprecated for this model.")
        return refusal("max_tokens: too large")

    payload = {"messages": HELLO, "temperature": 0.3}
    async with tiny_upstream(messages) as adapter:
        with pytest.raises(UpstreamBadRequestError) as caught:
            await adapter.complete(chat("claude-new", payload=payload))
    assert caught.value.param == "max_tokens"


async def test_a_clean_end_before_content_fails_over() -> None:
    """A 200 stream that ends cleanly before any content raises from open_stream."""

    async def messages(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(
            b'event: message_start\ndata: {"type":"message_start"}\n\n'
        )
        await response.write_eof()
        return response

    async with tiny_upstream(messages) as adapter:
        with pytest.raises(UpstreamUnavailableError, match="first content"):
            await adapter.open_stream(chat("claude-new", stream=True))
