"""The OpenAI-compatible surface, through real sockets with the real openai SDK."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import httpx
import openai
import pytest

from tests.harness import (
    DEMO_KEY,
    OTHER_KEY,
    GatewayThread,
    config_text,
    running_gateway,
)
from tests.openapi import validate

if TYPE_CHECKING:
    from collections.abc import Iterator

    from gateway.fakeupstream import FakeUpstream

SECRET = "sk-upstream-SECRET-0123456789"
CHAINS = """
[models.chat]
chain = ["fake/gpt-a", "fake2/gpt-b"]

[models.claude]
chain = ["claude/claude-x"]

[models.private]
chain = ["fake/gpt-private"]
"""


@pytest.fixture
def gateway(upstream: FakeUpstream) -> Iterator[GatewayThread]:
    """Serve a gateway whose chains point at the fake upstream."""
    text = config_text(upstream.url, CHAINS, globex='models = ["chat", "claude"]')
    with running_gateway(text, {"FAKE_KEY": SECRET}) as gw:
        yield gw


def client(gw: GatewayThread, key: str = DEMO_KEY) -> openai.OpenAI:
    """Return the real openai SDK pointed at the gateway, with its retries off."""
    return openai.OpenAI(
        base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=10
    )


def test_plain_completion_matches_the_upstream_answer(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """A plain completion through the gateway carries the upstream's answer and model."""
    direct = openai.OpenAI(base_url=upstream.url + "/v1", api_key="x", max_retries=0)
    messages = [{"role": "user", "content": "Hello there gateway"}]
    want = direct.chat.completions.create(model="gpt-a", messages=messages)
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="chat",
        messages=messages,
    )
    got = raw.parse()
    assert got.choices[0].message.content == want.choices[0].message.content
    assert got.model == "gpt-a"
    assert raw.headers["x-fusebox-served-by"] == "fake/gpt-a"
    assert raw.headers["x-request-id"].startswith("req_")
    assert "x-fusebox-degraded" not in raw.headers
    validate("CreateChatCompletionResponse", json.loads(raw.content))


def test_unknown_fields_reach_the_upstream_with_only_model_rewritten(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """The upstream receives the client's JSON unchanged except for ``model``."""
    client(gateway).chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "hi"}],
        temperature=0.3,
        extra_body={"vendor_knob": {"a": 1}},
    )
    seen = upstream.records("gpt-a")[-1].body
    assert seen["model"] == "gpt-a"
    assert seen["vendor_knob"] == {"a": 1}
    assert seen["temperature"] == 0.3


def test_streamed_completion_is_whole_and_schema_valid(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """A streamed answer arrives whole, every chunk valid, with the usage when asked."""
    url = gateway.url + "/v1/chat/completions"
    body = {
        "model": "chat",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "stream me something"}],
    }
    headers = {"Authorization": f"Bearer {DEMO_KEY}"}
    with httpx.stream("POST", url, json=body, headers=headers, timeout=10) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    assert chunks[-1]["usage"]["completion_tokens"] > 0
    text = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
    )
    direct = openai.OpenAI(base_url=upstream.url + "/v1", api_key="x", max_retries=0)
    want = direct.chat.completions.create(model="gpt-a", messages=body["messages"])
    assert text == want.choices[0].message.content


def test_stream_without_include_usage_has_no_usage_chunk(
    gateway: GatewayThread,
) -> None:
    """Without ``include_usage`` the client gets no usage-only chunk."""
    stream = client(gateway).chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = list(stream)
    assert chunks
    assert all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.anyio
async def test_async_sdk_plain_and_streamed(gateway: GatewayThread) -> None:
    """The async openai SDK gets plain and streamed answers."""
    sdk = openai.AsyncOpenAI(
        base_url=gateway.url + "/v1", api_key=DEMO_KEY, max_retries=0
    )
    messages = [{"role": "user", "content": "async please"}]
    plain = await sdk.chat.completions.create(model="chat", messages=messages)
    stream = await sdk.chat.completions.create(
        model="chat", messages=messages, stream=True
    )
    text = "".join(
        [c.choices[0].delta.content or "" async for c in stream if c.choices]
    )
    assert text == plain.choices[0].message.content
    await sdk.close()


def test_models_lists_the_tenants_aliases(gateway: GatewayThread) -> None:
    """``models.list()`` shows each tenant only the aliases it may call."""
    acme = sorted(m.id for m in client(gateway).models.list())
    globex = sorted(m.id for m in client(gateway, OTHER_KEY).models.list())
    assert acme == ["chat", "claude", "private"]
    assert globex == ["chat", "claude"]
    raw = httpx.get(
        gateway.url + "/v1/models", headers={"Authorization": f"Bearer {DEMO_KEY}"}
    )
    validate("ListModelsResponse", raw.json())


def test_healthz_answers_without_a_key(gateway: GatewayThread) -> None:
    """``/healthz`` answers 200 from memory with no key."""
    assert httpx.get(gateway.url + "/healthz").json() == {"status": "ok"}


def _post(
    gw: GatewayThread,
    body: object,
    *,
    key: str | None = DEMO_KEY,
    raw: bytes | None = None,
) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    content = raw if raw is not None else json.dumps(body).encode()
    return httpx.post(gw.url + "/v1/chat/completions", content=content, headers=headers)


