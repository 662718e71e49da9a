"""The fake upstream, exercised over real sockets by the real SDKs and httpx."""

from __future__ import annotations

import asyncio
import json
import selectors
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import anthropic
import httpx
import openai
import pytest

from gateway.fakeanswer import (
    echo_text,
    embedding_vector,
    split_tokens,
    tool_arguments,
    tool_text,
)
from gateway.fakefault import parse_faults
from gateway.fakeupstream import FakeUpstream

if TYPE_CHECKING:
    from collections.abc import Iterator

    from anthropic.types import MessageParam, ToolUnionParam
    from openai.types.chat import (
        ChatCompletionChunk,
        ChatCompletionMessageParam,
        ChatCompletionToolUnionParam,
    )

TOOLS: list[ChatCompletionToolUnionParam] = [
    {
        "type": "function",
        "function": {
            "name": "search",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}},
            },
        },
    },
    {
        "type": "function",
        "function": {"name": "other", "parameters": {"type": "object"}},
    },
]
ANTHROPIC_TOOLS: list[ToolUnionParam] = [
    {
        "name": "search",
        "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}},
    }
]
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]
ANT_HELLO: list[MessageParam] = [{"role": "user", "content": "hello there"}]
FULL = echo_text("hello there")


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    """Serve this module's own fake upstream (not the session's) for all its tests."""
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _fresh(upstream: FakeUpstream) -> None:
    """Forget what earlier tests scripted and recorded."""
    upstream.reset()


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    """Return a raw HTTP client with a short timeout."""
    with httpx.Client(timeout=2.0) as client:
        yield client


@pytest.fixture(scope="module")
def oai(upstream: FakeUpstream) -> Iterator[openai.OpenAI]:
    """Return an openai SDK client aimed at the fake, without retries."""
    with openai.OpenAI(
        base_url=upstream.url + "/v1", api_key="test", max_retries=0, timeout=2.0
    ) as client:
        yield client


@pytest.fixture(scope="module")
def ant(upstream: FakeUpstream) -> Iterator[anthropic.Anthropic]:
    """Return an anthropic SDK client aimed at the fake, without retries."""
    with anthropic.Anthropic(
        base_url=upstream.url, api_key="test", max_retries=0, timeout=2.0
    ) as client:
        yield client


def _events(raw: bytes) -> list[tuple[str | None, str]]:
    """Split an SSE body into (event name, data) pairs."""
    events = []
    for block in raw.decode().split("\n\n"):
        if not block:
            continue
        name = None
        data = []
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        events.append((name, "\n".join(data)))
    return events


def _chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": HELLO, **extra}


