r"""Native pass-through to the Anthropic Messages API, for Anthropic clients.

Innermost layer but one for ``/v1/messages`` (and ``count_tokens``) requests on
``kind = "anthropic"`` providers: the client's Messages JSON goes upstream with
only ``model`` rewritten (plus a final assistant turn to continue a cut
stream), and the answer comes back as it came: the JSON body, or each SSE event
re-emitted unchanged, parsed just enough to know content, errors, usage and the
end. A stream is returned once its first content arrived, so earlier failures
fail over; later ones raise ``UpstreamStreamCutError``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Final

import msgspec

from providers._http import redact
from providers.anthropic_wire import FINISH_REASONS, StreamEventError, swallow_ws
from providers.errors import (
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStreamCutError,
    UpstreamUnavailableError,
)
from providers.sse import EventReader, SSEEvent
from providers.types import ChatRequest, ChatResponse, Usage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping

    from providers._http import UpstreamResponse

_encode: Final = msgspec.json.Encoder().encode
_decode_dict: Final = msgspec.json.Decoder(dict[str, Any]).decode


class _Usage(msgspec.Struct, gc=False):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class _Answer(msgspec.Struct, gc=False):
    model: str = ""
    usage: _Usage | None = None


class _Delta(msgspec.Struct, gc=False):
    type: str = ""
    text: str = ""
    partial_json: str = ""
    stop_reason: str | None = None


class _Event(msgspec.Struct, gc=False):
    type: str = ""
    message: _Answer | None = None
    content_block: dict[str, Any] | None = None
    delta: _Delta | None = None
    usage: _Usage | None = None
    error: dict[str, Any] | None = None


_decode_answer: Final = msgspec.json.Decoder(_Answer).decode
_decode_event: Final = msgspec.json.Decoder(_Event).decode
#: Blocks whose start is already content (a call the client will act on).
_CONTENT_BLOCKS: Final = frozenset({"tool_use", "server_tool_use", "redacted_thinking"})
#: Deltas that are content besides text: tool input, and visible thinking (a
#: long think must not look like a silent upstream to ``first_token_s``).
_CONTENT_DELTAS: Final = frozenset({"input_json_delta", "thinking_delta"})
_USAGE_FIELDS: Final = _Usage.__struct_fields__


def to_usage(raw: _Usage | None) -> Usage | None:
    """Convert Anthropic usage to OpenAI's shape (cache tokens are prompt tokens)."""
    if raw is None:
        return None
    cached = raw.cache_read_input_tokens or 0
    prompt = (raw.input_tokens or 0) + (raw.cache_creation_input_tokens or 0) + cached
    completion = raw.output_tokens or 0
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details={"cached_tokens": cached},
    )


def native_body(request: ChatRequest) -> tuple[bytes, str]:
    """Return the client's Messages JSON for ``request.model``, and the join space.

    A ``prefill`` continues the final assistant turn (or becomes one); its
    trailing whitespace is cut (Anthropic rejects it) and returned, so the
    stream can drop it from the continuation's start.
    """
    body = dict(request.payload)
    body["model"] = request.model
    if request.stream:
        body["stream"] = True
    join_ws = ""
    if request.prefill:
        body["messages"], join_ws = _with_prefill(body.get("messages"), request.prefill)
    return _encode(body), join_ws


def _with_prefill(messages: object, prefill: str) -> tuple[list[Any], str]:
    turns = list(messages) if isinstance(messages, list) else []
    last = turns[-1] if turns else None
    blocks: list[Any] = []
    if isinstance(last, dict) and last.get("role") == "assistant":
        turns.pop()
        content = last.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else []
        blocks = blocks or list(content if isinstance(content, list) else [])
    text = prefill
    if blocks and isinstance(blocks[-1], dict) and blocks[-1].get("type") == "text":
        text = str(blocks.pop().get("text", "")) + prefill
    kept = text.rstrip()
    if kept:
        blocks.append({"type": "text", "text": kept})
    if blocks:
        turns.append({"role": "assistant", "content": blocks})
    return turns, text[len(kept) :]


