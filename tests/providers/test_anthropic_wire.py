"""Pure translation between chat completions and Anthropic Messages, no sockets.

Recorded Anthropic bodies and SSE bytes go in; OpenAI JSON and chunk frames come
out, checked against the OpenAI spec schemas and parsed by the openai SDK. The
recordings themselves are checked against the anthropic SDK's models.
"""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from providers.anthropic_wire import (
    StreamEventError,
    StreamTranslator,
    map_event_error,
    map_status_error,
    rejects_sampling,
    swallow_ws,
    to_chat_response,
    to_messages_request,
)
from providers.errors import (
    UpstreamAuthError,
    UpstreamBadRequestError,
    UpstreamContextLengthError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRateLimitError,
    UpstreamUnavailableError,
)
from providers.sse import SSEParser
from providers.types import ChatRequest
from tests.openapi import validate

DEPLOYMENT = "claude/claude-test"
CREATED = 1_700_000_000
UPSTREAM_KEY = "sk-ant-api03-UPSTREAM_KEYUPSTREAM_KEYUPSTREAM_KEY"
HELLO = [{"role": "user", "content": "Hello"}]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
            "strict": True,
        },
    },
    {"type": "function", "function": {"name": "now"}},
]


def request_body(
    payload: dict[str, Any],
    *,
    prefill: str = "",
    max_tokens_default: int = 4096,
    stream: bool = False,
    sampling: bool = True,
) -> dict[str, Any]:
    """Translate ``payload`` as attempt ``claude-test`` and return the body."""
    request = ChatRequest(payload=payload, model="claude-test", prefill=prefill)
    return to_messages_request(
        request,
        max_tokens_default=max_tokens_default,
        deployment=DEPLOYMENT,
        stream=stream,
        sampling=sampling,
    ).body


# ----------------------------------------------------------------- requests


def test_system_and_developer_messages_become_top_level_system_blocks() -> None:
    """System and developer messages leave `messages` for `system`, in order."""
    body = request_body(
        {
            "model": "smart",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {
                    "role": "developer",
                    "content": [
                        {
                            "type": "text",
                            "text": "Use French.",
                            "cache_control": {"type": "ephemeral"},
                        }
                    ],
                },
            ],
        }
    )
    assert body["system"] == [
        {"type": "text", "text": "Be brief."},
        {"type": "text", "text": "Use French.", "cache_control": {"type": "ephemeral"}},
    ]
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]}
    ]


def test_model_is_the_attempts_upstream_model_not_the_clients_alias() -> None:
    """The body names `request.model`, whatever alias the client sent."""
    body = request_body({"model": "smart", "messages": HELLO})
    assert body["model"] == "claude-test"
    assert "stream" not in body


def test_consecutive_same_role_turns_are_merged() -> None:
    """Runs of user (and tool) or assistant messages become one turn each."""
    body = request_body(
        {
            "messages": [
                {"role": "user", "content": "one"},
                {"role": "user", "content": [{"type": "text", "text": "two"}]},
                {"role": "assistant", "content": "three"},
                {"role": "assistant", "content": "four"},
                {"role": "user", "content": "five"},
            ]
        }
    )
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "one"},
                {"type": "text", "text": "two"},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "three"},
                {"type": "text", "text": "four"},
            ],
        },
        {"role": "user", "content": [{"type": "text", "text": "five"}]},
    ]


def test_empty_and_whitespace_text_is_dropped() -> None:
    """Empty text blocks and empty assistant turns, which Anthropic rejects, vanish."""
    body = request_body(
        {
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "  "},
                {"role": "user", "content": [{"type": "text", "text": ""}]},
                {"role": "user", "content": "again"},
            ]
        }
    )
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Hi"},
                {"type": "text", "text": "again"},
            ],
        }
    ]


def test_images_from_data_urls_and_http_urls() -> None:
    """A data URL becomes a base64 source and an https URL a url source."""
    body = request_body(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Compare"},
                        {
                            "type": "image_url",
                            "image_url": {
                                "url": "data:image/png;base64,iVBORw0KGgo=",
                                "detail": "high",
                            },
                        },
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://example.com/cat.jpg"},
                        },
                    ],
                }
            ]
        }
    )
    assert body["messages"][0]["content"][1:] == [
        {
            "type": "image",
            "source": {
                "type": "base64",
                "media_type": "image/png",
                "data": "iVBORw0KGgo=",
            },
        },
        {
            "type": "image",
            "source": {"type": "url", "url": "https://example.com/cat.jpg"},
        },
    ]


def test_pdf_file_parts_become_documents() -> None:
    """An inline PDF file part becomes a base64 document block."""
    part = {
        "type": "file",
        "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"},
    }
    body = request_body({"messages": [{"role": "user", "content": [part]}]})
    assert body["messages"][0]["content"] == [
        {
            "type": "document",
            "source": {
                "type": "base64",
                "media_type": "application/pdf",
                "data": "JVBE",
            },
        }
    ]