def _message(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": 100, "messages": HELLO, **extra}


def _read_until_error(response: httpx.Response) -> tuple[bytes, Exception | None]:
    """Read a streamed body until it ends or fails; return what arrived."""
    received = b""
    try:
        for piece in response.iter_raw():
            received += piece
    except httpx.TransportError as exc:
        return received, exc
    return received, None


def _openai_contents(raw: bytes) -> list[str]:
    chunks = [json.loads(data) for _, data in _events(raw) if data.startswith("{")]
    return [
        choice["delta"]["content"]
        for chunk in chunks
        for choice in chunk.get("choices", [])
        if choice["delta"].get("content")
    ]


# -- answers -----------------------------------------------------------------


def test_openai_plain_answer_echoes_the_last_user_turn(oai: openai.OpenAI) -> None:
    """A plain chat completion echoes the prompt, counts words and strips the fault."""
    reply = oai.chat.completions.create(model="gpt-a~delay1", messages=HELLO)
    assert reply.model == "gpt-a"
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.content == FULL
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (2, 8)
    assert reply.usage.total_tokens == 10


def test_openai_stream_sends_role_chunk_words_and_usage(
    oai: openai.OpenAI, http: httpx.Client, upstream: FakeUpstream
) -> None:
    """A stream starts role-only, sends one chunk per word, then usage and [DONE]."""
    chunks = list(
        oai.chat.completions.create(
            model="gpt-a",
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    first, *middle, finish, usage = chunks
    assert first.choices[0].delta.role == "assistant"
    assert first.choices[0].delta.content == ""
    assert [c.choices[0].delta.content for c in middle] == split_tokens(FULL)
    assert finish.choices[0].finish_reason == "stop"
    assert usage.choices == []
    assert usage.usage is not None
    assert usage.usage.completion_tokens == len(middle)
    raw = http.post(
        upstream.url + "/v1/chat/completions",
        json=_chat("gpt-a", stream=True, stream_options={"include_usage": True}),
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.text.endswith("data: [DONE]\n\n")
    assert all('"usage":null' in data for _, data in _events(raw.content)[:-2])


def test_openai_stream_without_include_usage_sends_no_usage(
    http: httpx.Client, upstream: FakeUpstream
) -> None:
    """Without include_usage no chunk carries usage and [DONE] follows the finish."""
    raw = http.post(
        upstream.url + "/v1/chat/completions", json=_chat("gpt-a", stream=True)
    )
    events = _events(raw.content)
    assert events[-1] == (None, "[DONE]")
    assert all("usage" not in data for _, data in events)
    assert json.loads(events[-2][1])["choices"][0]["finish_reason"] == "stop"


def test_openai_tool_call_plain(oai: openai.OpenAI) -> None:
    """Offered tools and a user turn last yield one call to the first tool."""
    reply = oai.chat.completions.create(model="gpt-a", messages=HELLO, tools=TOOLS)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    (call,) = choice.message.tool_calls
    assert call.type == "function"
    assert call.function.name == "search"
    assert json.loads(call.function.arguments) == {"query": "hello there"}


def test_openai_tool_call_streamed(oai: openai.OpenAI) -> None:
    """A streamed tool call names the tool first, then its arguments in pieces."""
    stream = oai.chat.completions.create(
        model="gpt-a",
        messages=HELLO,
        tools=TOOLS,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces = []
    finish = None
    names = []
    usage = None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                assert delta.index == 0
                if delta.function and delta.function.name:
                    names.append(delta.function.name)
                if delta.function and delta.function.arguments:
                    pieces.append(delta.function.arguments)
    assert names == ["search"]
    assert len(pieces) > 1
    assert "".join(pieces) == tool_arguments("hello there")
    assert finish == "tool_calls"
    assert usage is not None
    assert usage.completion_tokens == len(pieces)


def test_openai_tool_result_is_quoted(oai: openai.OpenAI) -> None:
    """A tool result as the last turn is answered with its content."""
    messages: list[ChatCompletionMessageParam] = [
        *HELLO,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "search", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "rainy, 14C"},
    ]
    reply = oai.chat.completions.create(model="gpt-a", messages=messages, tools=TOOLS)
    assert reply.choices[0].message.content == tool_text("rainy, 14C")
    assert reply.choices[0].message.content.startswith("Tool said: rainy, 14C")
    assert reply.choices[0].finish_reason == "stop"


def test_anthropic_plain_answer(
    ant: anthropic.Anthropic, http: httpx.Client, upstream: FakeUpstream
) -> None:
    """A plain Messages call echoes the prompt with usage and rate-limit headers."""
    message = ant.messages.create(
        model="claude-a~delay1", max_tokens=100, system="Be brief.", messages=ANT_HELLO
    )
    assert message.model == "claude-a"
    assert message.content[0].type == "text"
    assert message.content[0].text == FULL
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (4, 8)
    raw = http.post(upstream.url + "/v1/messages", json=_message("claude-a"))
    assert raw.headers["request-id"].startswith("req_")
    assert raw.headers["anthropic-ratelimit-requests-remaining"] == "3999"
    assert raw.headers["anthropic-ratelimit-tokens-reset"].endswith("Z")


def test_anthropic_stream_sends_named_events_in_order(
    ant: anthropic.Anthropic, http: httpx.Client, upstream: FakeUpstream
) -> None:
    """A Messages stream has the named events in order and the SDK rebuilds the text."""
    with ant.messages.stream(
        model="claude-a", max_tokens=100, messages=ANT_HELLO
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "text"
    assert final.content[0].text == FULL
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 8
    raw = http.post(
        upstream.url + "/v1/messages", json=_message("claude-a", stream=True)
    )
    names = [name for name, _ in _events(raw.content)]
    words = len(split_tokens(FULL))
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * words,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    for name, data in _events(raw.content):
        assert json.loads(data)["type"] == name
    delta = json.loads(_events(raw.content)[-2][1])
    assert delta["usage"]["output_tokens"] == words


def test_anthropic_tool_use_plain_and_streamed(
    ant: anthropic.Anthropic, http: httpx.Client, upstream: FakeUpstream
) -> None:
    """Offered tools yield a tool_use block, streamed as input_json_delta pieces."""
    message = ant.messages.create(
        model="claude-a",
        max_tokens=100,
        messages=ANT_HELLO,
        tools=ANTHROPIC_TOOLS,
    )
    block = message.content[0]
    assert block.type == "tool_use"
    assert (block.name, block.input) == ("search", {"query": "hello there"})
    assert message.stop_reason == "tool_use"
    with ant.messages.stream(
        model="claude-a",
        max_tokens=100,
        messages=ANT_HELLO,
        tools=ANTHROPIC_TOOLS,
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "tool_use"
    assert final.content[0].input == {"query": "hello there"}
    assert final.stop_reason == "tool_use"
    raw = http.post(
        upstream.url + "/v1/messages",
        json=_message("claude-a", stream=True, tools=ANTHROPIC_TOOLS),
    )
    deltas = [
        json.loads(d)["delta"]
        for n, d in _events(raw.content)
        if n == "content_block_delta"
    ]
    assert {d["type"] for d in deltas} == {"input_json_delta"}
    assert "".join(d["partial_json"] for d in deltas) == tool_arguments("hello there")


def test_anthropic_tool_result_is_quoted(ant: anthropic.Anthropic) -> None:
    """A tool_result block as the last turn is answered with its content."""
    messages: list[MessageParam] = [
        *ANT_HELLO,
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "search", "input": {}}
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}
            ],
        },
    ]
    message = ant.messages.create(
        model="claude-a",
        max_tokens=100,
        messages=messages,
        tools=ANTHROPIC_TOOLS,
    )
    assert message.content[0].type == "text"
    assert message.content[0].text == tool_text("sunny")


# -- prefill continuation --------------------------------------------------


def _cut_points() -> list[str]:
    tokens = split_tokens(FULL)
    prefixes = ["".join(tokens[:k]).rstrip() for k in range(len(tokens) + 1)]
    return [*prefixes, FULL[:7], FULL + " "]


@pytest.mark.parametrize("stream", [False, True])
def test_openai_prefill_continues_to_the_full_answer(
    http: httpx.Client, upstream: FakeUpstream, stream: bool
) -> None:
    """A prefix (trailing space stripped) plus its continuation is the full answer."""
    for prefix in _cut_points():
        messages = [*HELLO, {"role": "assistant", "content": prefix}]
        body = {"model": "gpt-b", "messages": messages, "stream": stream}
        response = http.post(upstream.url + "/v1/chat/completions", json=body)
        if stream:
            rest = "".join(_openai_contents(response.content))
        else:
            rest = response.json()["choices"][0]["message"]["content"]
        assert prefix.rstrip() + rest == FULL or prefix == FULL + " ", prefix


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_prefill_continues_to_the_full_answer(
    ant: anthropic.Anthropic, stream: bool
) -> None:
    """An Anthropic prefill is continued exactly, as by any other upstream."""
    for prefix in _cut_points()[:-1]:
        messages: list[MessageParam] = [
            *ANT_HELLO,
            {"role": "assistant", "content": prefix},
        ]
        if stream:
            with ant.messages.stream(
                model="claude-b",
                max_tokens=100,
                messages=messages,
            ) as events:
                rest = events.get_final_text()
        else:
            message = ant.messages.create(
                model="claude-b", max_tokens=100, messages=messages
            )
            rest = message.content[0].text if message.content[0].type == "text" else ""
        assert prefix + rest == FULL, prefix


def test_prefill_that_does_not_match_gets_the_full_answer(oai: openai.OpenAI) -> None:
    """A prefill that is not a prefix of the answer is ignored."""
    messages: list[ChatCompletionMessageParam] = [
        *HELLO,
        {"role": "assistant", "content": "Something else"},
    ]
    reply = oai.chat.completions.create(model="gpt-a", messages=messages)
    assert reply.choices[0].message.content == FULL


def test_max_tokens_truncates_with_a_length_finish(
    oai: openai.OpenAI, ant: anthropic.Anthropic
) -> None:
    """A max_tokens below the answer's length cuts it and says so."""
    reply = oai.chat.completions.create(model="gpt-a", messages=HELLO, max_tokens=3)
    assert reply.choices[0].message.content == "".join(split_tokens(FULL)[:3])
    assert reply.choices[0].finish_reason == "length"
    message = ant.messages.create(model="claude-a", max_tokens=2, messages=ANT_HELLO)
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 2


def test_words_modifier_sets_the_answer_length(oai: openai.OpenAI) -> None:
    """The words<n> modifier makes the answer n words long."""
    reply = oai.chat.completions.create(model="gpt-a~words50", messages=HELLO)
    content = reply.choices[0].message.content
    assert content is not None
    assert len(content.split()) == 50
    assert content == echo_text("hello there", 50)


# -- other endpoints -------------------------------------------------------


def test_embeddings_float_and_base64_agree(oai: openai.OpenAI) -> None:
    """Embeddings are deterministic 8-dim vectors, identical as floats and base64."""
    floats = oai.embeddings.create(
        model="embed-a", input=["alpha", "beta"], encoding_format="float"
    )
    packed = oai.embeddings.create(model="embed-a", input=["alpha", "beta"])
    assert [d.embedding for d in floats.data] == [d.embedding for d in packed.data]
    assert floats.data[0].embedding == embedding_vector("alpha")
    assert len(floats.data[0].embedding) == 8
    assert floats.data[0].embedding != floats.data[1].embedding
    assert floats.model == "embed-a"
    assert floats.usage.prompt_tokens == 2


def test_models_and_count_tokens(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    """The model list and Anthropic's token counter answer in their shapes."""
    assert "gpt-a" in [m.id for m in oai.models.list()]
    counted = ant.messages.count_tokens(model="claude-a", messages=ANT_HELLO)
    assert counted.input_tokens == 2


# -- faults ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error", "status"),
    [
        ("500", openai.InternalServerError, 500),
        ("502", openai.InternalServerError, 502),
        ("503", openai.InternalServerError, 503),
        ("529", openai.InternalServerError, 529),
        ("401", openai.AuthenticationError, 401),
        ("404", openai.NotFoundError, 404),
        ("429", openai.RateLimitError, 429),
    ],
)
def test_status_faults_reach_the_openai_sdk(
    oai: openai.OpenAI, fault: str, error: type[openai.APIStatusError], status: int
) -> None:
    """A status fault answers that status with an OpenAI error body."""
    with pytest.raises(error) as caught:
        oai.chat.completions.create(model=f"gpt-a~{fault}", messages=HELLO)
    assert caught.value.status_code == status
    assert caught.value.response.headers["x-request-id"].startswith("req_")


@pytest.mark.parametrize(
    ("fault", "code", "param"),
    [
        ("ctx", "context_length_exceeded", "messages"),
        ("policy", "content_policy_violation", None),
        ("bad", "decimal_above_max_value", "temperature"),
    ],
)
def test_bad_request_faults_carry_openai_codes(
    oai: openai.OpenAI, fault: str, code: str, param: str | None
) -> None:
    """The 400 faults carry OpenAI's invalid_request_error codes."""
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(model=f"gpt-a~{fault}", messages=HELLO)
    assert caught.value.code == code
    assert caught.value.param == param
    assert caught.value.type == "invalid_request_error"


def test_anthropic_errors_have_anthropic_shapes(ant: anthropic.Anthropic) -> None:
    """Anthropic-side faults use its error shape: 529 overloaded, 400 too long, 429."""
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        ant.messages.create(model="claude-a~529", max_tokens=10, messages=ANT_HELLO)
    assert overloaded.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
        "request_id": overloaded.value.response.headers["request-id"],
    }
    with pytest.raises(anthropic.BadRequestError, match="prompt is too long"):
        ant.messages.create(model="claude-a~ctx", max_tokens=10, messages=ANT_HELLO)
    with pytest.raises(anthropic.RateLimitError) as limited:
        ant.messages.create(model="claude-a~429ra1", max_tokens=10, messages=ANT_HELLO)
    assert limited.value.response.headers["retry-after"] == "1"
    assert (
        limited.value.response.headers["anthropic-ratelimit-requests-remaining"] == "0"
    )


@pytest.mark.parametrize(
    ("fault", "after", "after_ms"),
    [("429", None, None), ("429ra2", "2", "2000"), ("429ra0.25", "0.25", "250")],
)
def test_429_retry_after_headers(
    http: httpx.Client,
    upstream: FakeUpstream,
    fault: str,
    after: str | None,
    after_ms: str | None,
) -> None:
    """A 429 carries Retry-After and retry-after-ms only when given seconds."""
    response = http.post(
        upstream.url + "/v1/chat/completions", json=_chat(f"gpt-a~{fault}")
    )
    assert response.status_code == 429
    assert response.headers.get("retry-after") == after
    assert response.headers.get("retry-after-ms") == after_ms
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"


def test_reset_is_a_connection_error(
    oai: openai.OpenAI, http: httpx.Client, upstream: FakeUpstream
) -> None:
    """A reset drops the connection before any response byte."""
    with pytest.raises(openai.APIConnectionError):
        oai.chat.completions.create(model="gpt-a~reset", messages=HELLO)
    with pytest.raises(httpx.TransportError):
        http.post(upstream.url + "/v1/messages", json=_message("claude-a~reset"))
    assert upstream.count("gpt-a") == 1
    assert upstream.count("claude-a") == 1


def test_hang_times_out_the_client(oai: openai.OpenAI) -> None:
    """A hang never answers, so the client's read timeout fires."""
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        oai.with_options(timeout=0.2).chat.completions.create(
            model="gpt-a~hang", messages=HELLO
        )
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize("count", [0, 2, 100])
def test_cut_truncates_the_stream(
    http: httpx.Client, upstream: FakeUpstream, count: int
) -> None:
    """A cut closes the connection mid-body after n content chunks (at most all)."""
    body = _chat(f"gpt-a~cut{count}", stream=True)
    with http.stream(
        "POST", upstream.url + "/v1/chat/completions", json=body
    ) as response:
        assert response.status_code == 200
        received, error = _read_until_error(response)
    assert isinstance(error, httpx.RemoteProtocolError)
    words = split_tokens(FULL)
    assert _openai_contents(received) == words[: min(count, len(words))]
    assert b"[DONE]" not in received
    assert b'"finish_reason":"stop"' not in received


def test_cut_streams_fail_the_sdks(
    oai: openai.OpenAI, ant: anthropic.Anthropic
) -> None:
    """A cut stream makes both SDKs fail instead of ending normally."""
    with pytest.raises(openai.APIConnectionError):
        list(
            oai.chat.completions.create(model="gpt-a~cut3", messages=HELLO, stream=True)
        )
    with (
        pytest.raises(Exception, match="incomplete chunked read"),
        ant.messages.stream(
            model="claude-a~cut3", max_tokens=100, messages=ANT_HELLO
        ) as stream,
    ):
        stream.get_final_message()


def test_stall_goes_silent_mid_stream(
    http: httpx.Client, upstream: FakeUpstream
) -> None:
    """A stall sends n content chunks and then nothing until the client gives up."""
    body = _chat("gpt-a~stall2", stream=True)
    started = time.monotonic()
    with http.stream(
        "POST", upstream.url + "/v1/chat/completions", json=body, timeout=0.2
    ) as response:
        received, error = _read_until_error(response)
    assert isinstance(error, httpx.ReadTimeout)
    assert _openai_contents(received) == split_tokens(FULL)[:2]
    assert time.monotonic() - started < 1.5


def test_malformed_event_breaks_the_sdks(
    oai: openai.OpenAI, ant: anthropic.Anthropic
) -> None:
    """A non-JSON event after n chunks makes both SDKs raise a decode error."""
    stream = oai.chat.completions.create(
        model="gpt-a~malformed1", messages=HELLO, stream=True
    )
    seen: list[ChatCompletionChunk] = []
    with pytest.raises(ValueError, match="Expecting property name"):
        seen.extend(stream)
    assert [c.choices[0].delta.content for c in seen] == ["", "Echo:"]
    with (
        pytest.raises(ValueError, match="Expecting property name"),
        ant.messages.stream(
            model="claude-a~malformed2", max_tokens=100, messages=ANT_HELLO
        ) as events,
    ):
        events.get_final_message()


def test_errorevent_raises_in_band(
    oai: openai.OpenAI, ant: anthropic.Anthropic
) -> None:
    """An in-band error event after n chunks raises in both SDKs, not retryable."""
    stream = oai.chat.completions.create(
        model="gpt-a~errorevent2", messages=HELLO, stream=True
    )
    seen: list[ChatCompletionChunk] = []
    with pytest.raises(openai.APIError) as caught:
        seen.extend(stream)
    assert not isinstance(caught.value, openai.APIStatusError)
    assert caught.value.code == "fake_stream_error"
    assert len(seen) == 3
    with (
        pytest.raises(anthropic.APIStatusError) as status,
        ant.messages.stream(
            model="claude-a~errorevent1", max_tokens=100, messages=ANT_HELLO
        ) as events,
    ):
        events.get_final_message()
    assert status.value.status_code == 200
    assert status.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }


