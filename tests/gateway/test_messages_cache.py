"""``/v1/messages`` on the @cache rung, the fresh cache and idempotency keys, via the anthropic SDK."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import TYPE_CHECKING, Any

import anthropic
import httpx
import pytest

from gateway.cache import cache_key
from gateway.fakeanswer import echo_text
from tests.fakes.clock import FakeClock
from tests.harness import DEMO_KEY, GatewayThread, config_text, running_gateway

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from pathlib import Path

    from anthropic.types import Message

    from gateway.fakeupstream import FakeUpstream

CHAINS = """
[store]
path = "{store}"

[cache]
fresh_s = {fresh_s}
stale_s = 600

[providers.fake.breaker]
min_calls = 100

[providers.claude.breaker]
min_calls = 100

[models.native]
chain = ["claude/claude-n", "@cache"]

[models.translated]
chain = ["fake/gpt-t", "@cache"]

[models.plain]
chain = ["fake/gpt-p"]
"""
PROMPT = "what keeps a gateway standing"
TURNS = [{"role": "user", "content": PROMPT}]
UPSTREAM = {"native": "claude-n", "translated": "gpt-t", "plain": "gpt-p"}
EVENTS = ["message_start", "content_block_start", "content_block_delta"]
TOOL = {
    "name": "lookup",
    "description": "Look something up.",
    "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}},
}
ENDING = ["content_block_stop", "message_delta", "message_stop"]


def serve(
    upstream: FakeUpstream, store: Path, clock: FakeClock, *, fresh_s: float = 0
) -> Any:
    """Return a running-gateway context for the test chains with the store at ``store``."""
    body = CHAINS.format(store=store, fresh_s=fresh_s)
    return running_gateway(config_text(upstream.url, body), {"FAKE_KEY": "k"}, clock)


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when the test says so."""
    return FakeClock()


@pytest.fixture
def gateway(
    upstream: FakeUpstream, tmp_path: Path, clock: FakeClock
) -> Iterator[GatewayThread]:
    """Serve the test chains with fresh caching off and a fake clock."""
    with serve(upstream, tmp_path / "store", clock) as gw:
        yield gw


def client(gw: GatewayThread) -> anthropic.Anthropic:
    """Return the real anthropic SDK pointed at the gateway, retries off."""
    return anthropic.Anthropic(
        base_url=gw.url, api_key=DEMO_KEY, max_retries=0, timeout=10
    )


def body_of(model: str) -> dict[str, Any]:
    """Return the Messages body the SDK sends for ``model``."""
    return {"model": model, "max_tokens": 100, "messages": TURNS}


def wait_kept(gw: GatewayThread, model: str, **extra: Any) -> None:
    """Block (at most 2 s) until the Messages answer for ``model`` is in the cache."""
    key = cache_key("acme", model, {**body_of(model), **extra}, "messages")
    assert gw.loop is not None
    ticker = threading.Event()
    for _ in range(200):
        found = asyncio.run_coroutine_threadsafe(gw.runtime.disk.get(key), gw.loop)
        if found.result(timeout=5) is not None:
            return
        ticker.wait(0.01)
    raise AssertionError("the answer was not kept within 2 s")


def event_names(resp: httpx.Response) -> list[str]:
    """Return the ``event:`` names of an SSE body, in order."""
    return [ln[7:] for ln in resp.text.splitlines() if ln.startswith("event: ")]


@pytest.mark.parametrize("alias", ["native", "translated"])
def test_stale_message_is_served_plainly_when_the_primary_fails(
    gateway: GatewayThread, upstream: FakeUpstream, clock: FakeClock, alias: str
) -> None:
    """After the live rung fails, the kept ``message`` comes back from @cache with its age."""
    sdk = client(gateway)
    first = sdk.messages.create(model=alias, max_tokens=100, messages=TURNS)
    wait_kept(gateway, alias)
    upstream.set_mode(UPSTREAM[alias], "503")
    clock.advance(42)
    raw = sdk.messages.with_raw_response.create(
        model=alias, max_tokens=100, messages=TURNS
    )
    message = raw.parse()
    assert message.model_dump() == first.model_dump()
    assert raw.headers["x-fusebox-served-by"] == "@cache"
    assert raw.headers["x-fusebox-degraded"] == "cache"
    assert raw.headers["x-fusebox-cache-age"] == "42"
    assert raw.headers["x-fusebox-attempts"].endswith("; @cache=hit")


@pytest.mark.parametrize("alias", ["native", "translated"])
def test_a_streamed_message_is_kept_and_re_streamed(
    gateway: GatewayThread, upstream: FakeUpstream, clock: FakeClock, alias: str
) -> None:
    """A streamed answer is kept whole and replayed as Messages events to ``messages.stream``."""
    sdk = client(gateway)
    with sdk.messages.stream(model=alias, max_tokens=100, messages=TURNS) as live:
        live_text = live.get_final_message().content[0]
    wait_kept(gateway, alias)
    upstream.set_mode(UPSTREAM[alias], "503")
    clock.advance(7.9)
    with sdk.messages.stream(model=alias, max_tokens=100, messages=TURNS) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        headers = stream.response.headers
    assert live_text.type == "text"
    assert live_text.text == echo_text(PROMPT)
    assert text == echo_text(PROMPT)
    assert [b.type for b in final.content] == ["text"]
    assert final.content[0].type == "text"
    assert final.content[0].text == echo_text(PROMPT)
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0
    assert headers["x-fusebox-served-by"] == "@cache"
    assert headers["x-fusebox-degraded"] == "cache"
    assert headers["x-fusebox-cache-age"] == "7"


