"""``POST /v1/messages`` and ``/v1/messages/count_tokens``: Anthropic clients.

Outermost layer of the onion, in the Anthropic dialect: the same auth, tenant
limiter, deadline, chain, resilience stack and ``@static`` tail as chat
(``gateway.chat.Exchange``). Anthropic deployments get the client's request
natively (``AnthropicProvider.messages`` / ``open_messages_stream``); others get
it translated (``gateway.messages_in``) and answer through ``gateway.messages_out``.
Errors take Anthropic's shape (``gateway.errors.render_anthropic``); a stream
that fails after its first byte ends with ``event: error``, or is continued on
a prefill-capable rung as the same message (``Splice``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, TypeVar

import msgspec

from gateway import messages_replay
from gateway.errors import anthropic_stream_error_frame, error_headers, render_anthropic
from gateway.messages_in import to_chat_payload
from gateway.messages_out import (
    MessagesFromChat,
    static_events,
    static_message,
    to_message,
)
from gateway.runtime import Route
from providers.anthropic import AnthropicProvider
from providers.errors import InvalidRequestError

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from gateway.dialect import Dialect, ErrorReply, Reader
    from gateway.replay import Ended
    from policies.pipeline import Deployment
    from providers.errors import GatewayError
    from providers.types import ChatRequest, ChatResponse, ChatStream, Provider

_decode_json: Final = msgspec.json.Decoder(dict[str, Any]).decode
_encode: Final = msgspec.json.Encoder().encode
_PATH: Final = re.compile(r" - at `\$\.?(.*)`$")
_T = TypeVar("_T")


class _Turn(msgspec.Struct):
    role: Literal["user", "assistant"]
    content: str | list[Any]


class _MessagesBody(msgspec.Struct):
    """The fields of a Messages request the gateway itself reads."""

    model: str
    max_tokens: Annotated[int, msgspec.Meta(ge=0)]
    messages: Annotated[list[_Turn], msgspec.Meta(min_length=1)]
    stream: bool | None = False


class _CountBody(msgspec.Struct):
    model: str
    messages: Annotated[list[_Turn], msgspec.Meta(min_length=1)]


def _decode(body: bytes, shape: type[_T]) -> tuple[dict[str, Any], _T]:
    try:
        payload = _decode_json(body)
    except msgspec.ValidationError as exc:
        raise InvalidRequestError("the request body must be a JSON object") from exc
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"the request body is not valid JSON: {exc}") from exc
    try:
        return payload, msgspec.convert(payload, shape)
    except msgspec.ValidationError as exc:
        text = str(exc)
        match = _PATH.search(text)
        param = match.group(1) if match else None
        where = f" (at `{param}`)" if param else ""
        raise InvalidRequestError(f"{_PATH.sub('', text)}{where}", param=param) from exc


def anthropic_error(exc: GatewayError, *, final: bool) -> ErrorReply:
    """Spell ``exc`` in Anthropic's error format, with the usual headers."""
    status, body = render_anthropic(exc)
    headers = error_headers(exc, final=final)
    return status, body, [(k.encode(), v.encode()) for k, v in headers.items()]


def is_native(dep: Deployment) -> bool:
    """Tell whether ``dep`` speaks the Messages API itself."""
    return isinstance(dep.provider, AnthropicProvider)