def test_nodone_ends_without_the_terminator(
    http: httpx.Client, upstream: FakeUpstream
) -> None:
    """With nodone a stream ends cleanly without [DONE] (Anthropic: message_stop)."""
    raw = http.post(
        upstream.url + "/v1/chat/completions", json=_chat("gpt-a~nodone", stream=True)
    )
    events = _events(raw.content)
    assert json.loads(events[-1][1])["choices"][0]["finish_reason"] == "stop"
    assert b"[DONE]" not in raw.content
    raw = http.post(
        upstream.url + "/v1/messages", json=_message("claude-a~nodone", stream=True)
    )
    assert _events(raw.content)[-1][0] == "message_delta"


def test_slowfirst_sends_the_head_then_waits(
    http: httpx.Client, upstream: FakeUpstream
) -> None:
    """With slowfirst the headers and role chunk go out at once and content waits."""
    body = _chat("gpt-a~slowfirst300", stream=True)
    with http.stream(
        "POST", upstream.url + "/v1/chat/completions", json=body
    ) as response:
        pieces = response.iter_raw()
        head = next(pieces)
        head_at = time.monotonic()
        rest = b"".join(pieces)
        waited_s = time.monotonic() - head_at
    assert b'"role":"assistant"' in head
    assert b'"content":"Echo:"' not in head
    assert waited_s >= 0.2
    assert _openai_contents(head + rest) == split_tokens(FULL)
    started = time.monotonic()
    http.post(upstream.url + "/v1/chat/completions", json=_chat("gpt-a~slowfirst100"))
    assert time.monotonic() - started >= 0.1