GOOD = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("body", "key", "raw", "status", "param"),
    [
        (GOOD, None, None, 401, None),
        (GOOD, "sk-wrong", None, 401, None),
        ({**GOOD, "model": "private"}, OTHER_KEY, None, 403, "model"),
        ({**GOOD, "model": "nope"}, DEMO_KEY, None, 404, "model"),
        (None, DEMO_KEY, b"{not json", 400, None),
        (None, DEMO_KEY, b"[1, 2]", 400, None),
        ({"model": "chat"}, DEMO_KEY, None, 400, "messages"),
        ({"messages": GOOD["messages"]}, DEMO_KEY, None, 400, "model"),
        ({**GOOD, "messages": []}, DEMO_KEY, None, 400, "messages"),
        ({**GOOD, "model": 7}, DEMO_KEY, None, 400, "model"),
        ({**GOOD, "stream": "yes"}, DEMO_KEY, None, 400, "stream"),
        (
            {**GOOD, "messages": [{"role": "robot", "content": "x"}]},
            DEMO_KEY,
            None,
            400,
            "messages[0].role",
        ),
    ],
)
def test_bad_input_gets_an_openai_error(
    gateway: GatewayThread,
    body: object,
    key: str | None,
    raw: bytes | None,
    status: int,
    param: str | None,
) -> None:
    """Each bad request gets its status and an OpenAI error naming the field."""
    resp = _post(gateway, body, key=key, raw=raw)
    assert resp.status_code == status
    validate("ErrorResponse", resp.json())
    assert resp.json()["error"]["param"] == param
    assert resp.headers["x-request-id"]


def test_body_over_the_limit_is_413(upstream: FakeUpstream) -> None:
    """A body larger than ``max_body_mib`` is refused with 413 before any upstream call."""
    text = config_text(upstream.url, CHAINS).replace(
        "[defaults.retry]", "[server]\nmax_body_mib = 0.01\n\n[defaults.retry]"
    )
    with running_gateway(text, {"FAKE_KEY": SECRET}) as gw:
        big = {**GOOD, "messages": [{"role": "user", "content": "x" * 20000}]}
        resp = _post(gw, big)
    assert resp.status_code == 413
    validate("ErrorResponse", resp.json())
    assert upstream.count("gpt-a") == 0


def test_sdk_raises_typed_errors(gateway: GatewayThread) -> None:
    """The openai SDK maps the gateway's errors to its typed exceptions."""
    with pytest.raises(openai.AuthenticationError):
        client(gateway, "sk-wrong").chat.completions.create(
            model="chat", messages=GOOD["messages"]
        )
    with pytest.raises(openai.PermissionDeniedError):
        client(gateway, OTHER_KEY).chat.completions.create(
            model="private", messages=GOOD["messages"]
        )
    with pytest.raises(openai.NotFoundError):
        client(gateway).chat.completions.create(model="nope", messages=GOOD["messages"])


def test_anthropic_deployment_answers_in_openai_format(gateway: GatewayThread) -> None:
    """A chain on an Anthropic deployment answers chat completions, plain and streamed."""
    sdk = client(gateway)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello claude"},
    ]
    plain = sdk.chat.completions.with_raw_response.create(
        model="claude", messages=messages
    )
    validate("CreateChatCompletionResponse", json.loads(plain.content))
    assert plain.headers["x-fusebox-served-by"] == "claude/claude-x"
    answer = plain.parse()
    assert answer.usage is not None
    assert answer.usage.completion_tokens > 0
    stream = sdk.chat.completions.create(model="claude", messages=messages, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == answer.choices[0].message.content


def test_anthropic_tool_call_round_trip_streamed(gateway: GatewayThread) -> None:
    """Tool calls from an Anthropic deployment stream as OpenAI tool-call deltas."""
    tools = [
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
    messages: list[dict[str, object]] = [{"role": "user", "content": "find cats"}]
    stream = client(gateway).chat.completions.create(
        model="claude",
        messages=messages,
        tools=tools,
        stream=True,
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        if not chunk.choices:
            continue
        finish = chunk.choices[0].finish_reason or finish
        for tc in chunk.choices[0].delta.tool_calls or []:
            entry = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] += tc.id or ""
            entry["name"] += (tc.function.name if tc.function else None) or ""
            entry["arguments"] += (tc.function.arguments if tc.function else None) or ""
    assert finish == "tool_calls"
    assert calls[0]["name"] == "search"
    args = json.loads(calls[0]["arguments"])
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": calls[0]["id"],
                    "type": "function",
                    "function": {"name": "search", "arguments": calls[0]["arguments"]},
                }
            ],
        },
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "three cats found"},
    ]
    final = client(gateway).chat.completions.create(
        model="claude", messages=messages, tools=tools
    )
    assert "three cats found" in (final.choices[0].message.content or "")
    assert args


def test_provider_key_never_reaches_clients_or_logs(
    gateway: GatewayThread, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    """The provider key goes upstream only: never into a response, header or log line."""
    caplog.set_level(logging.DEBUG)
    upstream.set_mode("gpt-a", "401")
    upstream.set_mode("gpt-b", "401")
    resp = _post(gateway, GOOD)
    assert resp.status_code >= 400
    assert SECRET not in resp.text
    assert all(SECRET not in v for v in resp.headers.values())
    assert SECRET not in caplog.text
    assert upstream.records("gpt-a")[-1].headers["authorization"] == f"Bearer {SECRET}"