class _AnthropicDialect:
    """What every Anthropic-format answer shares: errors, the tail, the relay."""

    done = b""
    include_usage = False
    stream = False

    def __init__(self) -> None:
        """Start the relay."""
        self._splice = Splice()

    def relay(self, frame: bytes) -> bytes:
        """Keep the client's message whole across a continuation."""
        return self._splice.relay(frame)

    def static_answer(self, alias: str, text: str) -> bytes:
        """Return a Messages ``message``."""
        return static_message(alias, text)

    def static_stream(self, alias: str, text: str) -> list[bytes]:
        """Return the events of one streamed message."""
        return static_events(alias, text)

    def error(self, exc: GatewayError, *, final: bool) -> ErrorReply:
        """Spell ``exc`` in Anthropic's format."""
        return anthropic_error(exc, final=final)

    def stream_error(self, exc: GatewayError) -> bytes:
        """Return ``event: error``."""
        return anthropic_stream_error_frame(exc)

    def assemble(
        self,
        text: str,
        ended: Ended,
        model: str,
        created: float,  # noqa: ARG002 - a message has no creation time
    ) -> bytes | None:
        """Return a ``message``, if the client's stream carried text blocks only."""
        if not self._splice.only_text:
            return None
        return messages_replay.assemble(text, ended, model)

    def replayable(self, body: bytes) -> bool:
        """Tell whether ``body`` is a Messages ``message``."""
        return messages_replay.is_replayable(body)

    def stored_stream(self, body: bytes) -> list[bytes]:
        """Return the events of the stored ``message`` streamed."""
        return messages_replay.events(body)


class MessagesDialect(_AnthropicDialect):
    """One Messages request: native on Anthropic rungs, translated elsewhere."""

    def __init__(self, payload: dict[str, Any], body: _MessagesBody) -> None:
        """Hold the request, and its chat-completions form if it has one."""
        super().__init__()
        self.payload = payload
        self.alias = body.model
        self.stream = bool(body.stream)
        #: The chat-completions form, made only for a chain with other rungs.
        self._chat: dict[str, Any] = {}

    def fit(self, route: Route) -> Route:
        """Translate for non-Anthropic rungs; skip them if it cannot be done."""
        native = [d for d in route.deployments if is_native(d)]
        if len(native) == len(route.deployments):
            return route
        try:
            self._chat = to_chat_payload(self.payload)
        except InvalidRequestError:
            if not native:
                raise
        else:
            return route
        return Route(
            route.alias, native, has_cache=route.has_cache, static=route.static
        )

    def call(
        self, dep: Deployment, request: ChatRequest
    ) -> Awaitable[ChatResponse | ChatStream]:
        """Forward natively to Anthropic, or translate for any other provider."""
        provider = dep.provider
        if isinstance(provider, AnthropicProvider):
            if request.stream:
                return provider.open_messages_stream(request)
            return provider.messages(request)
        chat = msgspec.structs.replace(request, payload=self._chat, include_usage=True)
        if request.stream:
            return _translated_stream(provider, chat)
        return _translated_answer(provider, chat, dep.name)


async def _translated_stream(provider: Provider, request: ChatRequest) -> ChatStream:
    return MessagesFromChat(await provider.open_stream(request))


async def _translated_answer(
    provider: Provider, request: ChatRequest, deployment: str
) -> ChatResponse:
    return to_message(await provider.complete(request), deployment)