def test_delay_holds_the_whole_response(
    http: httpx.Client, upstream: FakeUpstream
) -> None:
    """A delay postpones everything, errors included."""
    started = time.monotonic()
    response = http.post(
        upstream.url + "/v1/chat/completions", json=_chat("gpt-a~delay100~503")
    )
    assert response.status_code == 503
    assert time.monotonic() - started >= 0.1


def test_gap_spaces_the_chunks(http: httpx.Client, upstream: FakeUpstream) -> None:
    """A gap waits between content chunks."""
    started = time.monotonic()
    raw = http.post(
        upstream.url + "/v1/chat/completions", json=_chat("gpt-a~gap20", stream=True)
    )
    assert time.monotonic() - started >= 0.16
    assert _openai_contents(raw.content) == split_tokens(FULL)


def test_once_faults_strike_the_first_request_only(oai: openai.OpenAI) -> None:
    """once500 and once429 fail the first request of that model and no other."""
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model="gpt-a~once500", messages=HELLO)
    assert oai.chat.completions.create(model="gpt-a~once500", messages=HELLO).choices
    assert oai.chat.completions.create(model="gpt-a~once500", messages=HELLO).choices
    with pytest.raises(openai.RateLimitError):
        oai.chat.completions.create(model="gpt-b~once429", messages=HELLO)
    assert oai.chat.completions.create(model="gpt-b~once429", messages=HELLO).choices