@pytest.mark.parametrize(
    ("part", "param"),
    [
        (
            {"type": "image_url", "image_url": {"url": "ftp://example.com/a.png"}},
            "messages[0].content[0].image_url",
        ),
        (
            {"type": "image_url", "image_url": {"url": "data:image/png,notbase64"}},
            "messages[0].content[0].image_url",
        ),
        (
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
            "messages[0].content[0].type",
        ),
        (
            {"type": "file", "file": {"file_id": "file-1"}},
            "messages[0].content[0].file",
        ),
    ],
)
def test_unsupported_content_parts_are_rejected_with_their_path(
    part: dict[str, Any], param: str
) -> None:
    """A part Anthropic cannot take raises a bad request naming where it is."""
    with pytest.raises(UpstreamBadRequestError) as caught:
        request_body({"messages": [{"role": "user", "content": [part]}]})
    assert caught.value.param == param
    assert caught.value.deployment == DEPLOYMENT
    assert not caught.value.failover


_CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"messages": "hi"}, "messages"),
        ({"messages": ["hi"]}, "messages[0]"),
        ({"messages": [{"role": "function", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "messages[0].content[0]",
        ),
        ({"messages": [{"role": "user", "content": ["x"]}]}, "messages[0].content[0]"),
        (
            {"messages": [{"role": "system", "content": [{"type": "image_url"}]}]},
            "messages[0].content[0]",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages[0].content[0].image_url",
        ),
        (
            {"messages": [{"role": "assistant", "content": [{"type": "image_url"}]}]},
            "messages[0].content[0]",
        ),
        (
            {"messages": [{"role": "assistant", "tool_calls": {"id": "c1"}}]},
            "messages[0].tool_calls",
        ),
        (
            {"messages": [{"role": "assistant", "tool_calls": [{"id": "c1"}]}]},
            "messages[0].tool_calls[0]",
        ),
        (
            {"messages": [{"role": "assistant", "tool_calls": [_CALL | {"id": ""}]}]},
            "messages[0].tool_calls[0]",
        ),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        ({"messages": HELLO, "tools": {"a": 1}}, "tools"),
        ({"messages": HELLO, "tools": [{"type": "custom"}]}, "tools[0].type"),
        ({"messages": HELLO, "tools": [{"type": "function"}]}, "tools[0].function"),
        (
            {"messages": HELLO, "tools": [{"type": "function", "function": {}}]},
            "tools[0].function.name",
        ),
        (
            {
                "messages": HELLO,
                "tools": TOOLS,
                "tool_choice": {"type": "function", "function": {}},
            },
            "tool_choice",
        ),
        (
            {"messages": HELLO, "response_format": {"type": "json_schema"}},
            "response_format",
        ),
    ],
)
def test_malformed_requests_name_the_offending_field(
    payload: dict[str, Any], param: str
) -> None:
    """A request the translation cannot read is refused with the field's path."""
    with pytest.raises(UpstreamBadRequestError) as caught:
        request_body(payload)
    assert caught.value.param == param
    assert caught.value.upstream_type == "invalid_request_error"


def test_odd_but_valid_values_are_read_leniently() -> None:
    """Object arguments, raw base64 files, empty tool results and odd types pass."""
    body = request_body(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "file", "file": {"file_data": "JVBE"}}],
                },
                {
                    "role": "assistant",
                    "content": [{"type": "refusal", "refusal": "no"}],
                    "tool_calls": [
                        _CALL | {"function": {"name": "f", "arguments": {"a": 1}}},
                        _CALL
                        | {"id": "c2", "function": {"name": "f", "arguments": "[1]"}},
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": ""},
                {"role": "tool", "tool_call_id": "c2", "content": []},
            ],
            "max_tokens": True,
            "temperature": False,
            "stop": 5,
        }
    )
    user, assistant, results = body["messages"]
    assert user["content"][0]["source"]["media_type"] == "application/pdf"
    assert [b["input"] for b in assistant["content"]] == [{"a": 1}, {}]
    assert results["content"] == [
        {"type": "tool_result", "tool_use_id": "c1"},
        {"type": "tool_result", "tool_use_id": "c2"},
    ]
    assert body["max_tokens"] == 4096
    assert set(body) == {"model", "max_tokens", "messages"}


def test_assistant_tool_calls_and_tool_results() -> None:
    """Tool calls become tool_use blocks and tool messages tool_result blocks."""
    body = request_body(
        {
            "messages": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {
                    "role": "assistant",
                    "content": "Let me check.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {
                                "name": "get_weather",
                                "arguments": '{"city": "Paris"}',
                            },
                        },
                        {
                            "id": "call_2",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": "{bad"},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
                {
                    "role": "tool",
                    "tool_call_id": "call_2",
                    "content": [{"type": "text", "text": "21 C"}],
                },
                {"role": "user", "content": "Thanks"},
            ]
        }
    )
    assistant, results = body["messages"][1], body["messages"][2]
    assert assistant == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me check."},
            {
                "type": "tool_use",
                "id": "call_1",
                "name": "get_weather",
                "input": {"city": "Paris"},
            },
            {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {}},
        ],
    }
    assert results == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "18 C"},
            {
                "type": "tool_result",
                "tool_use_id": "call_2",
                "content": [{"type": "text", "text": "21 C"}],
            },
            {"type": "text", "text": "Thanks"},
        ],
    }
    assert len(body["messages"]) == 3


