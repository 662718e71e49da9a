"""Mid-stream continuation: a stream cut after content carries on where prefill allows."""

from __future__ import annotations

from typing import TYPE_CHECKING

import openai
import pytest

from gateway.fakeanswer import echo_text
from tests.harness import DEMO_KEY, GatewayThread, config_text, running_gateway

if TYPE_CHECKING:
    from collections.abc import Iterator

    from gateway.fakeupstream import FakeUpstream

CHAINS = """
[providers.vllm]
kind = "openai"
base_url = "{url}/v1"
api_key_env = "FAKE_KEY"
prefill = true
prefill_extra_body = {{ continue_final_message = true, add_generation_prompt = false }}

[models.to-claude]
chain = ["fake/gpt-a", "claude/claude-x"]

[models.to-vllm]
chain = ["fake/gpt-a", "vllm/llama"]

[models.no-prefill]
chain = ["fake/gpt-a", "fake2/gpt-b"]
"""
PROMPT = "tell me a longer story about resilient gateways please"


@pytest.fixture
def gateway(upstream: FakeUpstream) -> Iterator[GatewayThread]:
    """Serve a gateway whose chains fall from a plain deployment to prefill-capable ones."""
    text = config_text(upstream.url, CHAINS.format(url=upstream.url))
    with running_gateway(text, {"FAKE_KEY": "k"}) as gw:
        yield gw


def _stream(gw: GatewayThread, model: str) -> tuple[str, list[str | None]]:
    sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key=DEMO_KEY, max_retries=0)
    chunks = list(
        sdk.chat.completions.create(
            model=model, messages=[{"role": "user", "content": PROMPT}], stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    return text, [f for f in finishes if f is not None]


@pytest.mark.parametrize("cut", [1, 3, 6])
@pytest.mark.parametrize("alias", ["to-claude", "to-vllm"])
def test_cut_stream_continues_into_one_whole_answer(
    gateway: GatewayThread, upstream: FakeUpstream, cut: int, alias: str
) -> None:
    """A stream cut after N words continues on the prefill rung: one whole text, one finish."""
    upstream.set_mode("gpt-a", f"cut{cut}")
    text, finishes = _stream(gateway, alias)
    assert text == echo_text(PROMPT)
    assert finishes == ["stop"]
    continued = upstream.records()[-1]
    assert continued.body["messages"][-1]["role"] == "assistant"


def test_openai_prefill_carries_the_extra_body(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """An OpenAI-compatible prefill rung receives the delivered text and its extra body."""
    upstream.set_mode("gpt-a", "cut2")
    _stream(gateway, "to-vllm")
    body = upstream.records("llama")[-1].body
    assert body["continue_final_message"] is True
    assert body["add_generation_prompt"] is False
    assert echo_text(PROMPT).startswith(body["messages"][-1]["content"])


def test_rung_without_prefill_gets_a_clean_error_and_no_prefill(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """When the next rung cannot take a prefill, the client gets the in-band error, not a masked one."""
    upstream.set_mode("gpt-a", "cut3")
    sdk = openai.OpenAI(base_url=gateway.url + "/v1", api_key=DEMO_KEY, max_retries=0)
    stream = sdk.chat.completions.create(
        model="no-prefill", messages=[{"role": "user", "content": PROMPT}], stream=True
    )
    with pytest.raises(openai.APIError) as raised:
        for _ in stream:
            pass
    assert "gpt-a" in str(raised.value)
    assert upstream.count("gpt-b") == 0