def test_script_queue_then_mode(
    oai: openai.OpenAI, http: httpx.Client, upstream: FakeUpstream
) -> None:
    """A script is consumed one fault per request, then the mode lasts until cleared."""

    def status(model: str = "gpt-a~500") -> int:
        return http.post(
            upstream.url + "/v1/chat/completions", json=_chat(model)
        ).status_code

    upstream.script("gpt-a", "503", "ok", "429")
    upstream.set_mode("gpt-a", "502")
    assert [status() for _ in range(5)] == [503, 200, 429, 502, 502]
    upstream.set_mode("gpt-a", "ok")
    assert status() == 200
    upstream.set_mode("gpt-a", None)
    assert status() == 500
    assert status("gpt-b") == 200
    assert [r.fault for r in upstream.records("gpt-a")] == [
        "503",
        "ok",
        "429",
        "502",
        "502",
        "ok",
        "500",
    ]
    assert oai.chat.completions.create(model="gpt-a", messages=HELLO).choices


def test_unknown_faults_are_refused(http: httpx.Client, upstream: FakeUpstream) -> None:
    """An unknown fault token is a 400 on the wire and a ValueError when scripted."""
    response = http.post(
        upstream.url + "/v1/chat/completions", json=_chat("gpt-a~bogus")
    )
    assert response.status_code == 400
    assert "unknown fault" in response.json()["error"]["message"]
    with pytest.raises(ValueError, match="unknown fault"):
        upstream.script("gpt-a", "cut")
    with pytest.raises(ValueError, match="needs an error status"):
        parse_faults("oncecut2")
    assert parse_faults("slowfirst200~cut3").break_point() == ("cut", 3)