def test_max_tokens_default_and_client_values() -> None:
    """`max_completion_tokens` wins over `max_tokens`; neither gives the default."""
    assert request_body({"messages": HELLO})["max_tokens"] == 4096
    assert request_body({"messages": HELLO}, max_tokens_default=99)["max_tokens"] == 99
    assert request_body({"messages": HELLO, "max_tokens": 50})["max_tokens"] == 50
    both = {"messages": HELLO, "max_tokens": 50, "max_completion_tokens": 70}
    assert request_body(both)["max_tokens"] == 70


@pytest.mark.parametrize(
    ("stop", "expected"),
    [
        ("END", ["END"]),
        (["END", " ", "\n", "STOP"], ["END", "STOP"]),
        ([" "], None),
        (None, None),
    ],
)
def test_stop_becomes_stop_sequences_without_whitespace_only_entries(
    stop: object, expected: list[str] | None
) -> None:
    """`stop` maps to `stop_sequences`, whitespace-only entries dropped."""
    body = request_body({"messages": HELLO, "stop": stop})
    assert body.get("stop_sequences") == expected


def test_temperature_is_clamped_and_top_p_sent_alone() -> None:
    """Temperature is clamped to [0, 1]; top_p goes only when temperature is unset."""
    assert request_body({"messages": HELLO, "temperature": 1.7})["temperature"] == 1.0
    body = request_body({"messages": HELLO, "temperature": 0.2, "top_p": 0.5})
    assert body["temperature"] == 0.2
    assert "top_p" not in body
    assert request_body({"messages": HELLO, "top_p": 0.5})["top_p"] == 0.5
    quiet = request_body({"messages": HELLO, "temperature": 0.2}, sampling=False)
    assert "temperature" not in quiet


def test_unsupported_openai_parameters_are_dropped() -> None:
    """Parameters with no Anthropic counterpart never reach the upstream."""
    body = request_body(
        {
            "messages": HELLO,
            "n": 1,
            "frequency_penalty": 0.5,
            "presence_penalty": 0.5,
            "logit_bias": {"1": 2},
            "logprobs": True,
            "top_logprobs": 2,
            "seed": 7,
            "stream_options": {"include_usage": True},
            "reasoning_effort": "low",
            "response_format": {"type": "json_object"},
            "service_tier": "auto",
            "store": True,
            "metadata": {"a": "b"},
        }
    )
    assert set(body) == {"model", "max_tokens", "messages"}


def test_n_above_one_is_a_bad_request_on_param_n() -> None:
    """Anthropic returns one choice, so `n` > 1 is refused with param `n`."""
    with pytest.raises(UpstreamBadRequestError) as caught:
        request_body({"messages": HELLO, "n": 2})
    assert caught.value.param == "n"
    assert caught.value.deployment == DEPLOYMENT


def test_tools_become_input_schemas() -> None:
    """Function tools map to name, description and input_schema (open by default)."""
    body = request_body({"messages": HELLO, "tools": TOOLS})
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city.",
            "input_schema": TOOLS[0]["function"]["parameters"],  # type: ignore[index]
        },
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in body


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        (
            {"type": "function", "function": {"name": "now"}},
            None,
            {"type": "tool", "name": "now"},
        ),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        ("none", False, {"type": "none"}),
        ("auto", True, {"type": "auto"}),
    ],
)
def test_tool_choice_and_parallel_tool_calls(
    choice: object, parallel: bool | None, expected: dict[str, Any]
) -> None:
    """tool_choice maps to Anthropic's, and parallel_tool_calls false disables it."""
    payload: dict[str, Any] = {"messages": HELLO, "tools": TOOLS}
    if choice is not None:
        payload["tool_choice"] = choice
    if parallel is not None:
        payload["parallel_tool_calls"] = parallel
    assert request_body(payload)["tool_choice"] == expected


def test_tool_choice_without_tools_is_not_sent() -> None:
    """Without tools, tool_choice and parallel_tool_calls have nothing to steer."""
    payload = {"messages": HELLO, "tool_choice": "none", "parallel_tool_calls": False}
    assert "tool_choice" not in request_body(payload)


def test_unsupported_tool_choice_is_rejected() -> None:
    """An allowed_tools tool_choice has no Anthropic form and is refused."""
    choice = {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}}
    with pytest.raises(UpstreamBadRequestError) as caught:
        request_body({"messages": HELLO, "tools": TOOLS, "tool_choice": choice})
    assert caught.value.param == "tool_choice"


def test_json_schema_response_format_becomes_output_config() -> None:
    """A json_schema response_format is sent as output_config.format."""
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    body = request_body(
        {
            "messages": HELLO,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": schema},
            },
        }
    )
    assert body["output_config"] == {
        "format": {"type": "json_schema", "schema": schema}
    }


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("user-1234", {"user_id": "user-1234"}),
        ("someone@example.com", None),
        ("+1 (555) 123-4567", None),
    ],
)
def test_user_becomes_metadata_unless_it_looks_personal(
    user: str, expected: dict[str, str] | None
) -> None:
    """`user` maps to metadata.user_id unless it looks like an e-mail or phone."""
    assert request_body({"messages": HELLO, "user": user}).get("metadata") == expected


def test_stream_flag() -> None:
    """A streamed attempt asks Anthropic for a stream."""
    assert request_body({"messages": HELLO}, stream=True)["stream"] is True


