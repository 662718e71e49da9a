"""How the fake upstream spells its answers: OpenAI and Anthropic wire bytes.

Outside the onion: test equipment, used by ``gateway.fakeupstream``. Pure: an
``Answer`` (from ``gateway.fakeanswer``) goes in, response bodies, SSE frames
and headers come out. Stream frames are spliced from precomputed templates so a
benchmark's fake upstream spends one small string encode per token.
"""

from __future__ import annotations

import base64
import struct
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

import msgspec

from gateway.fakeanswer import EMBEDDING_DIMS, embedding_bytes, embedding_inputs

if TYPE_CHECKING:
    from gateway.fakeanswer import Answer, Json, Prompt

#: Unix time stamped on every response, so bodies are reproducible.
CREATED: Final = 1_700_000_000
MODELS: Final = ("gpt-a", "gpt-b", "claude-a", "claude-b", "embed-a")

_MAX_DIMS: Final = 4096
_encode = msgspec.json.Encoder().encode


# -- OpenAI encoding -------------------------------------------------------


def _openai_usage(answer: Answer) -> Json:
    completion = len(answer.tokens)
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": answer.prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def openai_completion(answer: Answer, model: str, seq: int) -> bytes:
    """Encode ``answer`` as a ``chat.completion`` body."""
    message: Json = {"role": "assistant", "content": answer.text, "refusal": None}
    if answer.tool is not None:
        function = {"name": answer.tool.name, "arguments": answer.tool.arguments}
        message["content"] = None
        message["tool_calls"] = [
            {"id": f"call_{answer.tool.id}", "type": "function", "function": function}
        ]
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": answer.finish,
    }
    return _encode(
        {
            "id": f"chatcmpl-fake{seq}",
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "choices": [choice],
            "usage": _openai_usage(answer),
        }
    )


class OpenAIStream:
    """The SSE frames of one streamed chat completion.

    Content frames are spliced from a precomputed prefix and suffix, so each
    costs one small string encode.
    """

    __slots__ = ("_answer", "_include_usage", "_model", "_post", "_pre", "_seq")

    def __init__(
        self, answer: Answer, model: str, seq: int, *, include_usage: bool
    ) -> None:
        """Prepare the frame templates for ``answer``."""
        self._answer = answer
        self._model = model
        self._seq = seq
        self._include_usage = include_usage
        self._pre = (
            b'data: {"id":"chatcmpl-fake%d","object":"chat.completion.chunk",' % seq
        )
        self._pre += b'"created":%d,"model":%s,"choices":[{"index":0,"delta":' % (
            CREATED,
            _encode(model),
        )
        self._post = b'}],"usage":null}\n\n' if include_usage else b"}]}\n\n"

    def _frame(self, delta: bytes, finish: bytes = b"null") -> bytes:
        return b"".join(
            (self._pre, delta, b',"logprobs":null,"finish_reason":', finish, self._post)
        )

    def head(self) -> bytes:
        """Return the role-only first frame."""
        content = b"null" if self._answer.tool else b'""'
        return self._frame(b'{"role":"assistant","content":%s}' % content)

    def chunks(self) -> list[bytes]:
        """Return one frame per content token (or argument fragment)."""
        tool = self._answer.tool
        if tool is None:
            return [
                self._frame(b'{"content":%s}' % _encode(t)) for t in self._answer.tokens
            ]
        first, *rest = self._answer.tokens
        function = {"name": tool.name, "arguments": first}
        call = {"index": 0, "id": f"call_{tool.id}", "type": "function"}
        deltas = [{"tool_calls": [{**call, "function": function}]}]
        deltas += [
            {"tool_calls": [{"index": 0, "function": {"arguments": t}}]} for t in rest
        ]
        return [self._frame(_encode(delta)) for delta in deltas]

    def tail(self, *, done: bool) -> bytes:
        """Return the finish frame, the usage frame if asked, and ``[DONE]``."""
        parts = [self._frame(b"{}", _encode(self._answer.finish))]
        if self._include_usage:
            usage = {
                "id": f"chatcmpl-fake{self._seq}",
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": self._model,
                "choices": [],
                "usage": _openai_usage(self._answer),
            }
            parts.append(b"data: %s\n\n" % _encode(usage))
        if done:
            parts.append(b"data: [DONE]\n\n")
        return b"".join(parts)

    @staticmethod
    def error() -> bytes:
        """Return an in-band error event, as OpenAI sends after the headers."""
        error = {
            "message": "The server had an error while processing your request.",
            "type": "server_error",
            "param": None,
            "code": "fake_stream_error",
        }
        return b"data: %s\n\n" % _encode({"error": error})

    @staticmethod
    def malformed() -> bytes:
        """Return an event whose data is not JSON."""
        return b"data: {not json\n\n"


# -- Anthropic encoding ----------------------------------------------------

_STOP_REASONS: Final = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
}


def _event(name: bytes, payload: Json) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (name, _encode(payload))


