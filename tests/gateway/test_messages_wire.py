"""Pure translations for ``/v1/messages``: requests, answers, the splice, native bodies."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from gateway.messages import Splice
from gateway.messages_in import to_chat_payload
from gateway.messages_out import MessagesFromChat, event, static_events, to_message
from providers.anthropic_native import native_body
from providers.embedding import mock_embeddings, read_embeddings
from providers.errors import (
    InvalidRequestError,
    UpstreamBadRequestError,
    UpstreamProtocolError,
)
from providers.types import ChatRequest, ChatResponse, Usage


def test_history_with_tools_documents_and_thinking_translates() -> None:
    """Tool calls, tool results (with images and errors), documents and thinking map over."""
    pdf = {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}
    image = {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}
    body = {
        "model": "m",
        "system": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
        "messages": [
            {
                "role": "user",
                "content": [{"type": "document", "source": pdf, "title": "a.pdf"}],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "s"},
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {"q": 1}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "is_error": True,
                        "content": [{"type": "text", "text": "boom"}, image],
                    },
                    {
                        "type": "document",
                        "source": {
                            "type": "text",
                            "media_type": "text/plain",
                            "data": "notes",
                        },
                    },
                ],
            },
        ],
        "tool_choice": {"type": "tool", "name": "f"},
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
    }
    chat = to_chat_payload(body)
    system, doc, assistant, tool, user = chat["messages"]
    assert system == {"role": "system", "content": "one\ntwo"}
    assert doc["content"][0]["file"]["file_data"] == "data:application/pdf;base64,JVBER"
    assert assistant["content"] == "Let me look."
    assert assistant["tool_calls"][0]["function"] == {
        "name": "f",
        "arguments": '{"q":1}',
    }
    assert tool == {"role": "tool", "tool_call_id": "t1", "content": "Error: boom"}
    assert user["content"] == [
        {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
        {"type": "text", "text": "notes"},
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert "description" not in chat["tools"][0]["function"]


@pytest.mark.parametrize(
    ("content", "param"),
    [
        ([{"type": "search_result", "source": "x"}], "messages.0.content.0"),
        (
            [{"type": "image", "source": {"type": "file", "file_id": "f"}}],
            "messages.0.content.0.source",
        ),
        (
            [{"type": "document", "source": {"type": "url", "url": "u"}}],
            "messages.0.content.0.source",
        ),
        (["not a block"], "messages.0.content.0"),
        (42, "messages.0"),
    ],
)
def test_untranslatable_content_names_its_place(content: object, param: str) -> None:
    """Content an OpenAI rung cannot carry is refused with its path as ``param``."""
    with pytest.raises(InvalidRequestError) as raised:
        to_chat_payload({"messages": [{"role": "user", "content": content}]})
    assert raised.value.param == param


def test_assistant_server_tool_blocks_are_untranslatable() -> None:
    """A server-tool block in an assistant turn has no chat-completions form."""
    turn = {"role": "assistant", "content": [{"type": "server_tool_use", "id": "s"}]}
    with pytest.raises(InvalidRequestError, match="server_tool_use"):
        to_chat_payload({"messages": [turn]})
    with pytest.raises(InvalidRequestError):
        to_chat_payload({"messages": ["not a turn"]})


@pytest.mark.parametrize(("kind", "want"), [("any", "required"), ("none", "none")])
def test_tool_choice_kinds_map(kind: str, want: str) -> None:
    """``any`` means required, ``none`` means none."""
    body = {"messages": [], "tools": [{"name": "f"}], "tool_choice": {"type": kind}}
    chat = to_chat_payload(body)
    assert chat["tool_choice"] == want
    assert chat["tools"][0]["function"]["parameters"] == {
        "type": "object",
        "properties": {},
    }


def completion(message: dict[str, Any], finish: str) -> ChatResponse:
    """Return a whole OpenAI answer."""
    body = {
        "id": "c1",
        "model": "gpt",
        "choices": [{"message": message, "finish_reason": finish}],
    }
    usage = Usage(
        prompt_tokens=10,
        completion_tokens=3,
        total_tokens=13,
        prompt_tokens_details={"cached_tokens": 4},
    )
    return ChatResponse(body=msgspec.json.encode(body), model="gpt", usage=usage)


def test_tool_calls_and_refusals_become_blocks() -> None:
    """Tool calls become ``tool_use`` blocks (bad JSON as ``{}``); usage splits cached tokens."""
    calls = [
        {
            "id": "a",
            "type": "function",
            "function": {"name": "f", "arguments": '{"x": 1}'},
        },
        {
            "id": "b",
            "type": "function",
            "function": {"name": "g", "arguments": "{oops"},
        },
    ]
    message = json.loads(
        to_message(
            completion({"content": None, "tool_calls": calls}, "tool_calls"), "d"
        ).body
    )
    assert [b["input"] for b in message["content"]] == [{"x": 1}, {}]
    assert message["stop_reason"] == "tool_use"
    assert message["usage"]["input_tokens"] == 6
    assert message["usage"]["cache_read_input_tokens"] == 4
    refused = json.loads(
        to_message(completion({"refusal": "no"}, "content_filter"), "d").body
    )
    assert refused["content"] == [{"type": "text", "text": "no"}]
    assert refused["stop_reason"] == "refusal"


def test_a_body_that_is_not_a_completion_is_a_protocol_error() -> None:
    """An answer with no choices cannot be translated."""
    with pytest.raises(UpstreamProtocolError):
        to_message(ChatResponse(body=b'{"choices": []}', model="m"), "p/m")


class _Frames:
    """A finished OpenAI stream, as a provider yields it."""

    def __init__(self, chunks: list[dict[str, Any]]) -> None:
        self.frames = [b"data: " + msgspec.json.encode(c) + b"\n\n" for c in chunks]
        self.model, self.text, self.finish_reason = "gpt", "", "tool_calls"
        self.usage = Usage(prompt_tokens=5, completion_tokens=2, total_tokens=7)

    async def __aiter__(self):
        for frame in [*self.frames, b"data: not json\n\n"]:
            yield frame

    async def aclose(self) -> None:
        pass


def names(frames: list[bytes]) -> list[str]:
    """Return the event names of SSE frames."""
    return [f.split(b"\n", 1)[0].removeprefix(b"event: ").decode() for f in frames]


@pytest.mark.anyio
async def test_streamed_text_then_tool_calls_become_separate_blocks() -> None:
    """Text, then two tool calls, stream as three blocks with the stop and usage at the end."""
    call = {"index": 0, "id": "a", "function": {"name": "f", "arguments": ""}}
    chunks = [
        {
            "id": "c",
            "model": "gpt",
            "choices": [{"delta": {"role": "assistant", "content": "Hi"}}],
        },
        {"choices": [{"delta": {"tool_calls": [call]}}]},
        {
            "choices": [
                {
                    "delta": {
                        "tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]
                    }
                }
            ]
        },
        {
            "choices": [
                {
                    "delta": {
                        "tool_calls": [
                            {"index": 1, "function": {"name": "g", "arguments": "{}"}}
                        ]
                    }
                }
            ]
        },
        {"choices": [{"delta": {}, "finish_reason": "tool_calls"}]},
    ]
    stream = MessagesFromChat(_Frames(chunks))
    frames = [f async for f in stream]
    assert names(frames) == [
        "message_start", "ping",
        "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop",
    ]  # fmt: skip
    delta = json.loads(frames[-2].split(b"data: ")[1])
    assert delta["delta"]["stop_reason"] == "tool_use"
    assert delta["usage"]["output_tokens"] == 2
    assert (stream.model, stream.text, stream.finish_reason) == (
        "gpt",
        "",
        "tool_calls",
    )
    await stream.aclose()


def test_splice_renumbers_a_continuation_after_an_open_tool_block() -> None:
    """A continuation after an open tool block closes it and appends its blocks after."""
    splice = Splice()
    first = [
        event("message_start", {"message": {}}),
        event(
            "content_block_start", {"index": 0, "content_block": {"type": "tool_use"}}
        ),
        event(
            "content_block_delta", {"index": 0, "delta": {"type": "input_json_delta"}}
        ),
    ]
    assert [splice.relay(f) for f in first] == first
    cont = static_events("alias", "more")
    out = [splice.relay(f) for f in [cont[0], event("ping", {}), *cont[1:]]]
    assert out[:2] == [b"", b""]
    started = out[2].split(b"\n\n")
    assert json.loads(started[0].split(b"data: ")[1])["index"] == 0
    assert json.loads(started[1].split(b"data: ")[1])["index"] == 1
    assert json.loads(out[3].split(b"data: ")[1])["index"] == 1
    assert out[-1] == cont[-1]


@pytest.mark.parametrize(
    ("messages", "want", "ws"),
    [
        ([{"role": "user", "content": "q"}], [{"type": "text", "text": "So far"}], " "),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "Sure: "},
            ],
            [{"type": "text", "text": "Sure: So far"}],
            " ",
        ),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": [{"type": "tool_use"}]},
            ],
            [{"type": "tool_use"}, {"type": "text", "text": "So far"}],
            " ",
        ),
    ],
)
def test_native_prefill_continues_the_final_assistant_turn(
    messages: list[Any], want: list[Any], ws: str
) -> None:
    """A prefill extends the client's own assistant turn or starts one, trailing space cut."""
    request = ChatRequest(
        payload={"model": "alias", "messages": messages},
        model="claude",
        prefill="So far ",
    )
    body, join_ws = native_body(request)
    sent = json.loads(body)
    assert sent["model"] == "claude"
    assert sent["messages"][-1] == {"role": "assistant", "content": want}
    assert join_ws == ws


def test_mock_embeddings_check_their_input() -> None:
    """The mock embedder refuses bad input and dimensions and takes token arrays."""
    with pytest.raises(UpstreamBadRequestError):
        mock_embeddings({"input": [1.5]}, "m")
    with pytest.raises(UpstreamBadRequestError) as raised:
        mock_embeddings({"input": "x", "dimensions": 0}, "m")
    assert raised.value.param == "dimensions"
    tokens = json.loads(mock_embeddings({"input": [[1, 2], [3]]}, "m").body)
    assert len(tokens["data"]) == 2
    assert len(json.loads(mock_embeddings({"input": [1, 2]}, "m").body)["data"]) == 1


def test_an_upstream_embeddings_body_must_be_a_list() -> None:
    """A body that is not an embeddings list is a protocol error (and fails over)."""
    with pytest.raises(UpstreamProtocolError):
        read_embeddings(b'{"object": "error"}', "p/m", "m")