@pytest.mark.parametrize(
    ("prefill", "sent", "join_ws"),
    [
        ("Hello wor", "Hello wor", ""),
        ("Hello ", "Hello", " "),
        ("Hello \n\n", "Hello", " \n\n"),
    ],
)
def test_prefill_becomes_a_final_assistant_turn_without_trailing_whitespace(
    prefill: str, sent: str, join_ws: str
) -> None:
    """The delivered text is sent rstripped; what was cut is returned to re-join."""
    request = ChatRequest(payload={"messages": HELLO}, model="m", prefill=prefill)
    result = to_messages_request(
        request, max_tokens_default=10, deployment=DEPLOYMENT, stream=True
    )
    assert result.body["messages"][-1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": sent}],
    }
    assert result.join_ws == join_ws


def test_prefill_continues_the_clients_own_final_assistant_text() -> None:
    """A prefill extends a trailing assistant message instead of adding a block."""
    messages = [*HELLO, {"role": "assistant", "content": "The answer is"}]
    body = request_body({"messages": messages}, prefill=" 42 ")
    assert body["messages"][-1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "The answer is 42"}],
    }


def test_whitespace_only_prefill_adds_no_turn() -> None:
    """A prefill of only whitespace sends nothing, and all of it is to re-join."""
    request = ChatRequest(payload={"messages": HELLO}, model="m", prefill="  ")
    result = to_messages_request(
        request, max_tokens_default=10, deployment=DEPLOYMENT, stream=False
    )
    assert result.body["messages"][-1]["role"] == "user"
    assert result.join_ws == "  "


@pytest.mark.parametrize(
    ("pending", "text", "expected"),
    [
        (" ", " world", ("", "world")),
        (" ", "world", ("", "world")),
        (" \n", " ", ("\n", "")),
        (" \n", "\nx", ("", "\nx")),
        ("\n\n", "\n\nHi", ("", "Hi")),
        (" ", "", (" ", "")),
    ],
)
def test_swallow_ws_drops_only_repeated_whitespace(
    pending: str, text: str, expected: tuple[str, str]
) -> None:
    """Only the continuation's start that repeats the cut whitespace is dropped."""
    assert swallow_ws(pending, text) == expected


# ---------------------------------------------------------------- responses

TEXT_MESSAGE = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "text", "text": "Hello! "}, {"type": "text", "text": "Hi."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 12,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 2000,
        "output_tokens": 6,
    },
}
TOOL_MESSAGE = {
    "id": "msg_01Aq9w938a90dw8q",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {"type": "thinking", "thinking": "Weather first.", "signature": "c2ln"},
        {"type": "text", "text": "Let me check."},
        {
            "type": "tool_use",
            "id": "toolu_01A09q90qw90lq917835lq9",
            "name": "get_weather",
            "input": {"city": "Paris", "unit": "celsius"},
        },
        {"type": "tool_use", "id": "toolu_02", "name": "now", "input": {}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 412, "output_tokens": 58},
}


def completion_of(message: dict[str, Any], join_ws: str = "") -> dict[str, Any]:
    """Translate a recorded Messages answer; check it and return the JSON."""
    raw = json.dumps(message).encode()
    Message.model_validate_json(raw)  # the recording is a real Messages answer
    response = to_chat_response(
        raw, created=CREATED, join_ws=join_ws, deployment=DEPLOYMENT
    )
    body: dict[str, Any] = json.loads(response.body)
    validate("CreateChatCompletionResponse", body)
    ChatCompletion.model_validate_json(response.body)
    assert response.model == message["model"]
    return body


def test_text_answer_becomes_a_chat_completion() -> None:
    """Text blocks join into `content`; ids, times, model and usage carry over."""
    body = completion_of(TEXT_MESSAGE)
    assert body == {
        "id": "chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL",
        "object": "chat.completion",
        "created": CREATED,
        "model": "claude-sonnet-4-5-20250929",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello! Hi.",
                    "refusal": None,
                },
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": 2112,
            "completion_tokens": 6,
            "total_tokens": 2118,
            "prompt_tokens_details": {"cached_tokens": 2000},
        },
    }


def test_usage_counts_cache_writes_and_reads_as_prompt_tokens() -> None:
    """Usage on the ChatResponse follows DESIGN §7."""
    raw = json.dumps(TEXT_MESSAGE).encode()
    usage = to_chat_response(raw, created=1, join_ws="", deployment=DEPLOYMENT).usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
        2112,
        6,
        2118,
    )
    assert usage.prompt_tokens_details == {"cached_tokens": 2000}


def test_tool_use_answer_becomes_tool_calls() -> None:
    """tool_use blocks become tool_calls with JSON arguments; thinking is dropped."""
    body = completion_of(TOOL_MESSAGE)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check."
    calls = choice["message"]["tool_calls"]
    assert [c["id"] for c in calls] == ["toolu_01A09q90qw90lq917835lq9", "toolu_02"]
    assert {c["type"] for c in calls} == {"function"}
    assert json.loads(calls[0]["function"]["arguments"]) == {
        "city": "Paris",
        "unit": "celsius",
    }
    assert calls[1]["function"] == {"name": "now", "arguments": "{}"}
    assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}