async def read_answer(
    resp: UpstreamResponse, deployment: str, model: str
) -> ChatResponse:
    """Return a whole native answer (a message, or a token count) as it came."""
    try:
        body = await resp.read()
    finally:
        resp.release()
    try:
        answer = _decode_answer(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise UpstreamProtocolError(
            f"upstream {deployment} sent a body that is not a Messages answer",
            deployment=deployment,
        ) from exc
    return ChatResponse(
        body=body, model=answer.model or model, usage=to_usage(answer.usage)
    )


async def open_native_stream(
    resp: UpstreamResponse,
    deployment: str,
    *,
    model: str,
    join_ws: str,
    map_event: Callable[[str | None, str], UpstreamError],
    secret: str | None,
) -> NativeStream:
    """Wrap an upstream stream and return it once its first content arrived."""
    stream = NativeStream(
        resp,
        deployment,
        model=model,
        join_ws=join_ws,
        map_event=map_event,
        secret=secret,
    )
    try:
        await stream.fill_head()
    except BaseException:
        await stream.aclose()
        raise
    return stream


def _frame(name: str, data: str) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (name.encode(), data.encode())


class NativeStream:
    """An upstream Messages stream, forwarded event by event as it came."""

    def __init__(
        self,
        resp: UpstreamResponse,
        deployment: str,
        *,
        model: str,
        join_ws: str,
        map_event: Callable[[str | None, str], UpstreamError],
        secret: str | None,
    ) -> None:
        """Wrap an upstream response whose headers have arrived."""
        self._resp = resp
        self._secret = secret
        self._deployment = deployment
        self._map_event = map_event
        self._join_ws = join_ws
        self._events = EventReader(resp.chunks())
        self._held: list[bytes] = []
        self._parts: list[str] = []
        self._raw_usage = _Usage()
        self._has_content = False
        self._closed = False
        self.is_done = False
        self.model = model
        self.finish_reason: str | None = None
        self.usage: Usage | None = None

    @property
    def text(self) -> str:
        """Return the text delivered so far (for a continuation's prefill)."""
        return "".join(self._parts)

    async def fill_head(self) -> None:
        """Read until the first content; failures raise their mapped error."""
        try:
            while not self._has_content:
                event = await self._require("ended before its first content")
                if (out := self._forward(event)) is not None:
                    self._held.append(out)
        except StreamEventError as exc:
            raise self._before_content(exc) from exc

    async def __aiter__(self) -> AsyncIterator[bytes]:
        """Yield the held-back head, then every event until ``message_stop``."""
        try:
            held, self._held = self._held, []
            for frame in held:
                yield frame
            while not self.is_done:
                event = await self._require("ended before message_stop")
                if (out := self._forward(event)) is not None:
                    yield out
            await self._events.drain()
        except StreamEventError as exc:
            what = redact(exc.what, self._secret)
            raise self._cut(f"upstream {self._deployment} {what}", exc) from exc
        except UpstreamError as exc:
            raise self._cut(f"{exc.message} after content", None) from exc
        finally:
            self._settle()

    def _forward(self, event: SSEEvent) -> bytes | None:
        """Account for one event; return its frame for the client (None: drop)."""
        if event.event == "ping":
            return _frame("ping", event.data)
        try:
            decoded = _decode_event(event.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise StreamEventError("sent a malformed event", protocol=True) from exc
        kind = decoded.type or event.event
        handler = self._HANDLERS.get(kind)
        data = event.data if handler is None else handler(self, decoded, event.data)
        return None if data is None else _frame(kind, data)

    def _on_start(self, event: _Event, data: str) -> str:
        if event.message is not None:
            self.model = event.message.model or self.model
            self._merge_usage(event.message.usage)
        return data

    def _on_block_start(self, event: _Event, data: str) -> str:
        block = event.content_block
        if block is not None and block.get("type") in _CONTENT_BLOCKS:
            self._has_content = True
            self._join_ws = ""
        return data

    def _on_block_delta(self, event: _Event, data: str) -> str | None:
        delta = event.delta
        if delta is None:
            return data
        if delta.type in _CONTENT_DELTAS:
            self._has_content = True
        if delta.type != "text_delta" or not delta.text:
            return data
        text = delta.text
        if self._join_ws:
            self._join_ws, text = swallow_ws(self._join_ws, text)
            if not text:
                return None
            data = _with_text(data, text)
        self._parts.append(text)
        self._has_content = True
        return data

    def _on_message_delta(self, event: _Event, data: str) -> str:
        if event.delta is not None and event.delta.stop_reason is not None:
            self.finish_reason = FINISH_REASONS.get(event.delta.stop_reason, "stop")
        self._merge_usage(event.usage)
        self._has_content = True  # the end of an answer with no content at all
        return data

    def _on_stop(self, _event: _Event, data: str) -> str:
        self.is_done = True
        self._has_content = True
        return data

    def _on_error(self, event: _Event, _data: str) -> str:
        error = event.error or {}
        kind = str(error.get("type") or "api_error")
        detail = str(error.get("message") or "")
        raise StreamEventError(
            f"sent an error event ({kind}): {detail}", upstream_type=kind, detail=detail
        )

    _HANDLERS: ClassVar[Mapping[str, Callable[[NativeStream, _Event, str], Any]]] = {
        "message_start": _on_start,
        "content_block_start": _on_block_start,
        "content_block_delta": _on_block_delta,
        "message_delta": _on_message_delta,
        "message_stop": _on_stop,
        "error": _on_error,
    }

    def _merge_usage(self, update: _Usage | None) -> None:
        """Fold in counts; ``message_delta`` counts are cumulative, so they replace."""
        if update is None:
            return
        for field in _USAGE_FIELDS:
            value = getattr(update, field)
            if value is not None:
                setattr(self._raw_usage, field, value)
        self.usage = to_usage(self._raw_usage)

    async def _require(self, at_end: str) -> SSEEvent:
        event = await self._events.next()
        if event is None:
            raise StreamEventError(at_end)
        return event

    def _before_content(self, exc: StreamEventError) -> UpstreamError:
        if exc.upstream_type is not None:
            return self._map_event(exc.upstream_type, exc.detail)
        message = f"upstream {self._deployment} {exc.what}"
        if exc.protocol:
            return UpstreamProtocolError(message, deployment=self._deployment)
        return UpstreamUnavailableError(message, deployment=self._deployment)

    def _cut(
        self, message: str, exc: StreamEventError | None
    ) -> UpstreamStreamCutError:
        code = exc.upstream_type if exc is not None else None
        return UpstreamStreamCutError(
            message, deployment=self._deployment, upstream_code=code
        )

    def _settle(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._events.eof:
            self._resp.release()
        else:
            self._resp.close()

    async def aclose(self) -> None:
        """Release a fully read stream to the pool, or drop an unfinished one."""
        self._settle()
        await self._events.aclose()


def _with_text(data: str, text: str) -> str:
    """Return a ``text_delta`` event's data with its text replaced."""
    event = _decode_dict(data)
    event["delta"] = {**event["delta"], "text": text}
    return _encode(event).decode()
