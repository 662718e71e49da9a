"""Shared types at the bottom of the onion: what a provider adapter takes and gives.

Policies see only these types and ``providers.errors``; the gateway builds a
``ChatRequest`` per attempt and writes what a ``ChatResponse`` or ``ChatStream``
gives back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import msgspec

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

ProviderName = str
#: ``provider/model``: the unit of health (one breaker each).
DeploymentName = str


class Usage(msgspec.Struct, omit_defaults=True):
    """Token usage in OpenAI's shape (Anthropic's is converted on the way in)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: dict[str, int] | None = None


class AttemptLimits(msgspec.Struct, frozen=True):
    """Per-attempt socket limits, already capped by the request's time left."""

    connect_s: float
    read_s: float


class ChatRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt's input: the client's chat-completions JSON and where it goes.

    ``payload`` is the client's decoded JSON with unknown fields kept;
    OpenAI-compatible upstreams get it back with only ``model`` rewritten.
    """

    payload: dict[str, Any]
    model: str
    stream: bool = False
    #: The client asked for ``stream_options.include_usage``.
    include_usage: bool = False
    limits: AttemptLimits = AttemptLimits(connect_s=3.0, read_s=30.0)
    #: Assistant text already delivered to the client, to be continued.
    prefill: str = ""


class ChatResponse(msgspec.Struct, kw_only=True):
    """A whole non-streamed answer, as OpenAI ``chat.completion`` JSON bytes."""

    body: bytes
    model: str
    usage: Usage | None = None


class ChatStream(Protocol):
    r"""An open upstream stream, returned once its first content has arrived.

    Iterating yields OpenAI SSE frames (``data: {...}\\n\\n``) ready for the
    client, starting with the held-back head; it never yields ``[DONE]`` (the
    gateway writes it) and raises an ``UpstreamError`` when the stream fails.
    """

    @property
    def model(self) -> str:
        """Return the model name the upstream reported."""
        ...

    @property
    def text(self) -> str:
        """Return the content text delivered so far (for mid-stream continuation)."""
        ...

    @property
    def finish_reason(self) -> str | None:
        """Return the finish reason, once the upstream sent it."""
        ...

    @property
    def usage(self) -> Usage | None:
        """Return the token usage, once the upstream sent it."""
        ...

    def __aiter__(self) -> AsyncIterator[bytes]:
        """Yield SSE frames until the upstream's end."""
        ...

    async def aclose(self) -> None:
        """Release the upstream connection; safe to call twice."""
        ...


class Provider(Protocol):
    """One upstream (a base URL and a key) that can answer chat completions."""

    name: ProviderName
    kind: str
    supports_prefill: bool

    async def complete(self, request: ChatRequest, /) -> ChatResponse:
        """Return the whole answer or raise an ``UpstreamError``."""
        ...

    async def open_stream(self, request: ChatRequest, /) -> ChatStream:
        """Open a stream and return once its first content arrived."""
        ...

    async def aclose(self) -> None:
        """Close the connection pool."""
        ...


class _HeadDelta(msgspec.Struct):
    content: str | None = None
    tool_calls: list[Any] | None = None
    refusal: str | None = None


class _HeadChoice(msgspec.Struct):
    delta: _HeadDelta | None = None
    finish_reason: str | None = None


class _HeadChunk(msgspec.Struct):
    choices: list[_HeadChoice] = []


_decode_head = msgspec.json.Decoder(_HeadChunk).decode


def is_role_only_frame(frame: bytes) -> bool:
    """Tell whether an OpenAI SSE frame carries nothing but the assistant role."""
    data = frame.removeprefix(b"data: ").strip()
    try:
        chunk = _decode_head(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False
    for choice in chunk.choices:
        delta = choice.delta
        if choice.finish_reason is not None or delta is None:
            return False
        if delta.content or delta.tool_calls or delta.refusal:
            return False
    return bool(chunk.choices)
