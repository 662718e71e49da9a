"""``/v1/messages`` through real sockets, with the real anthropic SDK as the client."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import anthropic
import httpx
import pytest

from gateway.fakeanswer import echo_text, tool_text
from tests.harness import (
    DEMO_KEY,
    OTHER_KEY,
    GatewayThread,
    config_text,
    running_gateway,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from gateway.fakeupstream import FakeUpstream

CHAINS = """
[providers.vllm]
kind = "openai"
base_url = "{url}/v1"
api_key_env = "FAKE_KEY"
prefill = true

[providers.quick]
kind = "openai"
base_url = "{url}/v1"
api_key_env = "FAKE_KEY"
timeouts = {{ first_token_s = 0.2 }}

[models.claude-only]
chain = ["claude/claude-a", "claude/claude-b"]

[models.openai-only]
chain = ["fake/gpt-a", "fake2/gpt-b"]

[models.mixed]
chain = ["claude/claude-a", "fake/gpt-a"]

[models.mixed-back]
chain = ["fake/gpt-a", "claude/claude-a"]

[models.to-vllm]
chain = ["claude/claude-a", "vllm/llama"]

[models.static]
chain = ["fake/gpt-down~503", "@static"]
static = "Busy right now, try again soon."

[models.overloaded]
chain = ["claude/claude-over~529"]

[models.broken]
chain = ["fake/gpt-broken~500"]

[models.limited]
chain = ["fake/gpt-limited~429ra1"]

[models.refused]
chain = ["claude/claude-bad~bad"]

[models.silent]
chain = ["quick/gpt-silent~hang"]