def test_answer_with_no_text_has_null_content() -> None:
    """An answer without text blocks has `content: null`."""
    message = TOOL_MESSAGE | {"content": TOOL_MESSAGE["content"][2:]}  # type: ignore[index]
    assert completion_of(message)["choices"][0]["message"]["content"] is None
    empty = TEXT_MESSAGE | {"content": [], "stop_reason": "max_tokens"}
    assert completion_of(empty)["choices"][0]["message"]["content"] is None


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("model_context_window_exceeded", "length"),
        ("pause_turn", "stop"),
        (None, "stop"),
    ],
)
def test_stop_reasons_map_to_finish_reasons(
    stop_reason: str | None, finish_reason: str
) -> None:
    """Every Anthropic stop_reason maps to an OpenAI finish_reason."""
    body = completion_of(TEXT_MESSAGE | {"stop_reason": stop_reason})
    assert body["choices"][0]["finish_reason"] == finish_reason


def test_plain_answer_after_a_prefill_does_not_repeat_the_cut_space() -> None:
    """The continuation's leading space, already delivered, is not sent again."""
    message = TEXT_MESSAGE | {"content": [{"type": "text", "text": " world"}]}
    content = completion_of(message, join_ws=" ")["choices"][0]["message"]["content"]
    assert content == "world"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"type":"error","error":{"type":"api_error","message":"x"}}',
        b'{"id":"m","model":"c","content":"text"}',
        b'{"id":"m","model":"c","content":[],"type":"completion"}',
    ],
)
def test_a_body_that_is_not_a_message_is_a_protocol_error(body: bytes) -> None:
    """Anything but a Messages answer in a 200 is an UpstreamProtocolError."""
    with pytest.raises(UpstreamProtocolError) as caught:
        to_chat_response(body, created=1, join_ws="", deployment=DEPLOYMENT)
    assert caught.value.deployment == DEPLOYMENT


# ---------------------------------------------------------------- streaming


def sse(*events: dict[str, Any]) -> bytes:
    """Spell events as Anthropic does: a named event and its JSON data."""
    return b"".join(
        b"event: %s\ndata: %s\n\n" % (e["type"].encode(), json.dumps(e).encode())
        for e in events
    )


def _start(ident: str, **usage: int) -> dict[str, Any]:
    return {
        "type": "message_start",
        "message": {
            "id": ident,
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 25, "output_tokens": 1} | usage,
        },
    }


def _text_start(index: int) -> dict[str, Any]:
    return {
        "type": "content_block_start",
        "index": index,
        "content_block": {"type": "text", "text": ""},
    }


def _text(index: int, text: str) -> dict[str, Any]:
    return {
        "type": "content_block_delta",
        "index": index,
        "delta": {"type": "text_delta", "text": text},
    }


def _tool_start(index: int, ident: str, name: str) -> dict[str, Any]:
    return {
        "type": "content_block_start",
        "index": index,
        "content_block": {"type": "tool_use", "id": ident, "name": name, "input": {}},
    }


def _json(index: int, partial: str) -> dict[str, Any]:
    return {
        "type": "content_block_delta",
        "index": index,
        "delta": {"type": "input_json_delta", "partial_json": partial},
    }


def _stop_block(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


def _delta(stop_reason: str, output_tokens: int) -> dict[str, Any]:
    return {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": {"output_tokens": output_tokens},
    }


PING = b'event: ping\ndata: {"type": "ping"}\n\n'
STOP = {"type": "message_stop"}
TEXT_EVENTS = (
    _start("msg_01Text", cache_creation_input_tokens=10, cache_read_input_tokens=100),
    _text_start(0),
    _text(0, "Hello"),
    _text(0, ", wörld 👋"),
    _stop_block(0),
    _delta("end_turn", 12),
    STOP,
)
TEXT_STREAM = sse(*TEXT_EVENTS[:2]) + PING + sse(*TEXT_EVENTS[2:])
TOOL_EVENTS = (
    _start("msg_01Tool"),
    _text_start(0),
    _text(0, "Let me check."),
    _stop_block(0),
    _tool_start(1, "toolu_01", "get_weather"),
    _json(1, ""),
    _json(1, '{"city": '),
    _json(1, '"Paris"}'),
    _stop_block(1),
    _tool_start(2, "toolu_02", "now"),
    _stop_block(2),
    _delta("tool_use", 42),
    STOP,
)
TOOL_STREAM = sse(*TOOL_EVENTS)
THINKING_STREAM = sse(
    _start("msg_01Think"),
    {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "thinking", "thinking": "", "signature": ""},
    },
    {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "thinking_delta", "thinking": "Hmm."},
    },
    {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "signature_delta", "signature": "c2ln"},
    },
    _stop_block(0),
    _text_start(1),
    _text(1, "Yes."),
    _stop_block(1),
    {"type": "brand_new_event", "detail": 1},
    _delta("end_turn", 5),
    STOP,
)
_STREAM_EVENT = pydantic.TypeAdapter(RawMessageStreamEvent)


@pytest.mark.parametrize("raw", [TEXT_STREAM, TOOL_STREAM, THINKING_STREAM])
def test_recorded_streams_are_real_anthropic_events(raw: bytes) -> None:
    """The recordings parse with the anthropic SDK's own event models."""
    for event in SSEParser().feed(raw):
        data = json.loads(event.data)
        assert data["type"] == event.event
        if event.event not in {"ping", "brand_new_event"}:
            _STREAM_EVENT.validate_python(data)