def test_records_capture_every_request(
    oai: openai.OpenAI, ant: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    """Every request, faulted or not, is recorded with its model, headers and body."""
    oai.chat.completions.create(model="gpt-a", messages=HELLO)
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model="gpt-a~500", messages=HELLO, stream=True)
    ant.messages.create(model="claude-a", max_tokens=10, messages=ANT_HELLO)
    first, second = upstream.records("gpt-a")
    assert (first.model, first.full_model, first.fault, first.stream) == (
        "gpt-a",
        "gpt-a",
        "ok",
        False,
    )
    assert (second.full_model, second.fault, second.stream) == (
        "gpt-a~500",
        "500",
        True,
    )
    assert first.path == "/v1/chat/completions"
    assert first.headers["authorization"] == "Bearer test"
    assert first.body["messages"] == HELLO
    assert first.time <= second.time <= time.monotonic()
    (claude,) = upstream.records("claude-a")
    assert claude.path == "/v1/messages"
    assert upstream.count("gpt-a") == 2
    assert len(upstream.records()) == 3


def test_http_control(http: httpx.Client, upstream: FakeUpstream) -> None:
    """The HTTP control API scripts, sets modes, lists records and resets."""
    control = upstream.url + "/_control"
    assert http.post(
        control + "/script", json={"model": "gpt-a", "faults": ["503"]}
    ).is_success
    assert http.post(
        control + "/mode", json={"model": "gpt-a", "fault": "429"}
    ).is_success
    chat = upstream.url + "/v1/chat/completions"
    assert [http.post(chat, json=_chat("gpt-a")).status_code for _ in range(2)] == [
        503,
        429,
    ]
    assert http.post(
        control + "/mode", json={"model": "gpt-a", "fault": None}
    ).is_success
    assert http.post(chat, json=_chat("gpt-a")).status_code == 200
    records = http.get(control + "/records", params={"model": "gpt-a"}).json()
    assert [r["fault"] for r in records] == ["503", "429", "ok"]
    assert "body" not in records[0]
    with_bodies = http.get(control + "/records", params={"bodies": "1"}).json()
    assert with_bodies[0]["body"]["model"] == "gpt-a"
    bad = http.post(control + "/script", json={"model": "gpt-a", "faults": ["nope"]})
    assert bad.status_code == 400
    assert http.post(control + "/reset").is_success
    assert http.get(control + "/records").json() == []
    assert http.get(control + "/health").json() == {"ok": True}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", b"{not json"),
        ("/v1/chat/completions", b'{"model": "gpt-a", "messages": []}'),
        ("/v1/chat/completions", b'{"model": "gpt-a", "messages": ["hi"]}'),
        ("/v1/messages", b"[1, 2]"),
        ("/v1/messages/count_tokens", b'{"model": "claude-a"}'),
        ("/v1/embeddings", b'{"model": "embed-a", "input": [1.5]}'),
        ("/v1/embeddings", b'{"model": "embed-a", "input": "x", "dimensions": 0}'),
    ],
)
def test_malformed_requests_get_400(
    http: httpx.Client, upstream: FakeUpstream, path: str, body: bytes
) -> None:
    """A request the fake cannot read gets a 400 in its wire's error shape, and a record."""
    response = http.post(upstream.url + path, content=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"]
    assert len(upstream.records()) == 1


def test_embeddings_accept_token_arrays_and_dimensions(
    http: httpx.Client, upstream: FakeUpstream
) -> None:
    """Token arrays embed like their joined text, and ``dimensions`` sets the length."""
    body = {"model": "embed-a", "input": [[1, 2], [3]], "dimensions": 3}
    data = http.post(upstream.url + "/v1/embeddings", json=body).json()["data"]
    assert [d["embedding"] for d in data] == [
        embedding_vector("1 2", 3),
        embedding_vector("3", 3),
    ]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/_control/script", b"{not json"),
        ("/_control/script", b"[]"),
        ("/_control/script", b'{"model": "", "faults": []}'),
        ("/_control/script", b'{"model": "gpt-a", "faults": "503"}'),
        ("/_control/mode", b'{"model": "gpt-a", "fault": 503}'),
        ("/_control/mode", b'{"model": "gpt-a", "fault": "cut"}'),
    ],
)
def test_control_rejects_bad_commands(
    http: httpx.Client, upstream: FakeUpstream, path: str, body: bytes
) -> None:
    """The control API answers 400 with a reason to a command it cannot follow."""
    response = http.post(upstream.url + path, content=body)
    assert response.status_code == 400
    assert response.json()["error"]


