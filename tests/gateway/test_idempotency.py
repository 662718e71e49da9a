"""Idempotency keys seen from outside: replays, coalesced duplicates, conflicts."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest

from gateway.fakeanswer import echo_text
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

    from gateway.fakeupstream import FakeUpstream

CHAINS = """
[store]
path = "{store}"

[models.solo]
chain = ["fake/gpt-i"]
"""
PROMPT = "book one table for two"


def serve(upstream: FakeUpstream, store: Path) -> Any:
    """Return a running-gateway context whose store lives at ``store``."""
    text = config_text(upstream.url, CHAINS.format(store=store))
    return running_gateway(text, {"FAKE_KEY": "k"})


@pytest.fixture
def gateway(upstream: FakeUpstream, tmp_path: Path) -> Iterator[GatewayThread]:
    """Serve one alias on one fake deployment, with the store under ``tmp_path``."""
    with serve(upstream, tmp_path / "store") as gw:
        yield gw


def ask(
    gw: GatewayThread,
    idem: str | None = "key-1",
    *,
    key: str = DEMO_KEY,
    content: str = PROMPT,
    **extra: Any,
) -> httpx.Response:
    """POST one chat completion, with ``Idempotency-Key: idem`` unless it is None."""
    headers = {"Authorization": f"Bearer {key}"}
    if idem is not None:
        headers["Idempotency-Key"] = idem
    body = {"model": "solo", "messages": [{"role": "user", "content": content}]}
    return httpx.post(
        gw.url + "/v1/chat/completions",
        json={**body, **extra},
        headers=headers,
        timeout=10,
    )


def streamed_text(resp: httpx.Response) -> str:
    """Return the content text of an SSE response."""
    events = [ln[6:] for ln in resp.text.splitlines() if ln.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    return "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
    )


def test_a_repeat_gets_the_stored_answer_without_an_upstream_call(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """The same key and body twice reach the upstream once; the repeat says it is a replay."""
    first = ask(gateway)
    second = ask(gateway)
    assert first.status_code == second.status_code == 200
    assert upstream.count("gpt-i") == 1
    assert second.json() == first.json()
    assert second.headers["x-fusebox-idempotent-replay"] == "true"
    assert "x-fusebox-idempotent-replay" not in first.headers


def test_a_streamed_repeat_is_re_streamed(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """A repeated stream request gets the stored answer streamed again through the SDK."""
    sdk = openai.OpenAI(
        base_url=gateway.url + "/v1",
        api_key=DEMO_KEY,
        max_retries=0,
        default_headers={"Idempotency-Key": "stream-1"},
    )
    texts = []
    for _ in range(2):
        chunks = list(
            sdk.chat.completions.create(
                model="solo",
                messages=[{"role": "user", "content": PROMPT}],
                stream=True,
            )
        )
        texts.append("".join(c.choices[0].delta.content or "" for c in chunks))
    assert texts == [echo_text(PROMPT)] * 2
    assert upstream.count("gpt-i") == 1


def test_a_concurrent_duplicate_waits_for_the_first(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """Two requests at once with one key cost one upstream call and get one answer."""
    upstream.set_mode("gpt-i", "delay300")
    with ThreadPoolExecutor(2) as pool:
        both = list(pool.map(lambda _: ask(gateway, "same-time"), range(2)))
    assert [r.status_code for r in both] == [200, 200]
    assert upstream.count("gpt-i") == 1
    assert both[0].json() == both[1].json()
    replays = [r.headers.get("x-fusebox-idempotent-replay") for r in both]
    assert replays.count("true") == 1


def test_a_key_reused_with_another_body_is_422(gateway: GatewayThread) -> None:
    """Reusing a key with a different body is refused in OpenAI's error format."""
    assert ask(gateway, "reused").status_code == 200
    resp = ask(gateway, "reused", content="something else entirely")
    assert resp.status_code == 422
    error = resp.json()["error"]
    assert error["code"] == "idempotency_key_reused"
    assert error["type"] == "invalid_request_error"
    assert set(error) == {"message", "type", "param", "code"}


def test_stream_is_part_of_the_idempotent_body(gateway: GatewayThread) -> None:
    """The same key with ``stream`` flipped is another body, so it is a conflict."""
    assert ask(gateway, "flip").status_code == 200
    assert ask(gateway, "flip", stream=True).status_code == 422


def test_a_failed_first_request_is_not_stored(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """A first request that failed keeps nothing, so its retry runs again and succeeds."""
    upstream.script("gpt-i", "503", "503", "503")
    assert ask(gateway, "retry-me").status_code == 502
    resp = ask(gateway, "retry-me")
    assert resp.status_code == 200
    assert "x-fusebox-idempotent-replay" not in resp.headers
    assert upstream.count("gpt-i") == 4


def test_keys_are_scoped_per_tenant(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """Another tenant's identical key and body is its own request, never a replay."""
    ask(gateway, "shared")
    other = ask(gateway, "shared", key=OTHER_KEY)
    assert other.status_code == 200
    assert "x-fusebox-idempotent-replay" not in other.headers
    assert upstream.count("gpt-i") == 2


def test_requests_without_a_key_are_not_deduplicated(
    gateway: GatewayThread, upstream: FakeUpstream, tmp_path: Path
) -> None:
    """Without the header every request is its own, and the disk is never opened."""
    ask(gateway, None)
    ask(gateway, None)
    assert upstream.count("gpt-i") == 2
    assert not (tmp_path / "store" / "cache").exists()


def test_a_replay_survives_a_restart(upstream: FakeUpstream, tmp_path: Path) -> None:
    """The stored answer is on disk: a new gateway process replays it too."""
    with serve(upstream, tmp_path / "store") as gw:
        first = ask(gw, "durable")
    with serve(upstream, tmp_path / "store") as gw:
        again = ask(gw, "durable")
    assert again.json() == first.json()
    assert again.headers["x-fusebox-idempotent-replay"] == "true"
    assert upstream.count("gpt-i") == 1


def test_a_broken_store_still_serves_and_coalesces(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    """With the store path under a file, keyed requests are served and duplicates coalesced."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    upstream.set_mode("gpt-i", "delay300")
    with serve(upstream, blocker / "store") as gw, ThreadPoolExecutor(2) as pool:
        both = list(pool.map(lambda _: ask(gw, "no-disk"), range(2)))
    assert [r.status_code for r in both] == [200, 200]
    assert upstream.count("gpt-i") == 1