def translate(
    chunks: list[bytes], *, include_usage: bool = True, join_ws: str = ""
) -> tuple[list[bytes], StreamTranslator]:
    """Feed byte chunks through the SSE parser and a translator; return the frames."""
    parser = SSEParser()
    translator = StreamTranslator(
        model="claude-test",
        created=CREATED,
        include_usage=include_usage,
        join_ws=join_ws,
    )
    frames: list[bytes] = []
    for chunk in chunks:
        for event in parser.feed(chunk):
            frames.extend(translator.translate(event))
    for event in parser.close():
        frames.extend(translator.translate(event))
    return frames, translator


def chunks_of(frames: list[bytes]) -> list[dict[str, Any]]:
    """Check every frame's framing and schema; return the decoded chunks."""
    decoded = []
    for frame in frames:
        assert frame.startswith(b"data: ")
        assert frame.endswith(b"\n\n")
        assert frame.count(b"\n\n") == 1
        assert b"[DONE]" not in frame
        chunk = json.loads(frame[6:])
        validate("CreateChatCompletionStreamResponse", chunk)
        ChatCompletionChunk.model_validate(chunk)
        decoded.append(chunk)
    return decoded


def test_text_stream_becomes_openai_chunks() -> None:
    """Role chunk, content deltas, finish chunk, usage chunk; one id, time, model."""
    frames, translator = translate([TEXT_STREAM])
    chunks = chunks_of(frames)
    assert {(c["id"], c["created"], c["model"]) for c in chunks} == {
        ("chatcmpl-msg_01Text", CREATED, "claude-sonnet-4-5-20250929")
    }
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"content": "Hello"},
        {"content": ", wörld 👋"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [
        None,
        None,
        None,
        "stop",
    ]
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 135,
        "completion_tokens": 12,
        "total_tokens": 147,
        "prompt_tokens_details": {"cached_tokens": 100},
    }
    assert translator.text == "Hello, wörld 👋"
    assert translator.finish_reason == "stop"
    assert translator.model == "claude-sonnet-4-5-20250929"
    assert translator.usage is not None
    assert translator.usage.total_tokens == 147
    assert translator.is_done


def test_without_include_usage_there_is_no_usage_chunk_or_field() -> None:
    """Only a client that asked for usage gets the usage chunk and `usage: null`s."""
    frames, translator = translate([TEXT_STREAM], include_usage=False)
    chunks = chunks_of(frames)
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert translator.usage is not None  # still metered for the gateway


def test_tool_stream_numbers_tool_blocks_from_zero() -> None:
    """Tool calls get indexes over tool blocks only, names first, then arguments."""
    frames, _ = translate([TOOL_STREAM], include_usage=False)
    chunks = chunks_of(frames)
    calls = [
        c["choices"][0]["delta"]["tool_calls"]
        for c in chunks
        if "tool_calls" in c["choices"][0]["delta"]
    ]
    assert calls == [
        [
            {
                "index": 0,
                "id": "toolu_01",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
        ],
        [{"index": 0, "function": {"arguments": '{"city": '}}],
        [{"index": 0, "function": {"arguments": '"Paris"}'}}],
        [
            {
                "index": 1,
                "id": "toolu_02",
                "type": "function",
                "function": {"name": "now", "arguments": ""},
            }
        ],
        [{"index": 1, "function": {"arguments": "{}"}}],
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_openai_sdk_accumulates_the_translated_tool_stream() -> None:
    """The openai SDK's stream state rebuilds the whole answer from the frames."""
    frames, _ = translate([TOOL_STREAM])
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for chunk in chunks_of(frames):
        list(state.handle_chunk(ChatCompletionChunk.model_validate(chunk)))
    final = state.get_final_completion()
    message = final.choices[0].message
    assert message.content == "Let me check."
    assert message.tool_calls is not None
    calls = [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls]
    assert calls == [
        ("toolu_01", "get_weather", '{"city": "Paris"}'),
        ("toolu_02", "now", "{}"),
    ]
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage is not None
    assert final.usage.completion_tokens == 42


def test_thinking_and_unknown_events_are_dropped() -> None:
    """Thinking blocks, signatures and unknown event types produce no frames."""
    frames, translator = translate([THINKING_STREAM], include_usage=False)
    deltas = [c["choices"][0]["delta"] for c in chunks_of(frames)]
    assert deltas == [{"role": "assistant", "content": ""}, {"content": "Yes."}, {}]
    assert translator.text == "Yes."


@pytest.mark.parametrize("raw", [TEXT_STREAM, TOOL_STREAM, THINKING_STREAM])
def test_every_split_point_gives_identical_frames(raw: bytes) -> None:
    """However the bytes are cut in two, the frames are the same."""
    whole, _ = translate([raw])
    for cut in range(len(raw) + 1):
        assert translate([raw[:cut], raw[cut:]])[0] == whole


TOOL_STREAM_CRLF = TOOL_STREAM.replace(b"\n", b"\r\n")


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(0, len(TOOL_STREAM_CRLF)), max_size=40))
def test_any_chunking_gives_identical_frames(cuts: list[int]) -> None:
    """Frames do not depend on how the stream is chunked (CRLF line ends too)."""
    for raw in (TOOL_STREAM, TOOL_STREAM_CRLF):
        points = sorted({min(c, len(raw)) for c in cuts})
        pieces = [
            raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)
        ]
        assert translate(pieces)[0] == translate([TOOL_STREAM])[0]


