"""The response cache seen from outside: the ``@cache`` rung, fresh caching, a broken disk."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import threading
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest

from gateway.cache import cache_key
from gateway.fakeanswer import echo_text
from tests.fakes.clock import FakeClock
from tests.harness import (
    DEMO_KEY,
    OTHER_KEY,
    GatewayThread,
    config_text,
    running_gateway,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from openai.types.chat import ChatCompletionChunk

    from gateway.fakeupstream import FakeUpstream

CHAINS = """
[store]
path = "{store}"

[cache]
fresh_s = {fresh_s}
stale_s = 600

[providers.fake.breaker]
min_calls = 100

[providers.fake2.breaker]
min_calls = 100

[models.chat]
chain = ["fake/gpt-a", "fake2/gpt-b", "@cache"]

[models.tail]
chain = ["fake/gpt-t", "@cache", "@static"]
static = "Busy right now, try again soon."

[models.plain]
chain = ["fake/gpt-p"]

[models.cont]
chain = ["fake/gpt-c", "claude/claude-c", "@cache"]
"""
PROMPT = "what keeps a gateway standing"
MESSAGES = [{"role": "user", "content": PROMPT}]


def serve(
    upstream: FakeUpstream, store: Path, *, fresh_s: float = 0, clock: Any = None
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
    with serve(upstream, tmp_path / "store", clock=clock) as gw:
        yield gw


def body_of(model: str = "chat", **extra: Any) -> dict[str, Any]:
    """Return a chat request body for ``model``."""
    return {"model": model, "messages": MESSAGES, **extra}


def ask(
    gw: GatewayThread, model: str = "chat", *, key: str = DEMO_KEY, **extra: Any
) -> httpx.Response:
    """POST one chat completion with raw HTTP and return the response."""
    return httpx.post(
        gw.url + "/v1/chat/completions",
        json=body_of(model, **extra),
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )


def on_loop(gw: GatewayThread, coro: Any) -> Any:
    """Run ``coro`` on the gateway's event loop and return its result."""
    assert gw.loop is not None
    return asyncio.run_coroutine_threadsafe(coro, gw.loop).result(timeout=5)


def wait_kept(
    gw: GatewayThread, tenant: str = "acme", model: str = "chat", **extra: Any
) -> None:
    """Block (at most 2 s) until the answer to this request is in the cache."""
    key = cache_key(tenant, model, body_of(model, **extra))
    ticker = threading.Event()
    for _ in range(200):
        if on_loop(gw, gw.runtime.disk.get(key)) is not None:
            return
        ticker.wait(0.01)
    raise AssertionError("the answer was not kept within 2 s")


def fail_live_rungs(upstream: FakeUpstream) -> None:
    """Make every live deployment of the test chains answer 503."""
    for model in ("gpt-a", "gpt-b", "gpt-t"):
        upstream.set_mode(model, "503")


def sse_events(resp: httpx.Response) -> list[str]:
    """Return the ``data:`` payloads of an SSE body."""
    return [line[6:] for line in resp.text.splitlines() if line.startswith("data: ")]


def streamed_text(events: list[str]) -> str:
    """Return the content text carried by SSE chunk payloads."""
    chunks = [json.loads(e) for e in events if e != "[DONE]"]
    return "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
    )


def test_stale_answer_is_served_when_the_primary_and_fallback_fail(
    gateway: GatewayThread, upstream: FakeUpstream, clock: FakeClock
) -> None:
    """After both live rungs fail, the last good answer comes from @cache with its age."""
    first = ask(gateway)
    assert first.status_code == 200
    wait_kept(gateway)
    fail_live_rungs(upstream)
    clock.advance(42)
    resp = ask(gateway)
    assert resp.status_code == 200
    assert resp.json() == first.json()
    assert resp.headers["x-fusebox-served-by"] == "@cache"
    assert resp.headers["x-fusebox-degraded"] == "cache"
    assert resp.headers["x-fusebox-cache-age"] == "42"
    assert resp.headers["x-fusebox-attempts"].endswith("; @cache=hit")
    assert resp.json()["model"] == "gpt-a"


