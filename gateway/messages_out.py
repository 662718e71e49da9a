r"""OpenAI-compatible answers and streams, spelled as Anthropic Messages for clients.

Outermost layer, beside ``gateway.messages``: what an OpenAI-compatible (or
mock) rung answered to a translated ``/v1/messages`` request goes back to the
Anthropic client as a ``message`` (``to_message``) or as named SSE events
(``MessagesFromChat``: ``message_start``, ``ping``, per block
``content_block_start``/``_delta``/``_stop``, ``message_delta`` with the stop
reason and usage, ``message_stop``). Also the ``@static`` answer in both forms.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Final

import msgspec

from providers.errors import UpstreamProtocolError
from providers.types import ChatResponse, ChatStream, Usage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

Json = dict[str, Any]
_encode: Final = msgspec.json.Encoder().encode
_decode_json: Final = msgspec.json.Decoder().decode
_ids = itertools.count(1)
#: OpenAI ``finish_reason`` -> Anthropic ``stop_reason`` (anything else: end_turn).
STOP_REASONS: Final = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


class _Function(msgspec.Struct, gc=False):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(msgspec.Struct, gc=False):
    index: int = 0
    id: str | None = None
    function: _Function | None = None


class _Message(msgspec.Struct, gc=False):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(msgspec.Struct, gc=False):
    message: _Message | None = None
    delta: _Message | None = None
    finish_reason: str | None = None


class _Completion(msgspec.Struct, gc=False):
    id: str = ""
    model: str = ""
    choices: list[_Choice] = []
    usage: Usage | None = None


_decode_completion: Final = msgspec.json.Decoder(_Completion).decode


def event(name: str, payload: Json) -> bytes:
    """Return one named SSE event (``type`` repeats the name, as Anthropic does)."""
    return b"event: %s\ndata: %s\n\n" % (
        name.encode(),
        _encode({"type": name, **payload}),
    )


def message_usage(usage: Usage | None) -> Json:
    """Return Anthropic usage for an OpenAI one (cached prompt tokens apart)."""
    usage = usage or Usage()
    cached = (usage.prompt_tokens_details or {}).get("cached_tokens", 0)
    return {
        "input_tokens": usage.prompt_tokens - cached,
        "output_tokens": usage.completion_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def _message(
    message_id: str, model: str, content: list[Json], stop: str | None
) -> Json:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
    }


def _tool_input(arguments: str | None) -> Any:  # noqa: ANN401 - any JSON object
    try:
        value = _decode_json(arguments or "{}")
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def to_message(answer: ChatResponse, deployment: str) -> ChatResponse:
    """Translate a whole ``chat.completion`` into a Messages ``message``."""
    try:
        completion = _decode_completion(answer.body)
        choice = completion.choices[0]
    except (msgspec.DecodeError, msgspec.ValidationError, IndexError) as exc:
        raise UpstreamProtocolError(
            f"upstream {deployment} sent a body that is not a chat completion",
            deployment=deployment,
        ) from exc
    said = choice.message or _Message()
    content: list[Json] = []
    if said.content or said.refusal:
        content.append({"type": "text", "text": said.content or said.refusal})
    for call in said.tool_calls or []:
        function = call.function or _Function()
        content.append(
            {
                "type": "tool_use",
                "id": call.id or f"toolu_fusebox{next(_ids)}",
                "name": function.name or "",
                "input": _tool_input(function.arguments),
            }
        )
    stop = STOP_REASONS.get(choice.finish_reason or "stop", "end_turn")
    body = _message(f"msg_{completion.id}", answer.model, content, stop)
    body["usage"] = message_usage(answer.usage)
    return ChatResponse(body=_encode(body), model=answer.model, usage=answer.usage)


class MessagesFromChat:
    """An OpenAI-compatible stream, re-spelled as Anthropic events as it goes.

    Wraps a provider's ``ChatStream`` (already past its first content); the
    ``message_delta`` waits for the usage chunk, which the OpenAI adapter always
    asks upstream for.
    """

    def __init__(self, inner: ChatStream) -> None:
        """Take over ``inner``."""
        self._inner = inner
        self._index = -1
        self._open: str | None = None
        #: OpenAI tool-call index -> Anthropic block index.
        self._tools: dict[int, int] = {}
        self._stop: str | None = None

    @property
    def model(self) -> str:
        """Return the model the upstream reported."""
        return self._inner.model

    @property
    def text(self) -> str:
        """Return the text delivered so far."""
        return self._inner.text

    @property
    def finish_reason(self) -> str | None:
        """Return the OpenAI finish reason once it arrived."""
        return self._inner.finish_reason

    @property
    def usage(self) -> Usage | None:
        """Return the usage once it arrived."""
        return self._inner.usage

    async def __aiter__(self) -> AsyncIterator[bytes]:
        """Yield ``message_start``, the translated content, and the end."""
        started = False
        async for frame in self._inner:
            chunk = _chunk(frame)
            if chunk is None:
                continue
            frames = self._translate(chunk)
            if not started:
                started = True
                frames[:0] = [self._start(chunk), event("ping", {})]
            for out in frames:
                yield out
        for out in self._finish():
            yield out

    def _start(self, chunk: _Completion) -> bytes:
        model = chunk.model or self.model
        message = _message(f"msg_{chunk.id}", model, [], None)
        return event(
            "message_start", {"message": message | {"usage": message_usage(None)}}
        )

    def _translate(self, chunk: _Completion) -> list[bytes]:
        out: list[bytes] = []
        for choice in chunk.choices[:1]:
            delta = choice.delta or _Message()
            text = delta.content or delta.refusal
            if text:
                out += self._text(text)
            for call in delta.tool_calls or []:
                out += self._tool(call)
            if choice.finish_reason is not None:
                self._stop = STOP_REASONS.get(choice.finish_reason, "end_turn")
        return out

    def _text(self, text: str) -> list[bytes]:
        out = (
            []
            if self._open == "text"
            else self._open_block({"type": "text", "text": ""}, "text")
        )
        delta = {"type": "text_delta", "text": text}
        return [
            *out,
            event("content_block_delta", {"index": self._index, "delta": delta}),
        ]

    def _tool(self, call: _ToolCall) -> list[bytes]:
        function = call.function or _Function()
        out: list[bytes] = []
        if call.index not in self._tools:
            block = {
                "type": "tool_use",
                "id": call.id or f"toolu_fusebox{next(_ids)}",
                "name": function.name or "",
                "input": {},
            }
            out = self._open_block(block, "tool")
            self._tools[call.index] = self._index
        if function.arguments:
            delta = {"type": "input_json_delta", "partial_json": function.arguments}
            index = self._tools[call.index]
            out.append(event("content_block_delta", {"index": index, "delta": delta}))
        return out

    def _open_block(self, block: Json, kind: str) -> list[bytes]:
        out = self._close_block()
        self._index += 1
        self._open = kind
        start = {"index": self._index, "content_block": block}
        return [*out, event("content_block_start", start)]

    def _close_block(self) -> list[bytes]:
        if self._open is None:
            return []
        self._open = None
        return [event("content_block_stop", {"index": self._index})]

    def _finish(self) -> list[bytes]:
        usage = message_usage(self._inner.usage)
        delta = {"stop_reason": self._stop or "end_turn", "stop_sequence": None}
        return [
            *self._close_block(),
            event("message_delta", {"delta": delta, "usage": usage}),
            event("message_stop", {}),
        ]

    async def aclose(self) -> None:
        """Close the inner stream."""
        await self._inner.aclose()


def _chunk(frame: bytes) -> _Completion | None:
    data = frame.removeprefix(b"data: ").strip()
    try:
        return _decode_completion(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None  # the adapter already vetted the stream; nothing to translate


def static_message(alias: str, text: str) -> bytes:
    """Return the whole ``@static`` answer as a Messages ``message``."""
    content = [{"type": "text", "text": text}]
    body = _message(f"msg_fusebox{next(_ids)}", alias, content, "end_turn")
    return _encode(body | {"usage": message_usage(None)})


def static_events(alias: str, text: str) -> list[bytes]:
    """Return the ``@static`` answer as the events of one streamed message."""
    message = _message(f"msg_fusebox{next(_ids)}", alias, [], None)
    block = {"type": "text", "text": ""}
    delta = {"type": "text_delta", "text": text}
    end = {"stop_reason": "end_turn", "stop_sequence": None}
    return [
        event("message_start", {"message": message | {"usage": message_usage(None)}}),
        event("content_block_start", {"index": 0, "content_block": block}),
        event("content_block_delta", {"index": 0, "delta": delta}),
        event("content_block_stop", {"index": 0}),
        event("message_delta", {"delta": end, "usage": {"output_tokens": 0}}),
        event("message_stop", {}),
    ]