[models.embed]
endpoint = "embeddings"
chain = ["fake/emb-a"]
"""
SECRET = "sk-upstream-SECRET-0123456789"
PROMPT = "tell me about resilient gateways"
TOOL = {
    "name": "lookup",
    "description": "Look something up.",
    "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}},
}
ALIASES = ["claude-only", "openai-only", "mixed", "mixed-back"]


@pytest.fixture
def gateway(upstream: FakeUpstream) -> Iterator[GatewayThread]:
    """Serve a gateway with Anthropic-only, OpenAI-only and mixed chains."""
    text = config_text(
        upstream.url, CHAINS.format(url=upstream.url), globex='models = ["mixed"]'
    )
    with running_gateway(text, {"FAKE_KEY": SECRET}) as gw:
        yield gw


def client(gw: GatewayThread, **auth: Any) -> anthropic.Anthropic:
    """Return the real anthropic SDK pointed at the gateway, retries off."""
    auth = auth or {"api_key": DEMO_KEY}
    return anthropic.Anthropic(base_url=gw.url, max_retries=0, timeout=10, **auth)


def ask(text: str = PROMPT) -> list[dict[str, Any]]:
    """Return a one-turn conversation."""
    return [{"role": "user", "content": text}]


@pytest.mark.parametrize("alias", ALIASES)
def test_create_answers_on_every_kind_of_chain(
    gateway: GatewayThread, alias: str
) -> None:
    """A plain ``messages.create`` is answered whole, natively or translated."""
    raw = client(gateway).messages.with_raw_response.create(
        model=alias, max_tokens=100, messages=ask()
    )
    message = raw.parse()
    assert message.type == "message"
    assert message.content[0].type == "text"
    assert message.content[0].text == echo_text(PROMPT)
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 8
    assert message.usage.input_tokens > 0
    assert raw.headers["x-fusebox-served-by"] == alias_first(alias)
    assert raw.headers["request-id"] == raw.headers["x-request-id"]
    assert "x-fusebox-degraded" not in raw.headers


def alias_first(alias: str) -> str:
    """Return the first deployment of a test alias."""
    return "fake/gpt-a" if alias in {"openai-only", "mixed-back"} else "claude/claude-a"


@pytest.mark.parametrize("alias", ALIASES)
def test_stream_helpers_see_one_whole_message(
    gateway: GatewayThread, alias: str
) -> None:
    """``messages.stream`` yields the text and a final message with usage."""
    with client(gateway).messages.stream(
        model=alias, max_tokens=100, messages=ask()
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        headers = stream.response.headers
    assert text == echo_text(PROMPT)
    assert [b.type for b in final.content] == ["text"]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 8
    assert headers["x-fusebox-served-by"] == alias_first(alias)
    assert headers["content-type"].startswith("text/event-stream")


def test_anthropic_stream_events_are_named(gateway: GatewayThread) -> None:
    """A translated stream is a proper Messages event sequence with ``event:`` lines."""
    body = {"model": "openai-only", "max_tokens": 50, "stream": True, "messages": ask()}
    with httpx.Client(timeout=10) as http:
        reply = http.post(
            gateway.url + "/v1/messages", json=body, headers={"x-api-key": DEMO_KEY}
        )
    names = [
        line.removeprefix("event: ")
        for line in reply.text.splitlines()
        if line.startswith("event: ")
    ]
    assert names[:2] == ["message_start", "ping"]
    assert names[2] == "content_block_start"
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}


@pytest.mark.anyio
@pytest.mark.parametrize("alias", ["claude-only", "openai-only"])
async def test_async_client_creates_and_streams(
    gateway: GatewayThread, alias: str
) -> None:
    """The async SDK gets the same answers, plain and streamed."""
    async with anthropic.AsyncAnthropic(
        base_url=gateway.url, api_key=DEMO_KEY, max_retries=0, timeout=10
    ) as sdk:
        message = await sdk.messages.create(model=alias, max_tokens=100, messages=ask())
        async with sdk.messages.stream(
            model=alias, max_tokens=100, messages=ask("async please")
        ) as stream:
            text = "".join([t async for t in stream.text_stream])
            final = await stream.get_final_message()
    assert message.content[0].text == echo_text(PROMPT)
    assert text == echo_text("async please")
    assert final.content[0].text == text


def test_both_auth_headers_are_accepted(
    gateway: GatewayThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``auth_token`` sends Bearer, a raw ``x-api-key`` header works too; both pass."""
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    seen: list[dict[str, str]] = []
    for auth in (
        {"auth_token": DEMO_KEY},
        {"api_key": DEMO_KEY},
        {"api_key": None, "default_headers": {"X-Api-Key": DEMO_KEY}},
    ):
        hooks = {"request": [lambda r: seen.append(dict(r.headers))]}
        sdk = client(
            gateway, http_client=anthropic.DefaultHttpxClient(event_hooks=hooks), **auth
        )
        message = sdk.messages.create(model="mixed", max_tokens=50, messages=ask())
        assert message.content[0].text == echo_text(PROMPT)
    assert seen[0]["authorization"] == f"Bearer {DEMO_KEY}"
    assert "authorization" in seen[1] or "x-api-key" in seen[1]
    assert seen[2]["x-api-key"] == DEMO_KEY
    assert "authorization" not in seen[2]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("alias", ["claude-only", "openai-only", "mixed-back"])
def test_tool_use_round_trip(gateway: GatewayThread, alias: str, stream: bool) -> None:
    """A tool call comes back as ``tool_use``; its ``tool_result`` gets the final text."""
    sdk = client(gateway)
    kwargs: dict[str, Any] = {"model": alias, "max_tokens": 100, "tools": [TOOL]}
    history = ask("weather in Paris")
    first: anthropic.types.Message
    if stream:
        with sdk.messages.stream(messages=history, **kwargs) as s:
            first = s.get_final_message()
    else:
        first = sdk.messages.create(messages=history, **kwargs)
    assert first.stop_reason == "tool_use"
    call = first.content[-1]
    assert call.type == "tool_use"
    assert call.name == "lookup"
    assert call.input == {"query": "weather in Paris"}
    history += [
        {"role": "assistant", "content": first.content},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}
            ],
        },
    ]
    second = sdk.messages.create(messages=history, **kwargs)
    assert second.content[0].text == tool_text("sunny")
    assert second.stop_reason == "end_turn"