class Splice:
    """Keeps one Anthropic message whole when a cut stream continues elsewhere.

    Frames pass as they are until a second ``message_start`` (a continuation)
    arrives. From then on the continuation's ``message_start`` and pings are
    dropped, its first text block joins the client's open text block, and its
    other blocks are renumbered after the client's.
    """

    __slots__ = ("_map", "_next", "_open", "_resumed", "_started", "only_text")

    def __init__(self) -> None:
        """Start before the first frame."""
        self._started = False
        self._resumed = False
        self._next = 0
        #: The client's open block: (index, type).
        self._open: tuple[int, str] | None = None
        #: Continuation block index -> the client's block index.
        self._map: dict[int, int] = {}
        #: No block but text was started (the stream's text is the whole answer).
        self.only_text = True

    def relay(self, frame: bytes) -> bytes:
        """Return ``frame`` as the client must see it (``b""``: drop it)."""
        if frame.startswith(b"event: content_block_delta") and not self._resumed:
            return frame  # the hot path: most frames are deltas
        name, _, rest = frame.removeprefix(b"event: ").partition(b"\n")
        if name == b"message_start":
            self._resumed = self._started
            self._started = True
            return b"" if self._resumed else frame
        if name == b"ping" and self._resumed:
            return b""
        if name not in {
            b"content_block_start",
            b"content_block_delta",
            b"content_block_stop",
        }:
            return frame
        data = _decode_json(rest.removeprefix(b"data: "))
        if name == b"content_block_start":
            block_type = (data.get("content_block") or {}).get("type")
            self.only_text = self.only_text and block_type == "text"
        if self._resumed:
            return self._renumber(name.decode(), data)
        self._track(name, data)
        return frame

    def _track(self, name: bytes, data: dict[str, Any]) -> None:
        index = int(data.get("index", 0))
        if name == b"content_block_start":
            block = data.get("content_block") or {}
            self._open = (index, str(block.get("type", "")))
            self._next = index + 1
        elif name == b"content_block_stop":
            self._open = None

    def _renumber(self, name: str, data: dict[str, Any]) -> bytes:
        index = int(data.get("index", 0))
        if name != "content_block_start":
            data["index"] = self._map.get(index, index)
            if name == "content_block_stop":
                self._open = None
            return _frame(name, data)
        block_type = str((data.get("content_block") or {}).get("type", ""))
        is_open_text = self._open is not None and self._open[1] == "text"
        if not self._map and is_open_text and block_type == "text":
            assert self._open is not None  # noqa: S101 - is_open_text
            self._map[index] = self._open[0]
            return b""
        out = b""
        if self._open is not None:
            stop = {"type": "content_block_stop", "index": self._open[0]}
            out = _frame("content_block_stop", stop)
        self._map[index] = self._next
        self._open = (self._next, block_type)
        self._next += 1
        data["index"] = self._map[index]
        return out + _frame(name, data)


def _frame(name: str, data: dict[str, Any]) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (name.encode(), _encode(data))


class _MessagesReader:
    """Reads Messages bodies."""

    endpoint = "messages"
    serves = "chat"

    def decode(self, body: bytes) -> Dialect:
        """Decode and check a Messages body."""
        return MessagesDialect(*_decode(body, _MessagesBody))

    def error(self, exc: GatewayError, *, final: bool) -> ErrorReply:
        """Spell ``exc`` in Anthropic's format."""
        return anthropic_error(exc, final=final)


class CountTokensDialect(_AnthropicDialect):
    """A ``count_tokens`` request: only Anthropic rungs can count Claude's tokens."""

    def __init__(self, payload: dict[str, Any], body: _CountBody) -> None:
        """Hold the request; it never streams."""
        super().__init__()
        self.payload = payload
        self.alias = body.model

    def fit(self, route: Route) -> Route:
        """Keep the Anthropic rungs, if the chain starts with one; no tail rungs."""
        first = route.deployments[0] if route.deployments else None
        if first is None or not is_native(first):
            where = first.name if first is not None else "no deployment"
            raise InvalidRequestError(
                f"count_tokens needs a chain that starts with an Anthropic "
                f"deployment; `{self.alias}` starts with {where}",
                param="model",
            )
        native = [d for d in route.deployments if is_native(d)]
        return Route(route.alias, native, has_cache=False, static=None)

    def call(
        self, dep: Deployment, request: ChatRequest
    ) -> Awaitable[ChatResponse | ChatStream]:
        """Forward natively (``fit`` left only Anthropic rungs)."""
        provider = dep.provider
        assert isinstance(provider, AnthropicProvider)  # noqa: S101 - see fit
        return provider.count_tokens(request)


class _CountTokensReader(_MessagesReader):
    """Reads ``count_tokens`` bodies."""

    endpoint = "count_tokens"

    def decode(self, body: bytes) -> Dialect:
        """Decode and check a ``count_tokens`` body."""
        return CountTokensDialect(*_decode(body, _CountBody))


MESSAGES: Final[Reader] = _MessagesReader()
COUNT_TOKENS: Final[Reader] = _CountTokensReader()