def _anthropic_usage(answer: Answer, output_tokens: int) -> Json:
    return {
        "input_tokens": answer.prompt_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def _anthropic_block(answer: Answer, *, started: bool) -> Json:
    tool = answer.tool
    if tool is None:
        return {"type": "text", "text": "" if started else answer.text}
    tool_input = {} if started else tool.input
    return {
        "type": "tool_use",
        "id": f"toolu_{tool.id}",
        "name": tool.name,
        "input": tool_input,
    }


def anthropic_message(answer: Answer, model: str, seq: int) -> bytes:
    """Encode ``answer`` as a Messages API ``message`` body."""
    return _encode(
        {
            "id": f"msg_fake{seq}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [_anthropic_block(answer, started=False)],
            "stop_reason": _STOP_REASONS[answer.finish],
            "stop_sequence": None,
            "usage": _anthropic_usage(answer, len(answer.tokens)),
        }
    )


class AnthropicStream:
    """The named SSE events of one streamed Messages response."""

    __slots__ = ("_answer", "_model", "_pre", "_seq")

    def __init__(self, answer: Answer, model: str, seq: int) -> None:
        """Prepare the event templates for ``answer``."""
        self._answer = answer
        self._model = model
        self._seq = seq
        kind = b"text_delta" if answer.tool is None else b"input_json_delta"
        field = b"text" if answer.tool is None else b"partial_json"
        self._pre = (
            b'event: content_block_delta\ndata: {"type":"content_block_delta",'
            b'"index":0,"delta":{"type":"%s","%s":' % (kind, field)
        )

    def head(self) -> bytes:
        """Return message_start, content_block_start and a ping."""
        message: Json = {
            "id": f"msg_fake{self._seq}",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": self._model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _anthropic_usage(self._answer, 0),
        }
        block = _anthropic_block(self._answer, started=True)
        return b"".join(
            (
                _event(b"message_start", {"type": "message_start", "message": message}),
                _event(
                    b"content_block_start",
                    {"type": "content_block_start", "index": 0, "content_block": block},
                ),
                _event(b"ping", {"type": "ping"}),
            )
        )

    def chunks(self) -> list[bytes]:
        """Return one content_block_delta per token (or JSON fragment)."""
        return [b"%s%s}}\n\n" % (self._pre, _encode(t)) for t in self._answer.tokens]

    def tail(self, *, done: bool) -> bytes:
        """Return content_block_stop, message_delta and message_stop."""
        answer = self._answer
        delta = {"stop_reason": _STOP_REASONS[answer.finish], "stop_sequence": None}
        usage = {
            "input_tokens": answer.prompt_tokens,
            "output_tokens": len(answer.tokens),
        }
        parts = [
            _event(b"content_block_stop", {"type": "content_block_stop", "index": 0}),
            _event(
                b"message_delta",
                {"type": "message_delta", "delta": delta, "usage": usage},
            ),
        ]
        if done:
            parts.append(_event(b"message_stop", {"type": "message_stop"}))
        return b"".join(parts)

    @staticmethod
    def error() -> bytes:
        """Return an in-band ``event: error``."""
        error = {"type": "overloaded_error", "message": "Overloaded"}
        return _event(b"error", {"type": "error", "error": error})

    @staticmethod
    def malformed() -> bytes:
        """Return a content_block_delta whose data is not JSON."""
        return b"event: content_block_delta\ndata: {not json\n\n"


# -- errors and headers ----------------------------------------------------

_IRE: Final = "invalid_request_error"
_BAD_TEMPERATURE: Final = (
    "Invalid 'temperature': decimal above maximum value. "
    "Expected a value <= 2, but got 5 instead."
)
_TOO_LONG: Final = (
    "This model's maximum context length is 128000 tokens. However, your "
    "messages resulted in 130000 tokens. Please reduce the length of the messages."
)
_POLICY: Final = "Your request was rejected as a result of our safety system."
_NO_MODEL: Final = "The model `{model}` does not exist or you do not have access to it."
_RATE: Final = "Rate limit reached for {model} on requests per min (RPM): Limit 60."
_SORRY: Final = "The server had an error while processing your request. Sorry!"

#: kind -> (status, type, code, param, message) in OpenAI's shape.
_OPENAI_ERRORS: Final[dict[str, tuple[int, str, str | None, str | None, str]]] = {
    "bad": (400, _IRE, "decimal_above_max_value", "temperature", _BAD_TEMPERATURE),
    "ctx": (400, _IRE, "context_length_exceeded", "messages", _TOO_LONG),
    "policy": (400, _IRE, "content_policy_violation", None, _POLICY),
    "401": (401, _IRE, "invalid_api_key", None, "Incorrect API key provided."),
    "404": (404, _IRE, "model_not_found", None, _NO_MODEL),
    "429": (429, "requests", "rate_limit_exceeded", None, _RATE),
    "500": (500, "server_error", None, None, _SORRY),
    "502": (502, "server_error", None, None, "Bad gateway."),
    "503": (503, "server_error", None, None, "The engine is currently overloaded."),
    "529": (529, "server_error", "overloaded", None, "Overloaded"),
}

#: kind -> (status, type, message) in Anthropic's shape.
_ANTHROPIC_ERRORS: Final[dict[str, tuple[int, str, str]]] = {
    "bad": (400, _IRE, "temperature: range: 0..1"),
    "ctx": (400, _IRE, "prompt is too long: 210000 tokens > 200000 maximum"),
    "policy": (400, _IRE, "Output blocked by content filtering policy"),
    "401": (401, "authentication_error", "invalid x-api-key"),
    "403": (403, "permission_error", "Your API key may not use {model}."),
    "404": (404, "not_found_error", "model: {model}"),
    "413": (413, "request_too_large", "Request exceeds the maximum size."),
    "429": (
        429,
        "rate_limit_error",
        "Number of requests exceeded your rate limit.",
    ),
    "500": (500, "api_error", "Internal server error"),
    "529": (529, "overloaded_error", "Overloaded"),
}
_FIRST_5XX: Final = 500


def status_of(kind: str) -> int:
    """Return the HTTP status of an error ``kind`` (a status or a word)."""
    return int(kind) if kind.isdigit() else 400


def openai_error(
    kind: str, model: str, message: str | None = None
) -> tuple[int, bytes]:
    """Return the status and OpenAI-shaped body of an error ``kind``."""
    status = status_of(kind)
    default = "server_error" if status >= _FIRST_5XX else _IRE
    status, etype, code, param, text = _OPENAI_ERRORS.get(
        kind, (status, default, None, None, f"Fake upstream error {kind}.")
    )
    error: Json = {"message": message or text.format(model=model), "type": etype}
    error |= {"param": param, "code": code}
    return status, _encode({"error": error})


def anthropic_error(
    kind: str, model: str, seq: int, message: str | None = None
) -> tuple[int, bytes]:
    """Return the status and Anthropic-shaped body of an error ``kind``."""
    status = status_of(kind)
    default = "api_error" if status >= _FIRST_5XX else _IRE
    status, etype, text = _ANTHROPIC_ERRORS.get(
        kind, (status, default, f"Fake upstream error {kind}.")
    )
    error = {"type": etype, "message": message or text.format(model=model)}
    return status, _encode(
        {"type": "error", "error": error, "request_id": f"req_fake{seq}"}
    )


def openai_headers(seq: int, *, limited: bool) -> dict[str, str]:
    """Return the request id and rate-limit headers OpenAI sends."""
    return {
        "x-request-id": f"req_fake{seq}",
        "openai-version": "2020-10-01",
        "x-ratelimit-limit-requests": "10000",
        "x-ratelimit-remaining-requests": "0" if limited else "9999",
        "x-ratelimit-reset-requests": "1s" if limited else "6ms",
        "x-ratelimit-limit-tokens": "1000000",
        "x-ratelimit-remaining-tokens": "0" if limited else "999000",
        "x-ratelimit-reset-tokens": "1s" if limited else "1ms",
    }


def anthropic_headers(
    seq: int, *, limited: bool, reset_s: float = 1.0
) -> dict[str, str]:
    """Return the request id and rate-limit headers Anthropic sends."""
    reset = (datetime.now(UTC) + timedelta(seconds=reset_s)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    headers = {"request-id": f"req_fake{seq}"}
    for kind, limit in (
        ("requests", 4000),
        ("tokens", 400000),
        ("input-tokens", 200000),
        ("output-tokens", 80000),
    ):
        prefix = f"anthropic-ratelimit-{kind}"
        headers[f"{prefix}-limit"] = str(limit)
        headers[f"{prefix}-remaining"] = "0" if limited else str(limit - 1)
        headers[f"{prefix}-reset"] = reset
    return headers


# -- other endpoints -------------------------------------------------------


def embeddings_body(body: Json, model: str) -> bytes:
    """Answer an embeddings request; raise ValueError if it is malformed."""
    texts = embedding_inputs(body.get("input"))
    dims = body.get("dimensions", EMBEDDING_DIMS)
    if not isinstance(dims, int) or not 1 <= dims <= _MAX_DIMS:
        raise ValueError("'dimensions' must be an integer from 1 to 4096")
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, text in enumerate(texts):
        packed = embedding_bytes(text, dims)
        vector: object = (
            base64.b64encode(packed).decode()
            if as_base64
            else list(struct.unpack(f"<{dims}f", packed))
        )
        data.append({"object": "embedding", "index": index, "embedding": vector})
    words = sum(len(t.split()) for t in texts)
    usage = {"prompt_tokens": words, "total_tokens": words}
    return _encode({"object": "list", "model": model, "data": data, "usage": usage})


def count_tokens_body(prompt: Prompt) -> bytes:
    """Answer ``/v1/messages/count_tokens``."""
    return _encode({"input_tokens": prompt.words})


MODELS_BODY: Final = _encode(
    {
        "object": "list",
        "data": [
            {
                "id": name,
                "object": "model",
                "created": CREATED,
                "owned_by": "fusebox-fake",
            }
            for name in MODELS
        ],
    }
)
