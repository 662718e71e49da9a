"""``/v1/embeddings`` through real sockets, with the real openai SDK as the client."""

from __future__ import annotations

import base64
import math
import struct
from typing import TYPE_CHECKING

import openai
import pytest

from gateway.config import parse_config
from gateway.fakeanswer import embedding_vector
from providers.errors import ConfigError
from tests.harness import DEMO_KEY, GatewayThread, config_text, running_gateway

if TYPE_CHECKING:
    from collections.abc import Iterator

    from gateway.fakeupstream import FakeUpstream

CHAINS = """
[providers.sim]
kind = "mock"

[models.embed]
endpoint = "embeddings"
chain = ["fake/emb-a", "fake2/emb-b"]

[models.sim-embed]
endpoint = "embeddings"
chain = ["sim/sim-embed"]

[models.chat]
chain = ["fake/gpt-a"]
"""
TEXTS = ["the quick brown fox", "resilience is a feature"]


@pytest.fixture
def gateway(upstream: FakeUpstream) -> Iterator[GatewayThread]:
    """Serve a gateway with an embeddings alias over two interchangeable rungs."""
    with running_gateway(config_text(upstream.url, CHAINS), {"FAKE_KEY": "k"}) as gw:
        yield gw


def client(gw: GatewayThread) -> openai.OpenAI:
    """Return the real openai SDK pointed at the gateway, retries off."""
    return openai.OpenAI(
        base_url=gw.url + "/v1", api_key=DEMO_KEY, max_retries=0, timeout=10
    )


def test_default_base64_round_trips_to_the_upstream_vectors(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """The SDK's default base64 request is passed through and decodes to the vectors."""
    raw = client(gateway).embeddings.with_raw_response.create(
        model="embed", input=TEXTS
    )
    result = raw.parse()
    for item, text in zip(result.data, TEXTS, strict=True):
        assert item.embedding == embedding_vector(text)
    assert result.model == "emb-a"
    sent = upstream.records("emb-a")[-1].body
    assert sent == {"model": "emb-a", "input": TEXTS, "encoding_format": "base64"}
    assert raw.headers["x-fusebox-served-by"] == "fake/emb-a"
    assert raw.headers["x-fusebox-attempts"] == "fake/emb-a=200"


def test_explicit_float_is_passed_through(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """``encoding_format="float"`` reaches the upstream and comes back as float lists."""
    result = client(gateway).embeddings.create(
        model="embed", input=TEXTS[0], encoding_format="float", dimensions=4
    )
    assert result.data[0].embedding == embedding_vector(TEXTS[0], 4)
    sent = upstream.records("emb-a")[-1].body
    assert sent["encoding_format"] == "float"
    assert sent["dimensions"] == 4


@pytest.mark.parametrize("fault", ["503", "reset", "429"])
def test_failing_first_deployment_is_served_by_the_second(
    gateway: GatewayThread, upstream: FakeUpstream, fault: str
) -> None:
    """A failing first rung falls over to the interchangeable second one."""
    upstream.set_mode("emb-a", fault)
    raw = client(gateway).embeddings.with_raw_response.create(
        model="embed", input=TEXTS
    )
    assert raw.parse().data[1].embedding == embedding_vector(TEXTS[1])
    assert raw.headers["x-fusebox-served-by"] == "fake2/emb-b"
    assert raw.headers["x-fusebox-degraded"] == "fallback"
    assert raw.headers["x-fusebox-attempts"].endswith("fake2/emb-b=200")


def test_exhausted_embeddings_chain_is_an_openai_error(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """When both rungs fail, the client gets one OpenAI-format error and no retry hint."""
    upstream.set_mode("emb-a", "500")
    upstream.set_mode("emb-b", "500")
    with pytest.raises(openai.InternalServerError) as raised:
        client(gateway).embeddings.create(model="embed", input=TEXTS)
    assert raised.value.status_code == 502
    assert raised.value.response.headers["x-should-retry"] == "false"


def test_embeddings_request_to_a_chat_alias_is_refused(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """A chat alias refuses embeddings (and the other way round) with a clear 400."""
    sdk = client(gateway)
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.embeddings.create(model="chat", input="hello")
    assert raised.value.param == "model"
    assert 'endpoint = "embeddings"' in raised.value.message
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.chat.completions.create(
            model="embed", messages=[{"role": "user", "content": "hi"}]
        )
    assert "/v1/embeddings only" in raised.value.message
    assert upstream.records() == []


def test_missing_input_is_a_400_before_any_upstream_call(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    """A body without ``input`` is refused in the OpenAI format."""
    with pytest.raises(openai.BadRequestError) as raised:
        client(gateway).embeddings.create(model="embed", input=[])
    assert raised.value.param == "input"
    assert upstream.records() == []


def test_mock_provider_embeds_deterministically(gateway: GatewayThread) -> None:
    """The mock provider answers the same unit vectors for the same text, both encodings."""
    sdk = client(gateway)
    first = sdk.embeddings.create(model="sim-embed", input=TEXTS).data
    again = sdk.embeddings.create(
        model="sim-embed", input=TEXTS, encoding_format="float"
    )
    assert [d.embedding for d in first] == [d.embedding for d in again.data]
    assert first[0].embedding != first[1].embedding
    assert math.isclose(math.fsum(v * v for v in first[0].embedding), 1.0, rel_tol=1e-5)
    raw = sdk.embeddings.with_raw_response.create(
        model="sim-embed", input="x", encoding_format="base64"
    )
    packed = base64.b64decode(raw.http_response.json()["data"][0]["embedding"])
    assert len(struct.unpack(f"<{len(packed) // 4}f", packed)) == 16


def test_models_lists_chat_and_embeddings_aliases(gateway: GatewayThread) -> None:
    """``GET /v1/models`` keeps listing every alias, whatever it serves."""
    ids = {m.id for m in client(gateway).models.list()}
    assert {"embed", "sim-embed", "chat"} <= ids


def test_anthropic_provider_in_an_embeddings_chain_is_a_config_error() -> None:
    """Anthropic has no embeddings API, so naming it in an embeddings chain fails to load."""
    text = config_text(
        "http://127.0.0.1:9",
        '[models.embed]\nendpoint = "embeddings"\nchain = ["claude/claude-x"]\n',
    )
    with pytest.raises(ConfigError) as raised:
        parse_config(text)
    assert "models.embed.chain[0]" in str(raised.value)
    assert "no embeddings API" in str(raised.value)