def test_content_arrives_with_the_first_text_or_tool_or_the_end() -> None:
    """`has_content` turns true on the first text delta, tool start or message end."""
    parser = SSEParser()
    translator = StreamTranslator(model="m", created=1, include_usage=False)
    seen = []
    for event in parser.feed(TOOL_STREAM):
        translator.translate(event)
        seen.append(translator.has_content)
    assert seen.index(True) == 2  # message_start, block start, first text delta
    empty = sse(_start("msg_empty"), _delta("end_turn", 0), STOP)
    frames, translator = translate([empty], include_usage=False)
    assert translator.has_content
    assert translator.text == ""
    assert [c["choices"][0]["finish_reason"] for c in chunks_of(frames)] == [
        None,
        "stop",
    ]


@pytest.mark.parametrize(
    ("deltas", "join_ws", "expected"),
    [
        (["ld", " again"], "", "ld again"),
        ([" world"], " ", "world"),
        ([" ", "world"], " ", "world"),
        (["\n", "\nNext"], "\n\n", "Next"),
        (["world"], " ", "world"),
    ],
)
def test_streamed_continuation_joins_the_prefill_exactly(
    deltas: list[str], join_ws: str, expected: str
) -> None:
    """After a prefill the stream emits exactly what follows the delivered text."""
    events = [_start("msg_1"), _text_start(0)]
    events += [_text(0, d) for d in deltas]
    events += [_stop_block(0), _delta("end_turn", 3), STOP]
    frames, translator = translate([sse(*events)], join_ws=join_ws)
    contents = [
        c["choices"][0]["delta"].get("content") for c in chunks_of(frames)[1:-2]
    ]
    assert "".join(contents) == expected
    assert "" not in contents
    assert translator.text == expected


def test_error_event_raises_with_the_upstream_error_type() -> None:
    """An `event: error` raises StreamEventError carrying Anthropic's type."""
    error = {"type": "overloaded_error", "message": "Overloaded"}
    raw = (
        sse(*TEXT_EVENTS[:3])
        + b"event: error\ndata: %s\n\n"
        % json.dumps({"type": "error", "error": error}).encode()
    )
    with pytest.raises(StreamEventError) as caught:
        translate([raw])
    assert caught.value.upstream_type == "overloaded_error"
    assert caught.value.detail == "Overloaded"
    assert "overloaded_error" in caught.value.what


@pytest.mark.parametrize(
    "raw",
    [
        sse(TEXT_EVENTS[0]) + b"event: content_block_delta\ndata: {not json\n\n",
        sse(_text_start(0), _text(0, "early")),
        sse(TEXT_EVENTS[0]) + b'event: content_block_delta\ndata: {"index": "x"}\n\n',
    ],
)
def test_malformed_or_out_of_order_events_are_protocol_failures(raw: bytes) -> None:
    """Non-JSON data, wrong field types or content before message_start fail."""
    with pytest.raises(StreamEventError) as caught:
        translate([raw])
    assert caught.value.protocol
    assert caught.value.upstream_type is None


def test_odd_events_are_tolerated() -> None:
    """Repeated starts, empty blocks, server-tool input and bare deltas emit nothing."""
    raw = sse(
        _start("msg_1"),
        _start("msg_2"),
        {"type": "content_block_start", "index": 0},
        {"type": "content_block_delta", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {
                "type": "server_tool_use",
                "id": "srvtoolu_1",
                "name": "web_search",
                "input": {},
            },
        },
        _json(1, '{"query": "x"}'),
        _stop_block(1),
        _text_start(2),
        _text(2, "Found."),
        _stop_block(2),
        {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 3}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}},
        STOP,
    )
    frames, translator = translate([raw], include_usage=False)
    chunks = chunks_of(frames)
    assert {c["id"] for c in chunks} == {"chatcmpl-msg_1"}
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "Found."},
        {},
    ]
    assert translator.usage is not None
    assert translator.usage.completion_tokens == 3
    translator.text = ""
    assert translator.text == ""


def test_events_after_message_stop_are_ignored() -> None:
    """Nothing is translated once the answer is whole."""
    frames, _ = translate([TEXT_STREAM + sse(_text(0, "late"))])
    assert frames == translate([TEXT_STREAM])[0]


# ------------------------------------------------------------------- errors


def error_body(kind: str, message: str) -> bytes:
    """Spell an Anthropic error body."""
    return json.dumps(
        {
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": "req_011",
        }
    ).encode()


def mapped(
    status: int, body: bytes, headers: dict[str, str] | None = None
) -> UpstreamError:
    """Map one recorded error answer."""
    return map_status_error(
        status,
        body,
        headers or {},
        deployment=DEPLOYMENT,
        secret=UPSTREAM_KEY,
        now_wall=1_700_000_000.0,
    )


