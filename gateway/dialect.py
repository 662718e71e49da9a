"""What differs between the inbound APIs that share one chain: their dialects.

Outermost layer of the onion, beside ``gateway.chat``: every endpoint goes
through the same auth, tenant limiter, deadline, fallback and tail rungs
(``chat.Exchange``); a ``Reader`` turns an endpoint's body into a ``Dialect``,
which knows how to call a deployment for that API and how to spell its answers,
streams and errors. ``CHAT`` is OpenAI's chat completions;
``gateway.messages`` and ``gateway.embeddings`` hold the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Protocol

from gateway import replay, wire
from gateway.errors import error_headers, render, status_of, stream_error_frame

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from gateway.replay import Ended
    from gateway.runtime import Route
    from policies.pipeline import Deployment
    from providers.errors import GatewayError
    from providers.types import ChatRequest, ChatResponse, ChatStream

#: Status, JSON body and extra headers of an error answer.
ErrorReply = tuple[int, bytes, list[tuple[bytes, bytes]]]
DONE: Final = b"data: [DONE]\n\n"


class ErrorStyle(Protocol):
    """How an API spells an error answer."""

    def error(self, exc: GatewayError, *, final: bool) -> ErrorReply:
        """Return the status, body and headers of ``exc`` (``final``: chain done)."""
        ...


class Dialect(ErrorStyle, Protocol):
    """One decoded request, and how its API calls deployments and writes answers."""

    #: The alias the client asked for.
    alias: str
    stream: bool
    #: The client's JSON, as decoded (unknown fields kept).
    payload: dict[str, Any]
    include_usage: bool
    #: Written after a whole stream (OpenAI's ``[DONE]``; nothing for Anthropic).
    done: bytes

    def fit(self, route: Route) -> Route:
        """Return the part of ``route`` able to serve this request (or raise)."""
        ...

    def call(
        self, dep: Deployment, request: ChatRequest
    ) -> Awaitable[ChatResponse | ChatStream]:
        """Start one attempt on ``dep``; answers come back in this dialect."""
        ...

    def relay(self, frame: bytes) -> bytes:
        """Return ``frame`` as the client must see it (``b""``: drop it)."""
        ...

    def static_answer(self, alias: str, text: str) -> bytes:
        """Return the whole answer ``text`` (the ``@static`` rung)."""
        ...

    def static_stream(self, alias: str, text: str) -> list[bytes]:
        """Return the frames of ``text`` streamed, without ``done``."""
        ...

    def stream_error(self, exc: GatewayError) -> bytes:
        """Return the in-band error event that ends a started stream."""
        ...

    def assemble(
        self, text: str, ended: Ended, model: str, created: float
    ) -> bytes | None:
        """Return a finished stream as one stored answer (None: not whole text)."""
        ...

    def replayable(self, body: bytes) -> bool:
        """Tell whether ``body`` is a stored answer of this API."""
        ...

    def stored_stream(self, body: bytes) -> list[bytes]:
        """Return the frames that re-stream a stored answer, without ``done``."""
        ...


class Reader(ErrorStyle, Protocol):
    """One endpoint: how its body becomes a ``Dialect``."""

    #: The endpoint's name in the request log and metrics.
    endpoint: str
    #: Which aliases it serves (``[models.X] endpoint``).
    serves: str

    def decode(self, body: bytes) -> Dialect:
        """Decode and check a body; raise a ``ClientError`` (400) if it is bad."""
        ...


def openai_error(exc: GatewayError, *, final: bool) -> ErrorReply:
    """Spell ``exc`` in OpenAI's error format (``gateway.errors``)."""
    extra = [
        (k.encode(), v.encode()) for k, v in error_headers(exc, final=final).items()
    ]
    return status_of(exc), render(exc), extra


class ChatDialect:
    """``POST /v1/chat/completions``: OpenAI in, OpenAI out."""

    __slots__ = ("alias", "include_usage", "payload", "stream")
    done = DONE

    def __init__(self, payload: dict[str, Any], chat: wire.ChatBody) -> None:
        """Hold the decoded request."""
        self.payload = payload
        self.alias = chat.model
        self.stream = bool(chat.stream)
        options = chat.stream_options
        self.include_usage = bool(options and options.include_usage)

    def fit(self, route: Route) -> Route:
        """Every chat deployment serves chat."""
        return route

    def call(
        self, dep: Deployment, request: ChatRequest
    ) -> Awaitable[ChatResponse | ChatStream]:
        """Call the provider's chat API."""
        if request.stream:
            return dep.provider.open_stream(request)
        return dep.provider.complete(request)

    def relay(self, frame: bytes) -> bytes:
        """Forward frames as they came."""
        return frame

    def static_answer(self, alias: str, text: str) -> bytes:
        """Return a ``chat.completion``."""
        return wire.static_completion(alias, text)

    def static_stream(self, alias: str, text: str) -> list[bytes]:
        """Return ``chat.completion.chunk`` frames."""
        return wire.static_stream(alias, text)

    def error(self, exc: GatewayError, *, final: bool) -> ErrorReply:
        """Spell ``exc`` in OpenAI's format."""
        return openai_error(exc, final=final)

    def stream_error(self, exc: GatewayError) -> bytes:
        """Return ``data: {"error": ...}``."""
        return stream_error_frame(exc)

    def assemble(
        self, text: str, ended: Ended, model: str, created: float
    ) -> bytes | None:
        """Return a ``chat.completion`` (``gateway.replay``)."""
        return replay.assemble(text, ended, model, created)

    def replayable(self, body: bytes) -> bool:
        """Tell whether ``body`` is a one-choice ``chat.completion``."""
        return replay.is_replayable(body)

    def stored_stream(self, body: bytes) -> list[bytes]:
        """Return ``chat.completion.chunk`` frames (usage if the client asked)."""
        return replay.sse_frames(body, include_usage=self.include_usage)


class _ChatReader:
    """Reads chat-completions bodies."""

    endpoint = "chat"
    serves = "chat"

    def decode(self, body: bytes) -> Dialect:
        """Decode a chat-completions body."""
        return ChatDialect(*wire.decode_chat(body))

    def error(self, exc: GatewayError, *, final: bool) -> ErrorReply:
        """Spell ``exc`` in OpenAI's format."""
        return openai_error(exc, final=final)


CHAT: Final[Reader] = _ChatReader()