FAILOVERS = [
    ("claude-only", "claude-a", "529", "claude/claude-b"),
    ("mixed", "claude-a", "529", "fake/gpt-a"),
    ("mixed-back", "gpt-a", "503", "claude/claude-a"),
    ("openai-only", "gpt-a", "503", "fake2/gpt-b"),
]


@pytest.mark.parametrize("case", FAILOVERS, ids=[c[0] for c in FAILOVERS])
@pytest.mark.parametrize("stream", [False, True])
def test_failure_before_content_fails_over_invisibly(
    gateway: GatewayThread,
    upstream: FakeUpstream,
    case: tuple[str, str, str, str],
    stream: bool,
) -> None:
    """A primary failing before any content is replaced by the next rung, unseen."""
    alias, primary, fault, served_by = case
    upstream.set_mode(primary, fault)
    sdk = client(gateway)
    if stream:
        with sdk.messages.stream(model=alias, max_tokens=100, messages=ask()) as s:
            text = "".join(s.text_stream)
            headers = s.response.headers
    else:
        raw = sdk.messages.with_raw_response.create(
            model=alias, max_tokens=100, messages=ask()
        )
        text, headers = raw.parse().content[0].text, raw.headers
    assert text == echo_text(PROMPT)
    assert headers["x-fusebox-served-by"] == served_by
    assert headers["x-fusebox-degraded"] == "fallback"
    assert f"={fault},{fault},{fault};" in headers["x-fusebox-attempts"]


