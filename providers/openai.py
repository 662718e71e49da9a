"""Adapter for any OpenAI-compatible upstream (OpenAI, Azure v1, vLLM, Groq, Ollama).

Innermost layer but one: the request is the client's JSON with only ``model``
rewritten (unknown fields kept), and streamed events are parsed just enough to
know content, errors and the end; their bytes are forwarded as they came.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, NoReturn

import msgspec

from providers._http import Transport, UpstreamResponse, redact
from providers.embedding import read_embeddings
from providers.errors import (
    UpstreamAuthError,
    UpstreamBadRequestError,
    UpstreamContextLengthError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRateLimitError,
    UpstreamStreamCutError,
    UpstreamUnavailableError,
)
from providers.retry_after import parse_retry_after
from providers.sse import SSEEvent, SSEParser
from providers.types import ChatRequest, ChatResponse, Usage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping


class _ErrorBody(msgspec.Struct):
    message: str | None = None
    type: str | None = None
    code: str | int | None = None
    param: str | None = None


class _ErrorEnvelope(msgspec.Struct):
    error: _ErrorBody | str | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[Any] | None = None


class _ChunkChoice(msgspec.Struct):
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Chunk(msgspec.Struct):
    choices: list[_ChunkChoice] | None = None
    usage: Usage | None = None
    model: str = ""
    error: _ErrorBody | str | None = None


class _Completion(msgspec.Struct):
    choices: list[Any]
    model: str = ""
    usage: Usage | None = None


_decode_error = msgspec.json.Decoder(_ErrorEnvelope).decode
_decode_chunk = msgspec.json.Decoder(_Chunk).decode
_decode_completion = msgspec.json.Decoder(_Completion).decode
_encode = msgspec.json.Encoder().encode
HTTP_TOO_MANY: Final = 429
_CONTEXT_CODES: Final = frozenset(
    {"context_length_exceeded", "string_above_max_length"}
)


def map_status_error(
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    deployment: str,
    secret: str | None,
) -> UpstreamError:
    """Map one non-2xx OpenAI-style answer into the taxonomy (the only place)."""
    try:
        env = _decode_error(body)
        err = (
            env.error
            if isinstance(env.error, _ErrorBody)
            else _ErrorBody(message=env.error)
        )
    except (msgspec.DecodeError, msgspec.ValidationError):
        err = _ErrorBody(message=body[:200].decode("utf-8", "replace"))
    code = None if err.code is None else str(err.code)
    text = redact(err.message or f"HTTP {status}", secret)
    where = f"upstream {deployment}"
    if status == HTTP_TOO_MANY and code != "insufficient_quota":
        return UpstreamRateLimitError(
            f"{where} is rate limited: {text}",
            deployment=deployment,
            status=status,
            upstream_code=code,
            retry_after_s=parse_retry_after(headers, _now_wall()),
        )
    if status in {401, 403, 404} or code == "insufficient_quota":
        return UpstreamAuthError(
            f"{where} refused the gateway's credentials or model ({status})",
            deployment=deployment,
            status=status,
            upstream_code=code,
        )
    if status in {400, 413, 422}:
        if code in _CONTEXT_CODES:
            return UpstreamContextLengthError(
                f"{where}: {text}",
                deployment=deployment,
                status=status,
                upstream_code=code,
            )
        return UpstreamBadRequestError(
            text,
            deployment=deployment,
            status=status,
            upstream_code=code,
            upstream_type=err.type,
            param=err.param,
        )
    return UpstreamUnavailableError(
        f"{where} failed with {status}: {text}",
        deployment=deployment,
        status=status,
        upstream_code=code,
    )


def _now_wall() -> float:
    import datetime as dt  # noqa: PLC0415 - only on the error path

    return dt.datetime.now(dt.UTC).timestamp()


class OpenAIProvider:
    """An OpenAI-compatible upstream behind its own connection pool."""

    kind = "openai"

    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        api_key: str | None,
        pool_size: int,
        prefill: bool = False,
        prefill_extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        """Build the adapter; the session opens on the first call."""
        self.name = name
        self.supports_prefill = prefill
        self._prefill_extra = dict(prefill_extra_body or {})
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._transport = Transport(
            base_url=base_url, headers=headers, pool_size=pool_size, secret=api_key
        )

    def _body(self, request: ChatRequest) -> bytes:
        payload = dict(request.payload)
        payload["model"] = request.model
        payload["stream"] = request.stream
        if request.stream:
            options = dict(payload.get("stream_options") or {})
            options["include_usage"] = True
            payload["stream_options"] = options
        if request.prefill:
            payload["messages"] = [
                *payload["messages"],
                {"role": "assistant", "content": request.prefill},
            ]
            payload.update(self._prefill_extra)
        return _encode(payload)

    async def _post(
        self,
        request: ChatRequest,
        deployment: str,
        path: str = "/chat/completions",
        body: bytes | None = None,
    ) -> UpstreamResponse:
        resp = await self._transport.post(
            path,
            self._body(request) if body is None else body,
            limits=request.limits,
            deployment=deployment,
        )
        if resp.status >= 300:  # noqa: PLR2004
            body = await resp.read()
            resp.release()
            raise map_status_error(
                resp.status,
                body,
                resp.headers,
                deployment=deployment,
                secret=self._transport.secret,
            )
        return resp

    async def complete(self, request: ChatRequest, /) -> ChatResponse:
        """Send one non-streamed request and return the upstream's JSON as is."""
        deployment = f"{self.name}/{request.model}"
        resp = await self._post(request, deployment)
        body = await resp.read()
        resp.release()
        try:
            parsed = _decode_completion(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise UpstreamProtocolError(
                f"upstream {deployment} sent a body that is not a chat completion",
                deployment=deployment,
            ) from exc
        return ChatResponse(
            body=body, model=parsed.model or request.model, usage=parsed.usage
        )

    async def open_stream(self, request: ChatRequest, /) -> OpenAIStream:
        """Open a stream and return once its first content has arrived."""
        deployment = f"{self.name}/{request.model}"
        resp = await self._post(request, deployment)
        stream = OpenAIStream(
            resp,
            deployment,
            include_usage=request.include_usage,
            secret=self._transport.secret,
        )
        try:
            await stream.fill_head()
        except BaseException:
            await stream.aclose()
            raise
        return stream

    async def embed(self, request: ChatRequest, /) -> ChatResponse:
        """Send an embeddings request (only ``model`` rewritten); return it as is."""
        deployment = f"{self.name}/{request.model}"
        body = _encode({**request.payload, "model": request.model})
        resp = await self._post(request, deployment, "/embeddings", body)
        answer = await resp.read()
        resp.release()
        return read_embeddings(answer, deployment, request.model)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._transport.aclose()


class OpenAIStream:
    """An upstream SSE stream, forwarded frame by frame as it came."""

    def __init__(
        self,
        resp: UpstreamResponse,
        deployment: str,
        *,
        include_usage: bool,
        secret: str | None = None,
    ) -> None:
        """Wrap an upstream response whose headers have arrived."""
        self._resp = resp
        self._secret = secret
        self._deployment = deployment
        self._include_usage = include_usage
        self._chunks = resp.chunks()
        self._parser = SSEParser()
        self._head: list[bytes] = []
        self._pending: list[SSEEvent] = []
        self._has_content = False
        self._done = False
        self._error: UpstreamStreamCutError | None = None
        self._closed = False
        self._parts: list[str] = []
        self.model = deployment.partition("/")[2]
        self.finish_reason: str | None = None
        self.usage: Usage | None = None

    @property
    def text(self) -> str:
        """Return the content delivered so far."""
        return "".join(self._parts)

    async def fill_head(self) -> None:
        """Read until the first content (role-only chunks are held back)."""
        while not self._has_content and not self._done:
            for frame in await self._next_frames():
                self._head.append(frame)

    async def _next_frames(self) -> list[bytes]:
        """Read one network chunk and return the client frames it completes."""
        try:
            chunk = await anext(self._chunks)
            events = self._parser.feed(chunk)
        except StopAsyncIteration:
            events = self._parser.close()
            if not self._done and not events:
                self._end_of_body()
        frames: list[bytes] = []
        for event in events:
            try:
                frame = self._frame(event)
            except UpstreamStreamCutError as exc:
                # Content that arrived with the failure still reaches the client first.
                self._error = exc
                self._done = True
                return frames
            if frame is not None:
                frames.append(frame)
        return frames

    def _end_of_body(self) -> None:
        if self.finish_reason is None:
            self._fail("ended before its answer was complete")
        self._done = True

    def _frame(self, event: SSEEvent) -> bytes | None:
        data = event.data
        if self._done:
            return None
        if data.startswith("[DONE]"):
            if self.finish_reason is None:
                self._fail("sent [DONE] before its answer was complete")
            self._done = True
            return None
        try:
            chunk = _decode_chunk(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self._fail("sent a malformed event", protocol=True)
        if chunk.error is not None:
            self._fail_event(chunk.error)
        return self._account(chunk, data)

    def _account(self, chunk: _Chunk, data: str) -> bytes | None:
        if chunk.model:
            self.model = chunk.model
        if chunk.usage is not None:
            self.usage = chunk.usage
        choices = chunk.choices
        if not choices:
            return _frame_bytes(data) if self._include_usage and chunk.usage else None
        choice = choices[0]
        delta = choice.delta
        if delta is not None:
            if delta.content:
                self._parts.append(delta.content)
                self._has_content = True
            elif delta.tool_calls or delta.refusal:
                self._has_content = True
        if choice.finish_reason is not None:
            self.finish_reason = choice.finish_reason
            self._has_content = True
        return _frame_bytes(data)

    def _fail_event(self, error: _ErrorBody | str) -> NoReturn:
        message = error if isinstance(error, str) else (error.message or "error event")
        self._fail(f"sent an error event: {redact(message, self._secret)}")

    def _fail(self, what: str, *, protocol: bool = False) -> NoReturn:
        message = f"upstream {self._deployment} {what}"
        if self._has_content:
            raise UpstreamStreamCutError(message, deployment=self._deployment)
        if protocol:
            raise UpstreamProtocolError(message, deployment=self._deployment)
        raise UpstreamUnavailableError(message, deployment=self._deployment)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        """Yield the held-back head, then every frame until the end."""
        head, self._head = self._head, []
        for frame in head:
            yield frame
        while not self._done:
            try:
                frames = await self._next_frames()
            except UpstreamStreamCutError:
                raise
            except UpstreamError as exc:
                raise UpstreamStreamCutError(
                    f"upstream {self._deployment} stream failed: {exc.message}",
                    deployment=self._deployment,
                ) from exc
            for frame in frames:
                yield frame
        if self._error is not None:
            raise self._error
        await self.aclose()

    async def aclose(self) -> None:
        """Release a finished stream to the pool, or drop an unfinished one."""
        if self._closed:
            return
        self._closed = True
        if self._done and self._error is None:
            self._resp.release()
        else:
            self._resp.close()


def _frame_bytes(data: str) -> bytes:
    return b"data: " + data.encode() + b"\n\n"