@pytest.mark.parametrize(
    ("status", "error_type", "message", "kind"),
    [
        (529, "overloaded_error", "Overloaded", UpstreamUnavailableError),
        (500, "api_error", "Internal server error", UpstreamUnavailableError),
        (504, "timeout_error", "Request timeout", UpstreamUnavailableError),
        (401, "authentication_error", "invalid x-api-key", UpstreamAuthError),
        (403, "permission_error", "no access to claude-x", UpstreamAuthError),
        (404, "not_found_error", "model: claude-x", UpstreamAuthError),
        (400, "billing_error", "Your credit balance is too low", UpstreamAuthError),
        (
            400,
            "invalid_request_error",
            "prompt is too long: 210000 tokens > 200000 maximum",
            UpstreamContextLengthError,
        ),
        (
            400,
            "invalid_request_error",
            "input length and `max_tokens` exceed context limit: 1 + 2 > 2",
            UpstreamContextLengthError,
        ),
        (
            400,
            "invalid_request_error",
            "temperature: range: 0..1",
            UpstreamBadRequestError,
        ),
        (
            413,
            "request_too_large",
            "Request exceeds the maximum size",
            UpstreamBadRequestError,
        ),
    ],
)
def test_error_answers_map_into_the_taxonomy(
    status: int, error_type: str, message: str, kind: type[UpstreamError]
) -> None:
    """Each status and error type maps to its class, keeping status and type."""
    error = mapped(status, error_body(error_type, message))
    assert type(error) is kind
    assert error.status == status
    assert error.upstream_code == error_type
    assert error.deployment == DEPLOYMENT


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (502, b"<html><body>Bad gateway</body></html>", UpstreamUnavailableError),
        (503, b"", UpstreamUnavailableError),
        (408, b"timeout", UpstreamUnavailableError),
        (400, b"<html>bad</html>", UpstreamBadRequestError),
        (422, b"not json", UpstreamBadRequestError),
        (418, b"teapot", UpstreamProtocolError),
    ],
)
def test_non_json_error_answers_are_judged_by_status(
    status: int, body: bytes, kind: type[UpstreamError]
) -> None:
    """A body that is not Anthropic's error JSON maps by its status alone."""
    error = mapped(status, body)
    assert type(error) is kind
    assert error.status == status
    assert error.upstream_code is None
    assert str(status) in error.message


def test_rate_limit_carries_retry_after() -> None:
    """A 429 keeps the upstream's wait, retry-after-ms winning over retry-after."""
    body = error_body(
        "rate_limit_error", "Number of requests exceeded your rate limit."
    )
    error = mapped(429, body, {"retry-after": "7"})
    assert isinstance(error, UpstreamRateLimitError)
    assert error.retry_after_s == 7.0
    assert error.upstream_code == "rate_limit_error"
    both = mapped(429, body, {"retry-after": "7", "retry-after-ms": "1500"})
    assert both.retry_after_s == 1.5
    assert mapped(429, b"").retry_after_s is None


def test_auth_errors_never_forward_the_upstream_message() -> None:
    """401/403 messages are our own, so nothing the upstream echoed can leak."""
    for status in (401, 403):
        error = mapped(
            status, error_body("authentication_error", f"bad key {UPSTREAM_KEY}")
        )
        assert "bad key" not in error.message
        assert UPSTREAM_KEY not in error.message
        assert str(status) in error.message


def test_upstream_messages_are_redacted() -> None:
    """The API key never appears in a mapped error's message."""
    error = mapped(
        400, error_body("invalid_request_error", f"x-api-key {UPSTREAM_KEY} is odd")
    )
    assert UPSTREAM_KEY not in error.message
    assert "[redacted]" in error.message


def test_bad_request_keeps_type_and_names_the_param() -> None:
    """A bad request keeps Anthropic's error type and the field it names."""
    error = mapped(
        400, error_body("invalid_request_error", "max_tokens: Field required")
    )
    assert isinstance(error, UpstreamBadRequestError)
    assert error.upstream_type == "invalid_request_error"
    assert error.param == "max_tokens"
    assert not error.failover
    other = mapped(400, error_body("invalid_request_error", "Your credit is fine."))
    assert isinstance(other, UpstreamBadRequestError)
    assert other.param is None


@pytest.mark.parametrize(
    ("error_type", "kind", "status"),
    [
        ("overloaded_error", UpstreamUnavailableError, 529),
        ("api_error", UpstreamUnavailableError, 500),
        ("rate_limit_error", UpstreamRateLimitError, 429),
        ("invalid_request_error", UpstreamBadRequestError, 400),
        ("brand_new_error", UpstreamUnavailableError, 500),
        (None, UpstreamUnavailableError, 500),
    ],
)
def test_in_stream_error_events_map_like_their_status(
    error_type: str | None, kind: type[UpstreamError], status: int
) -> None:
    """An error event before content maps as the status its type stands for."""
    error = map_event_error(
        error_type, "oops", deployment=DEPLOYMENT, secret=UPSTREAM_KEY, now_wall=0.0
    )
    assert type(error) is kind
    assert error.status == status
    assert error.upstream_code == error_type


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("`temperature` is deprecated for this model.", True),
        ("`temperature` and `top_p` cannot both be specified for this model.", True),
        ("temperature: range: 0..1", False),
        ("prompt is too long", False),
    ],
)
def test_sampling_refusals_are_recognised(message: str, expected: bool) -> None:
    """A 400 refusing temperature/top_p for the model is told apart from others."""
    assert (
        rejects_sampling(mapped(400, error_body("invalid_request_error", message)))
        is expected
    )
    assert not rejects_sampling(mapped(500, error_body("api_error", message)))