@pytest.mark.parametrize(
    ("alias", "primary"),
    [("claude-only", "claude-a"), ("mixed-back", "gpt-a"), ("to-vllm", "claude-a")],
)
def test_cut_after_content_continues_on_a_prefill_rung(
    gateway: GatewayThread, upstream: FakeUpstream, alias: str, primary: str
) -> None:
    """A stream cut after content carries on where prefill is allowed: one whole message."""
    upstream.set_mode(primary, "cut3")
    with client(gateway).messages.stream(
        model=alias, max_tokens=100, messages=ask()
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == echo_text(PROMPT)
    assert [b.type for b in final.content] == ["text"]
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    continued = upstream.records()[-1].body
    assert continued["messages"][-1]["role"] == "assistant"


def test_continuation_is_marked_and_never_restarts_the_message(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """The client sees one ``message_start``, one block, and a comment naming the rung."""
    upstream.set_mode("claude-a", "cut3")
    body = {"model": "claude-only", "max_tokens": 50, "stream": True, "messages": ask()}
    with httpx.Client(timeout=10) as http:
        reply = http.post(
            gateway.url + "/v1/messages", json=body, headers={"x-api-key": DEMO_KEY}
        )
    lines = reply.text.splitlines()
    assert lines.count("event: message_start") == 1
    assert lines.count("event: content_block_start") == 1
    assert lines.count("event: message_stop") == 1
    assert ": fusebox continued on claude/claude-b" in lines


@pytest.mark.parametrize(
    ("alias", "primary", "fault", "kind"),
    [
        ("openai-only", "gpt-a", "cut3", "api_error"),
        ("mixed", "claude-a", "errorevent3", "overloaded_error"),
    ],
)
def test_cut_without_prefill_rung_raises_in_the_sdk(
    gateway: GatewayThread,
    upstream: FakeUpstream,
    alias: str,
    primary: str,
    fault: str,
    kind: str,
) -> None:
    """With no prefill-capable next rung, the stream ends in ``event: error`` and the SDK raises."""
    upstream.set_mode(primary, fault)
    text: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as raised,
        client(gateway).messages.stream(
            model=alias, max_tokens=100, messages=ask()
        ) as stream,
    ):
        text.extend(stream.text_stream)
    assert text
    assert echo_text(PROMPT).startswith("".join(text))
    assert raised.value.type == kind
    assert primary in str(raised.value)
    assert SECRET not in str(raised.value)


@pytest.mark.parametrize("stream", [False, True])
def test_static_rung_answers_in_the_messages_format(
    gateway: GatewayThread, stream: bool
) -> None:
    """When every deployment fails, ``@static`` answers as a Messages message."""
    sdk = client(gateway)
    if stream:
        with sdk.messages.stream(model="static", max_tokens=50, messages=ask()) as s:
            text, headers = "".join(s.text_stream), s.response.headers
            assert s.get_final_message().stop_reason == "end_turn"
    else:
        raw = sdk.messages.with_raw_response.create(
            model="static", max_tokens=50, messages=ask()
        )
        text, headers = raw.parse().content[0].text, raw.headers
    assert text == "Busy right now, try again soon."
    assert headers["x-fusebox-served-by"] == "@static"
    assert headers["x-fusebox-degraded"] == "static"


ERRORS = [
    ("mixed", "wrong-key", anthropic.AuthenticationError, 401, "authentication_error"),
    ("nope", DEMO_KEY, anthropic.NotFoundError, 404, "not_found_error"),
    (
        "openai-only",
        OTHER_KEY,
        anthropic.PermissionDeniedError,
        403,
        "permission_error",
    ),
    ("embed", DEMO_KEY, anthropic.BadRequestError, 400, "invalid_request_error"),
    ("refused", DEMO_KEY, anthropic.BadRequestError, 400, "invalid_request_error"),
    ("limited", DEMO_KEY, anthropic.RateLimitError, 429, "rate_limit_error"),
    ("overloaded", DEMO_KEY, anthropic.OverloadedError, 529, "overloaded_error"),
    ("broken", DEMO_KEY, anthropic.InternalServerError, 502, "api_error"),
    ("silent", DEMO_KEY, anthropic.GatewayTimeoutError, 504, "timeout_error"),
]


@pytest.mark.parametrize(("alias", "key", "error", "status", "kind"), ERRORS)
def test_errors_parse_into_the_sdk_exception_classes(
    gateway: GatewayThread,
    alias: str,
    key: str,
    error: type[anthropic.APIStatusError],
    status: int,
    kind: str,
) -> None:
    """Each failure reaches the SDK as its exception class, status and error type."""
    with pytest.raises(error) as raised:
        client(gateway, api_key=key).messages.create(
            model=alias, max_tokens=50, messages=ask()
        )
    exc = raised.value
    assert exc.status_code == status
    assert exc.type == kind
    assert isinstance(exc.body, dict)
    assert exc.body["type"] == "error"
    assert exc.request_id == exc.response.headers["x-request-id"]
    assert SECRET not in exc.response.text
    if status == 429:
        assert exc.response.headers["retry-after"] == "1"
    if status >= 429:
        assert exc.response.headers["x-should-retry"] == "false"


def test_malformed_body_is_an_anthropic_400(gateway: GatewayThread) -> None:
    """A body without ``max_tokens`` is refused before any upstream call, Anthropic-style."""
    with httpx.Client(timeout=10) as http:
        reply = http.post(
            gateway.url + "/v1/messages",
            json={"model": "mixed", "messages": ask()},
            headers={"authorization": f"Bearer {DEMO_KEY}"},
        )
    assert reply.status_code == 400
    body = reply.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]