def test_stale_streamed_answer_is_re_streamed(
    gateway: GatewayThread, upstream: FakeUpstream, clock: FakeClock
) -> None:
    """A streamed answer is kept whole and replayed as a stream through the openai SDK."""
    sdk = openai.OpenAI(base_url=gateway.url + "/v1", api_key=DEMO_KEY, max_retries=0)
    live = sdk.chat.completions.create(model="chat", messages=MESSAGES, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in live if c.choices)
    wait_kept(gateway)
    fail_live_rungs(upstream)
    clock.advance(7.9)
    raw = sdk.chat.completions.with_raw_response.create(
        model="chat", messages=MESSAGES, stream=True
    )
    assert raw.headers["x-fusebox-served-by"] == "@cache"
    assert raw.headers["x-fusebox-cache-age"] == "7"
    chunks: list[ChatCompletionChunk] = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == echo_text(PROMPT)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert {c.model for c in chunks} == {"gpt-a"}


def test_a_continued_stream_is_kept_as_one_whole_answer(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """A stream cut and continued on a prefill rung is kept with its whole text."""
    upstream.set_mode("gpt-c", "cut3")
    live = ask(gateway, "cont", stream=True)
    assert streamed_text(sse_events(live)) == echo_text(PROMPT)
    wait_kept(gateway, model="cont")
    for model in ("gpt-c", "claude-c"):
        upstream.set_mode(model, "503")
    resp = ask(gateway, "cont")
    assert resp.headers["x-fusebox-served-by"] == "@cache"
    assert resp.json()["choices"][0]["message"]["content"] == echo_text(PROMPT)


def test_another_tenant_never_gets_the_cached_answer(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """The same request from another tenant is a cache miss and ends in the chain's error."""
    assert ask(gateway).status_code == 200
    wait_kept(gateway)
    fail_live_rungs(upstream)
    resp = ask(gateway, key=OTHER_KEY)
    assert resp.status_code == 502
    assert resp.headers["x-fusebox-attempts"].endswith("; @cache=miss")
    assert "choices" not in resp.json()


def test_an_answer_older_than_stale_s_is_not_served(
    gateway: GatewayThread, upstream: FakeUpstream, clock: FakeClock
) -> None:
    """Past ``stale_s`` the stored answer is a miss and the client gets the chain's error."""
    assert ask(gateway).status_code == 200
    wait_kept(gateway)
    fail_live_rungs(upstream)
    clock.advance(601)
    resp = ask(gateway)
    assert resp.status_code == 502
    assert resp.headers["x-fusebox-attempts"].endswith("; @cache=miss")


def test_a_plain_answer_serves_a_stream_request_from_the_cache(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """``stream`` is not part of the key: a kept plain answer is re-chunked for a stream."""
    plain = ask(gateway)
    wait_kept(gateway)
    fail_live_rungs(upstream)
    resp = ask(gateway, stream=True, stream_options={"include_usage": True})
    assert resp.headers["x-fusebox-served-by"] == "@cache"
    events = sse_events(resp)
    assert events[-1] == "[DONE]"
    assert streamed_text(events) == plain.json()["choices"][0]["message"]["content"]
    usage = json.loads(events[-2])
    assert usage["choices"] == []
    assert usage["usage"] == plain.json()["usage"]


def test_the_static_rung_answers_after_a_cache_miss(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """With nothing kept, the chain falls from @cache to @static."""
    fail_live_rungs(upstream)
    resp = ask(gateway, "tail")
    assert resp.status_code == 200
    assert resp.headers["x-fusebox-served-by"] == "@static"
    assert resp.headers["x-fusebox-attempts"] == (
        "fake/gpt-t=503,503,503; @cache=miss; @static=200"
    )


def test_an_exhausted_chain_names_the_cache_miss_in_its_503(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """When every rung is refused, the 503's message names each rung, the cache miss too."""
    upstream.set_mode("gpt-a", "429ra60")
    upstream.set_mode("gpt-b", "429ra60")
    assert ask(gateway).status_code == 429
    resp = ask(gateway)
    assert resp.status_code == 503
    message = resp.json()["error"]["message"]
    assert "fake/gpt-a=paused; fake2/gpt-b=paused; @cache=miss" in message
    assert int(resp.headers["retry-after"]) >= 1


def test_fresh_caching_answers_without_an_upstream_call(
    upstream: FakeUpstream, tmp_path: Path, clock: FakeClock
) -> None:
    """With ``fresh_s`` set, an identical request is answered from cache, not degraded."""
    with serve(upstream, tmp_path / "store", fresh_s=60, clock=clock) as gw:
        first = ask(gw, "plain")
        wait_kept(gw, model="plain")
        clock.advance(3)
        second = ask(gw, "plain")
    assert upstream.count("gpt-p") == 1
    assert second.json() == first.json()
    assert second.headers["x-fusebox-served-by"] == "@cache"
    assert second.headers["x-fusebox-cache-age"] == "3"
    assert "x-fusebox-degraded" not in second.headers


def test_fresh_caching_expires_after_fresh_s(
    upstream: FakeUpstream, tmp_path: Path, clock: FakeClock
) -> None:
    """An answer older than ``fresh_s`` is not reused: the upstream is called again."""
    with serve(upstream, tmp_path / "store", fresh_s=60, clock=clock) as gw:
        ask(gw, "plain")
        wait_kept(gw, model="plain")
        clock.advance(61)
        resp = ask(gw, "plain")
    assert upstream.count("gpt-p") == 2
    assert resp.headers["x-fusebox-served-by"] == "fake/gpt-p"


def test_without_fresh_s_every_request_reaches_the_upstream(
    gateway: GatewayThread, upstream: FakeUpstream, tmp_path: Path
) -> None:
    """By default identical requests both go upstream, and a chain without @cache never opens the disk."""
    ask(gateway, "plain")
    ask(gateway, "plain")
    assert upstream.count("gpt-p") == 2
    assert not (tmp_path / "store" / "cache").exists()


def test_a_changed_parameter_is_another_key(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    """A different temperature is a different request; the same one again is a hit."""
    with serve(upstream, tmp_path / "store", fresh_s=60) as gw:
        ask(gw, "plain", temperature=0.2)
        wait_kept(gw, model="plain", temperature=0.2)
        ask(gw, "plain", temperature=0.7)
        again = ask(gw, "plain", temperature=0.2, user="someone-else")
    assert upstream.count("gpt-p") == 2
    assert again.headers["x-fusebox-served-by"] == "@cache"


def test_a_streamed_tool_call_is_not_kept(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    """A streamed answer that is a tool call is more than its text, so it is not kept."""
    tools = [{"type": "function", "function": {"name": "look", "parameters": {}}}]
    with serve(upstream, tmp_path / "store", fresh_s=60) as gw:
        first = ask(gw, "plain", tools=tools, stream=True)
        assert sse_events(first)[-1] == "[DONE]"
        second = ask(gw, "plain", tools=tools, stream=True)
    assert upstream.count("gpt-p") == 2
    assert second.headers["x-fusebox-served-by"] == "fake/gpt-p"


def test_a_store_path_under_a_file_never_fails_a_request(
    upstream: FakeUpstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """When the cache directory cannot exist, requests are served live and misses are honest."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the store should be")
    caplog.set_level(logging.WARNING, logger="fusebox.cache")
    with serve(upstream, blocker / "store", fresh_s=60) as gw:
        assert ask(gw).status_code == 200
        assert ask(gw).status_code == 200
        fail_live_rungs(upstream)
        resp = ask(gw)
    assert upstream.count("gpt-a") == 2 + 3
    assert resp.status_code == 502
    assert resp.headers["x-fusebox-attempts"].endswith("; @cache=miss")
    assert any("cache read failed" in r.getMessage() for r in caplog.records)


def test_a_cache_directory_broken_mid_run_never_fails_a_request(
    upstream: FakeUpstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Replacing the cache directory with a file mid-run costs the cache, not requests."""
    store = tmp_path / "store"
    caplog.set_level(logging.WARNING, logger="fusebox.cache")
    # Large answers live in files of their own under the directory.
    upstream.set_mode("gpt-a", "words20000")
    with serve(upstream, store) as gw:
        assert ask(gw).status_code == 200
        wait_kept(gw)
        shutil.rmtree(store / "cache")
        (store / "cache").write_text("the disk went away")
        assert ask(gw).status_code == 200
        fail_live_rungs(upstream)
        resp = ask(gw)
        assert resp.status_code == 502
        assert resp.headers["x-fusebox-attempts"].endswith("; @cache=miss")
        upstream.set_mode("gpt-a", None)
        assert ask(gw).status_code == 200
    assert any(r.name == "fusebox.cache" for r in caplog.records)


def test_a_corrupt_entry_is_a_miss_and_is_dropped(
    gateway: GatewayThread, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    """A stored entry that does not decode is logged, dropped and treated as a miss."""
    caplog.set_level(logging.WARNING, logger="fusebox.cache")
    key = cache_key("acme", "chat", body_of())
    assert on_loop(gateway, gateway.runtime.disk.set(key, b"\x00garbage", 60))
    fail_live_rungs(upstream)
    resp = ask(gateway)
    assert resp.status_code == 502
    assert resp.headers["x-fusebox-attempts"].endswith("; @cache=miss")
    assert on_loop(gateway, gateway.runtime.disk.get(key)) is None
    assert any("corrupt" in r.getMessage() for r in caplog.records)