def test_start_refuses_a_second_start_and_a_busy_port(upstream: FakeUpstream) -> None:
    """Starting twice is an error, and so is a port already taken."""
    with pytest.raises(RuntimeError, match="already running"):
        upstream.start()
    other = FakeUpstream()
    with pytest.raises(OSError, match="in use"):
        other.start(upstream.port)
    other.stop()


def test_restart_keeps_the_port_and_kills_inflight() -> None:
    """A restart serves again on the same port and drops requests in flight."""

    async def scenario(fake: FakeUpstream) -> BaseException | None:
        async with httpx.AsyncClient(timeout=2.0) as client:
            pending = asyncio.ensure_future(
                client.post(fake.url + "/v1/chat/completions", json=_chat("gpt-a~hang"))
            )
            for _ in range(200):
                if fake.count("gpt-a"):
                    break
                await asyncio.sleep(0.005)
            await asyncio.to_thread(fake.restart)
            done, _ = await asyncio.wait([pending], timeout=1.0)
            return pending.exception() if done else None

    with FakeUpstream() as fake:
        port = fake.port
        error = asyncio.run(scenario(fake))
        assert isinstance(error, httpx.TransportError)
        assert fake.port == port
        response = httpx.post(
            fake.url + "/v1/chat/completions", json=_chat("gpt-a"), timeout=2.0
        )
        assert response.status_code == 200
        assert fake.count("gpt-a") == 2


def test_cli_serves_until_sigterm() -> None:
    """``fusebox mock-upstream`` prints its URL, serves, and exits 0 on SIGTERM."""
    command = [sys.executable, "-m", "gateway", "mock-upstream", "--port", "0"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            with selectors.DefaultSelector() as selector:
                selector.register(process.stdout, selectors.EVENT_READ)
                assert selector.select(timeout=2.0), "no URL printed within 2 s"
            url = process.stdout.readline().split()[-1]
            assert url.startswith("http://127.0.0.1:")
            chat = httpx.post(
                url + "/v1/chat/completions", json=_chat("gpt-a"), timeout=2
            )
            assert chat.json()["choices"][0]["message"]["content"] == FULL
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=2.0) == 0
        finally:
            process.kill()