def test_anthropic_upstream_gets_the_request_natively(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """An Anthropic deployment receives the client's JSON with only ``model`` rewritten."""
    sent = {
        "max_tokens": 64,
        "messages": ask(),
        "system": [
            {
                "type": "text",
                "text": "Be brief.",
                "cache_control": {"type": "ephemeral"},
            }
        ],
        "thinking": {"type": "disabled"},
    }
    extra = {"top_k": 5, "fusebox_probe": 1}
    client(gateway).messages.create(model="claude-only", extra_body=extra, **sent)
    record = upstream.records("claude-a")[-1]
    assert record.body == {**sent, **extra, "model": "claude-a"}
    assert record.headers["x-api-key"] == SECRET
    assert DEMO_KEY not in str(record.headers)


def test_openai_upstream_gets_the_request_translated(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """System, stop sequences, sampling, images and tools reach an OpenAI rung translated."""
    pixel = base64.b64encode(b"\x89PNG fake").decode()
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": pixel},
    }
    client(gateway).messages.create(
        model="openai-only",
        max_tokens=64,
        system="Be brief.",
        stop_sequences=["END"],
        extra_body={"temperature": 0.5, "top_k": 3},
        metadata={"user_id": "user-42"},
        tools=[TOOL],
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "look"}, image]}
        ],
    )
    body = upstream.records("gpt-a")[-1].body
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["messages"][1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": f"data:image/png;base64,{pixel}"},
    }
    assert body["max_completion_tokens"] == 64
    assert body["stop"] == ["END"]
    assert body["temperature"] == 0.5
    assert "top_k" not in body
    assert body["user"] == "user-42"
    assert body["tools"][0]["function"]["parameters"] == TOOL["input_schema"]
    assert body["tool_choice"] == "auto"
    assert body["parallel_tool_calls"] is False


def test_untranslatable_request_keeps_to_anthropic_rungs(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """A request only Anthropic can carry skips OpenAI rungs, or is refused without one."""
    server_tool: Any = {"type": "web_search_20250305", "name": "web_search"}
    sdk = client(gateway)
    raw = sdk.messages.with_raw_response.create(
        model="mixed-back", max_tokens=50, messages=ask(), tools=[server_tool]
    )
    assert raw.parse().content
    assert raw.headers["x-fusebox-served-by"] == "claude/claude-a"
    assert upstream.count("gpt-a") == 0
    with pytest.raises(anthropic.BadRequestError) as raised:
        sdk.messages.create(
            model="openai-only", max_tokens=50, messages=ask(), tools=[server_tool]
        )
    assert "tools.0" in raised.value.message


def test_count_tokens_on_an_anthropic_chain(gateway: GatewayThread) -> None:
    """``count_tokens`` is answered natively when the chain starts with Anthropic."""
    sdk = client(gateway)
    counted = sdk.messages.count_tokens(model="claude-only", messages=ask())
    assert counted.input_tokens == len(PROMPT.split())
    with pytest.raises(anthropic.BadRequestError) as raised:
        sdk.messages.count_tokens(model="openai-only", messages=ask())
    assert "Anthropic" in raised.value.message


BEFORE_CONTENT = [
    ("errorevent0", True),
    ("malformed0", True),
    ("cut0", True),
    ("reset", True),
    ("reset", False),
    ("503", False),
]


@pytest.mark.parametrize(("fault", "stream"), BEFORE_CONTENT)
def test_native_failures_before_content_fail_over(
    gateway: GatewayThread, upstream: FakeUpstream, fault: str, stream: bool
) -> None:
    """A Claude stream that breaks before its first content is replaced unseen."""
    upstream.set_mode("claude-a", fault)
    sdk = client(gateway)
    if stream:
        with sdk.messages.stream(
            model="claude-only", max_tokens=50, messages=ask()
        ) as s:
            text, headers = "".join(s.text_stream), s.response.headers
    else:
        raw = sdk.messages.with_raw_response.create(
            model="claude-only", max_tokens=50, messages=ask()
        )
        text, headers = raw.parse().content[0].text, raw.headers
    assert text == echo_text(PROMPT)
    assert headers["x-fusebox-served-by"] == "claude/claude-b"


@pytest.mark.parametrize("fault", ["malformed3", "errorevent3", "nodone"])
def test_native_failures_after_content_continue(
    gateway: GatewayThread, upstream: FakeUpstream, fault: str
) -> None:
    """A Claude stream broken after content continues on the next Claude rung."""
    upstream.set_mode("claude-a", fault)
    with client(gateway).messages.stream(
        model="claude-only", max_tokens=50, messages=ask()
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == echo_text(PROMPT)
    assert final.stop_reason == "end_turn"
    assert upstream.count("claude-b") == 1