def test_a_plain_message_is_re_streamed_as_the_anthropic_event_sequence(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """A kept plain answer streams as message_start, one block's events, message_delta, message_stop."""
    client(gateway).messages.create(model="native", max_tokens=100, messages=TURNS)
    wait_kept(gateway, "native")
    upstream.set_mode("claude-n", "503")
    resp = httpx.post(
        gateway.url + "/v1/messages",
        json={**body_of("native"), "stream": True},
        headers={"x-api-key": DEMO_KEY},
        timeout=10,
    )
    names = event_names(resp)
    assert names[:3] == EVENTS
    assert names[-3:] == ENDING
    assert set(names[2:-3]) == {"content_block_delta"}
    assert "data: [DONE]" not in resp.text
    deltas = [
        json.loads(ln[6:])["delta"]["text"]
        for ln in resp.text.splitlines()
        if ln.startswith("data: ") and '"text_delta"' in ln
    ]
    assert "".join(deltas) == echo_text(PROMPT)


def test_a_kept_tool_use_is_re_streamed_whole(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """A kept plain ``tool_use`` answer re-streams to the same final message."""
    sdk = client(gateway)
    turns = [{"role": "user", "content": "weather in Paris"}]
    kwargs: dict[str, Any] = {"model": "native", "max_tokens": 100, "tools": [TOOL]}
    first = sdk.messages.create(messages=turns, **kwargs)
    assert first.stop_reason == "tool_use"
    wait_kept(gateway, "native", messages=turns, tools=[TOOL])
    upstream.set_mode("claude-n", "503")
    with sdk.messages.stream(messages=turns, **kwargs) as stream:
        final = stream.get_final_message()
        headers = stream.response.headers
    assert headers["x-fusebox-served-by"] == "@cache"
    assert final.model_dump() == first.model_dump()


def test_fresh_caching_answers_a_message_without_an_upstream_call(
    upstream: FakeUpstream, tmp_path: Path, clock: FakeClock
) -> None:
    """With ``fresh_s`` set, an identical Messages request is answered from cache, not degraded."""
    with serve(upstream, tmp_path / "store", clock, fresh_s=60) as gw:
        sdk = client(gw)
        first = sdk.messages.create(model="plain", max_tokens=100, messages=TURNS)
        wait_kept(gw, "plain")
        clock.advance(3)
        raw = sdk.messages.with_raw_response.create(
            model="plain", max_tokens=100, messages=TURNS
        )
    assert upstream.count("gpt-p") == 1
    assert raw.parse().model_dump() == first.model_dump()
    assert raw.headers["x-fusebox-served-by"] == "@cache"
    assert raw.headers["x-fusebox-cache-age"] == "3"
    assert "x-fusebox-degraded" not in raw.headers


def test_an_idempotent_message_is_replayed_without_a_second_call(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """A repeated ``Idempotency-Key`` gets the first ``message``, plain and re-streamed."""
    sdk = client(gateway)
    key = {"Idempotency-Key": "msg-1"}
    first = sdk.messages.create(
        model="plain", max_tokens=100, messages=TURNS, extra_headers=key
    )
    raw = sdk.messages.with_raw_response.create(
        model="plain", max_tokens=100, messages=TURNS, extra_headers=key
    )
    assert raw.parse().model_dump() == first.model_dump()
    assert raw.headers["x-fusebox-idempotent-replay"] == "true"
    assert upstream.count("gpt-p") == 1
    streamed = {"Idempotency-Key": "msg-2"}
    live, _ = stream_once(sdk, streamed)
    final, headers = stream_once(sdk, streamed)
    assert final.content[0].type == "text"
    assert final.content[0].text == echo_text(PROMPT)
    assert final.content == live.content
    assert headers["x-fusebox-idempotent-replay"] == "true"
    assert upstream.count("gpt-p") == 2


def stream_once(
    sdk: anthropic.Anthropic, headers: dict[str, str]
) -> tuple[Message, Mapping[str, str]]:
    """Stream one ``plain`` message and return the final message and the headers."""
    with sdk.messages.stream(
        model="plain", max_tokens=100, messages=TURNS, extra_headers=headers
    ) as stream:
        return stream.get_final_message(), stream.response.headers


def test_a_chat_request_never_gets_the_messages_answer(
    upstream: FakeUpstream, tmp_path: Path, clock: FakeClock
) -> None:
    """The same JSON and Idempotency-Key on chat completions is another request, answered as chat."""
    headers = {"Authorization": f"Bearer {DEMO_KEY}", "Idempotency-Key": "same"}
    with serve(upstream, tmp_path / "store", clock, fresh_s=60) as gw:
        message = httpx.post(
            gw.url + "/v1/messages", json=body_of("plain"), headers=headers, timeout=10
        )
        wait_kept(gw, "plain")
        chat = httpx.post(
            gw.url + "/v1/chat/completions",
            json=body_of("plain"),
            headers=headers,
            timeout=10,
        )
    assert message.json()["type"] == "message"
    assert chat.status_code == 200
    assert chat.json()["object"] == "chat.completion"
    assert chat.headers["x-fusebox-served-by"] == "fake/gpt-p"
    assert "x-fusebox-idempotent-replay" not in chat.headers
    assert upstream.count("gpt-p") == 2
