"""Adapter for the Anthropic Messages API, spoken to clients as chat completions.

Innermost layer but one for ``kind = "anthropic"`` providers: each attempt's
OpenAI payload is translated (``providers.anthropic_wire``, where the dropped
fields are listed), POSTed to ``{base_url}/v1/messages`` over the provider's own
pool, and the answer comes back as OpenAI JSON or OpenAI SSE frames. A stream is
returned only once its first content arrived, so every earlier failure can fail
over; later ones raise ``UpstreamStreamCutError``. A model that answers 400 to
``temperature``/``top_p`` (newer Claude models deprecate them) is asked once
more without them, and is sent none from then on. Anthropic clients of
``/v1/messages`` are served natively instead (``messages``,
``open_messages_stream``, ``count_tokens``; ``providers.anthropic_native``).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Final

import msgspec

from providers._http import Transport, UpstreamResponse, redact
from providers.anthropic_native import (
    NativeStream,
    native_body,
    open_native_stream,
    read_answer,
)
from providers.anthropic_wire import (
    MessagesRequest,
    StreamEventError,
    StreamTranslator,
    map_event_error,
    map_status_error,
    rejects_sampling,
    to_chat_response,
    to_messages_request,
)
from providers.errors import (
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStreamCutError,
    UpstreamUnavailableError,
)
from providers.sse import EventReader, SSEEvent

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from providers.types import ChatRequest, ChatResponse

_encode = msgspec.json.Encoder().encode
_PATH: Final = "/v1/messages"
_COUNT_PATH: Final = "/v1/messages/count_tokens"
_HTTP_OK_MAX: Final = 299


def _wall_clock() -> float:
    return dt.datetime.now(dt.UTC).timestamp()


class AnthropicProvider:
    """An Anthropic Messages API upstream behind its own connection pool."""

    kind = "anthropic"

    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        api_key: str,
        anthropic_version: str = "2023-06-01",
        max_tokens_default: int = 4096,
        prefill: bool = False,
        pool_size: int = 100,
        wall_clock: Callable[[], float] = _wall_clock,
    ) -> None:
        """Build the adapter; the session opens on the first call.

        Args:
            name: The provider's name in the config (``providers.<name>``).
            base_url: Without ``/v1`` (``https://api.anthropic.com``).
            api_key: Sent as ``x-api-key``; removed from every error text.
            anthropic_version: Sent as ``anthropic-version``.
            max_tokens_default: ``max_tokens`` when the client set none.
            prefill: The models accept an assistant prefill (stream continuation).
            pool_size: Connection pool size, at least the provider's bulkhead.
            wall_clock: Unix time, for ``created`` and HTTP-date ``retry-after``.
        """
        self.name = name
        self.supports_prefill = prefill
        self._max_tokens = max_tokens_default
        self._wall_clock = wall_clock
        self._secret = api_key or None
        # Models that answered 400 to temperature/top_p; later requests omit them.
        self._no_sampling: set[str] = set()
        self._transport = Transport(
            base_url=base_url,
            headers={"x-api-key": api_key, "anthropic-version": anthropic_version},
            pool_size=pool_size,
            secret=self._secret,
        )

    async def complete(self, request: ChatRequest, /) -> ChatResponse:
        """Send one non-streamed request and return it as a ``chat.completion``."""
        deployment = f"{self.name}/{request.model}"
        resp, prepared = await self._send(request, deployment, stream=False)
        try:
            body = await resp.read()
        finally:
            resp.release()
        return to_chat_response(
            body,
            created=int(self._wall_clock()),
            join_ws=prepared.join_ws,
            deployment=deployment,
        )

    async def open_stream(self, request: ChatRequest, /) -> AnthropicStream:
        """Open a stream and return once its first content has arrived."""
        deployment = f"{self.name}/{request.model}"
        resp, prepared = await self._send(request, deployment, stream=True)
        stream = AnthropicStream(
            resp,
            deployment,
            model=request.model,
            created=int(self._wall_clock()),
            include_usage=request.include_usage,
            join_ws=prepared.join_ws,
            map_event=self._event_mapper(deployment),
            secret=self._secret,
        )
        try:
            await stream.fill_head()
        except BaseException:
            await stream.aclose()
            raise
        return stream

    async def messages(self, request: ChatRequest, /) -> ChatResponse:
        """Forward a client's Messages request natively; return the JSON as is."""
        resp, deployment, _ = await self._native(request, _PATH)
        return await read_answer(resp, deployment, request.model)

    async def open_messages_stream(self, request: ChatRequest, /) -> NativeStream:
        """Forward a streamed Messages request natively; return once content arrived."""
        resp, deployment, join_ws = await self._native(request, _PATH)
        return await open_native_stream(
            resp,
            deployment,
            model=request.model,
            join_ws=join_ws,
            map_event=self._event_mapper(deployment),
            secret=self._secret,
        )

    async def count_tokens(self, request: ChatRequest, /) -> ChatResponse:
        """Forward a ``count_tokens`` request natively; return the JSON as is."""
        resp, deployment, _ = await self._native(request, _COUNT_PATH)
        return await read_answer(resp, deployment, request.model)

    async def _native(
        self, request: ChatRequest, path: str
    ) -> tuple[UpstreamResponse, str, str]:
        """POST the client's own JSON (``providers.anthropic_native``)."""
        deployment = f"{self.name}/{request.model}"
        body, join_ws = native_body(request)
        resp = await self._transport.post(
            path, body, limits=request.limits, deployment=deployment
        )
        if resp.status > _HTTP_OK_MAX:
            raise await self._error_of(resp, deployment)
        return resp, deployment, join_ws

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._transport.aclose()

    async def _send(
        self, request: ChatRequest, deployment: str, *, stream: bool
    ) -> tuple[UpstreamResponse, MessagesRequest]:
        """POST the request; raise the mapped error for any non-2xx answer."""
        sampling = request.model not in self._no_sampling
        prepared = self._prepare(request, deployment, stream=stream, sampling=sampling)
        resp = await self._post(prepared, request, deployment)
        if resp.status <= _HTTP_OK_MAX:
            return resp, prepared
        error = await self._error_of(resp, deployment)
        if not (sampling and rejects_sampling(error) and _has_sampling(prepared)):
            raise error
        # Newer models refuse sampling parameters: remember, and ask once more.
        self._no_sampling.add(request.model)
        prepared = self._prepare(request, deployment, stream=stream, sampling=False)
        resp = await self._post(prepared, request, deployment)
        if resp.status <= _HTTP_OK_MAX:
            return resp, prepared
        raise await self._error_of(resp, deployment)

    def _prepare(
        self, request: ChatRequest, deployment: str, *, stream: bool, sampling: bool
    ) -> MessagesRequest:
        return to_messages_request(
            request,
            max_tokens_default=self._max_tokens,
            deployment=deployment,
            stream=stream,
            sampling=sampling,
        )

    async def _post(
        self, prepared: MessagesRequest, request: ChatRequest, deployment: str
    ) -> UpstreamResponse:
        return await self._transport.post(
            _PATH, _encode(prepared.body), limits=request.limits, deployment=deployment
        )

    async def _error_of(self, resp: UpstreamResponse, deployment: str) -> UpstreamError:
        try:
            body = await resp.read()
        finally:
            resp.release()
        return map_status_error(
            resp.status,
            body,
            resp.headers,
            deployment=deployment,
            secret=self._secret,
            now_wall=self._wall_clock(),
        )

    def _event_mapper(
        self, deployment: str
    ) -> Callable[[str | None, str], UpstreamError]:
        def map_event(error_type: str | None, message: str) -> UpstreamError:
            return map_event_error(
                error_type,
                message,
                deployment=deployment,
                secret=self._secret,
                now_wall=self._wall_clock(),
            )

        return map_event


def _has_sampling(prepared: MessagesRequest) -> bool:
    return "temperature" in prepared.body or "top_p" in prepared.body


class AnthropicStream(StreamTranslator):
    """An upstream Messages stream, read and translated event by event.

    ``open_stream`` fills the head (role chunk up to the first content) before
    returning; iterating yields the head, then every later frame, and raises
    ``UpstreamStreamCutError`` on any failure.
    """

    def __init__(
        self,
        resp: UpstreamResponse,
        deployment: str,
        *,
        model: str,
        created: int,
        include_usage: bool,
        join_ws: str,
        map_event: Callable[[str | None, str], UpstreamError],
        secret: str | None,
    ) -> None:
        """Wrap an upstream response whose headers have arrived."""
        super().__init__(
            model=model, created=created, include_usage=include_usage, join_ws=join_ws
        )
        self._resp = resp
        self._deployment = deployment
        self._map_event = map_event
        self._secret = secret
        self._events = EventReader(resp.chunks())
        self._held: list[bytes] = []
        self._closed = False

    async def fill_head(self) -> None:
        """Read until the first content; failures raise their mapped error."""
        try:
            while not self.has_content:
                event = await self._require_event("ended before its first content")
                self._held.extend(self.translate(event))
        except StreamEventError as exc:
            raise self._before_content(exc) from exc

    async def __aiter__(self) -> AsyncIterator[bytes]:
        """Yield the held-back head, then every frame until ``message_stop``."""
        try:
            held, self._held = self._held, []
            for frame in held:
                yield frame
            while not self.is_done:
                event = await self._require_event("ended before message_stop")
                for frame in self.translate(event):
                    yield frame
            await self._events.drain()
        except StreamEventError as exc:
            what = redact(exc.what, self._secret)
            message = f"upstream {self._deployment} {what}"
            raise self._cut(message, exc.upstream_type) from exc
        except UpstreamError as exc:
            raise self._cut(f"{exc.message} after content", exc.upstream_code) from exc
        finally:
            self._settle()

    async def aclose(self) -> None:
        """Release a fully read stream to the pool, or drop an unfinished one."""
        self._settle()
        await self._events.aclose()

    async def _require_event(self, at_end: str) -> SSEEvent:
        event = await self._events.next()
        if event is None:
            raise StreamEventError(at_end)
        return event

    def _settle(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._events.eof:
            self._resp.release()
        else:
            self._resp.close()

    def _before_content(self, exc: StreamEventError) -> UpstreamError:
        if exc.upstream_type is not None:
            return self._map_event(exc.upstream_type, exc.detail)
        message = f"upstream {self._deployment} {exc.what}"
        if exc.protocol:
            return UpstreamProtocolError(message, deployment=self._deployment)
        return UpstreamUnavailableError(message, deployment=self._deployment)

    def _cut(self, message: str, upstream_code: str | None) -> UpstreamStreamCutError:
        return UpstreamStreamCutError(
            message, deployment=self._deployment, upstream_code=upstream_code
        )
