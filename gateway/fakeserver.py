"""The fake upstream's data plane: what the SDKs and the gateway talk to.

Outside the onion: test equipment behind ``gateway.fakeupstream``. Each
request is read, recorded and given a fault plan by the ``FaultBook``
(``gateway.fakefault``); the faults that strike before the first byte are
applied here, then the answer (``gateway.fakeanswer``) goes out in the
request's wire format (``gateway.fakewire``), streamed or whole, with any
mid-stream fault.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, Final, Protocol

import msgspec
from aiohttp import web

from gateway.fakeanswer import (
    Answer,
    Json,
    Prompt,
    anthropic_prompt,
    make_answer,
    openai_prompt,
)
from gateway.fakefault import Choice, FaultBook, Plan, Record
from gateway.fakewire import (
    MODELS_BODY,
    AnthropicStream,
    OpenAIStream,
    anthropic_error,
    anthropic_headers,
    anthropic_message,
    count_tokens_body,
    embeddings_body,
    openai_completion,
    openai_error,
    openai_headers,
)

if TYPE_CHECKING:
    from collections.abc import Callable

_SSE: Final = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
}
_decode = msgspec.json.Decoder().decode


class _Frames(Protocol):
    def head(self) -> bytes: ...
    def chunks(self) -> list[bytes]: ...
    def tail(self, *, done: bool) -> bytes: ...
    def error(self) -> bytes: ...
    def malformed(self) -> bytes: ...


class _Wire(Protocol):
    """One wire format: how a request is read and an answer or error spelled."""

    def prompt(self, body: Json) -> Prompt: ...
    def message(self, answer: Answer, call: _Call) -> bytes: ...
    def frames(self, answer: Answer, call: _Call) -> _Frames: ...
    def headers(self, choice: Choice, *, limited: bool = False) -> dict[str, str]: ...
    def error_body(
        self, kind: str, choice: Choice, message: str | None
    ) -> tuple[int, bytes]: ...


def _error(
    wire: _Wire, choice: Choice, kind: str, message: str | None = None
) -> web.Response:
    """Answer an error ``kind`` in ``wire``'s shape, with Retry-After if scripted."""
    status, body = wire.error_body(kind, choice, message)
    headers = wire.headers(choice, limited=status == HTTPStatus.TOO_MANY_REQUESTS)
    after = choice.plan.retry_after
    if after is not None and kind == choice.plan.status:
        headers["retry-after"] = after
        headers["retry-after-ms"] = f"{float(after) * 1000:.3f}".rstrip("0").rstrip(".")
    return web.Response(
        status=status, body=body, headers=headers, content_type="application/json"
    )


class _OpenAIWire:
    def prompt(self, body: Json) -> Prompt:
        return openai_prompt(body)

    def message(self, answer: Answer, call: _Call) -> bytes:
        return openai_completion(answer, call.choice.model, call.choice.seq)

    def frames(self, answer: Answer, call: _Call) -> _Frames:
        options = call.body.get("stream_options")
        usage = isinstance(options, dict) and options.get("include_usage") is True
        choice = call.choice
        return OpenAIStream(answer, choice.model, choice.seq, include_usage=usage)

    def headers(self, choice: Choice, *, limited: bool = False) -> dict[str, str]:
        return openai_headers(choice.seq, limited=limited)

    def error_body(
        self, kind: str, choice: Choice, message: str | None
    ) -> tuple[int, bytes]:
        return openai_error(kind, choice.model, message)


class _AnthropicWire:
    def prompt(self, body: Json) -> Prompt:
        return anthropic_prompt(body)

    def message(self, answer: Answer, call: _Call) -> bytes:
        return anthropic_message(answer, call.choice.model, call.choice.seq)

    def frames(self, answer: Answer, call: _Call) -> _Frames:
        return AnthropicStream(answer, call.choice.model, call.choice.seq)

    def headers(self, choice: Choice, *, limited: bool = False) -> dict[str, str]:
        reset_s = float(choice.plan.retry_after or 1)
        return anthropic_headers(choice.seq, limited=limited, reset_s=reset_s)

    def error_body(
        self, kind: str, choice: Choice, message: str | None
    ) -> tuple[int, bytes]:
        return anthropic_error(kind, choice.model, choice.seq, message)


_OPENAI: Final[_Wire] = _OpenAIWire()
_ANTHROPIC: Final[_Wire] = _AnthropicWire()


class _Call(msgspec.Struct, frozen=True):
    """An admitted request that survived the faults before any response byte."""

    body: Json
    choice: Choice
    stream: bool

    @property
    def plan(self) -> Plan:
        return self.choice.plan


async def _forever() -> None:
    """Wait until cancelled: the client went away or the server is stopping."""
    await asyncio.get_running_loop().create_future()


def _drop(request: web.BaseRequest, *, reset: bool) -> web.Response:
    """Close the connection now: an RST if ``reset``, else a FIN after the data sent."""
    transport = request.transport
    if transport is not None:
        if reset:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            transport.abort()
        else:
            transport.close()
    # aiohttp's attempt to send this fails quietly on the closed transport.
    return web.Response()


def _json(body: bytes, headers: dict[str, str]) -> web.Response:
    return web.Response(body=body, headers=headers, content_type="application/json")


async def _write(
    response: web.StreamResponse, chunks: list[bytes], gap_ms: int, tail: bytes
) -> None:
    if not gap_ms:
        await response.write(b"".join((*chunks, tail)))
        return
    for chunk in chunks:
        await response.write(chunk)
        await asyncio.sleep(gap_ms / 1000)
    if tail:
        await response.write(tail)


async def _stream(
    request: web.BaseRequest, frames: _Frames, plan: Plan, headers: dict[str, str]
) -> web.StreamResponse:
    """Send a stream: head at once, then content, with any mid-stream fault."""
    response = web.StreamResponse(headers={**headers, **_SSE})
    await response.prepare(request)
    await response.write(frames.head())
    if plan.slowfirst_ms:
        await asyncio.sleep(plan.slowfirst_ms / 1000)
    chunks = frames.chunks()
    fault = plan.break_point()
    if fault is None:
        await _write(response, chunks, plan.gap_ms, frames.tail(done=not plan.nodone))
        await response.write_eof()
        return response
    name, count = fault
    await _write(response, chunks[:count], plan.gap_ms, b"")
    if name == "cut":
        return _drop(request, reset=False)
    if name == "stall":
        await _forever()
    await response.write(frames.error() if name == "errorevent" else frames.malformed())
    await response.write_eof()
    return response


class DataPlane:
    """The handlers upstream clients talk to, around one ``FaultBook``."""

    def __init__(self, book: FaultBook) -> None:
        """Serve answers and faults as ``book`` decides."""
        self._book = book

    def routes(self) -> list[web.RouteDef]:
        """Return the OpenAI and Anthropic routes."""
        return [
            web.post("/v1/chat/completions", self.chat),
            web.get("/v1/models", self.models),
            web.post("/v1/embeddings", self.embeddings),
            web.post("/v1/messages", self.messages),
            web.post("/v1/messages/count_tokens", self.count_tokens),
        ]

    def _record(
        self, request: web.Request, body: object, choice: Choice, requested: str
    ) -> None:
        stream = isinstance(body, dict) and body.get("stream") is True
        self._book.record(
            Record(
                model=choice.model,
                full_model=requested,
                path=request.path,
                stream=stream,
                time=time.monotonic(),
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
                fault=choice.fault,
            )
        )

    async def _admit(
        self, request: web.Request, wire: _Wire
    ) -> _Call | web.StreamResponse:
        """Read, record and fault a request; return it, or the response that ends it."""
        raw = await request.read()
        try:
            body: object = _decode(raw) if raw else None
        except msgspec.DecodeError:
            body = None
        model = body.get("model") if isinstance(body, dict) else None
        requested = model if isinstance(model, str) else ""
        choice = self._book.choose(requested)
        self._record(request, body, choice, requested)
        if not isinstance(body, dict):
            return _error(
                wire, choice, "400", "The request body must be a JSON object."
            )
        if choice.problem is not None:
            return _error(wire, choice, "400", f"fake upstream: {choice.problem}")
        call = _Call(body, choice, body.get("stream") is True)
        return await self._early_faults(request, wire, call)

    @staticmethod
    async def _early_faults(
        request: web.Request, wire: _Wire, call: _Call
    ) -> _Call | web.StreamResponse:
        """Apply the faults that strike before the first response byte."""
        plan = call.plan
        if plan.delay_ms:
            await asyncio.sleep(plan.delay_ms / 1000)
        if plan.reset:
            return _drop(request, reset=True)
        if plan.hang:
            await _forever()
        if plan.slowfirst_ms and not call.stream:
            await asyncio.sleep(plan.slowfirst_ms / 1000)
        if plan.status is not None:
            return _error(wire, call.choice, plan.status)
        return call

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """Answer ``POST /v1/chat/completions``."""
        return await self._converse(request, _OPENAI)

    async def messages(self, request: web.Request) -> web.StreamResponse:
        """Answer ``POST /v1/messages``."""
        return await self._converse(request, _ANTHROPIC)

    async def _converse(self, request: web.Request, wire: _Wire) -> web.StreamResponse:
        call = await self._admit(request, wire)
        if not isinstance(call, _Call):
            return call
        try:
            prompt = wire.prompt(call.body)
        except ValueError as exc:
            return _error(wire, call.choice, "400", str(exc))
        answer = make_answer(prompt, call.plan.words)
        headers = wire.headers(call.choice)
        if not call.stream:
            return _json(wire.message(answer, call), headers)
        return await _stream(request, wire.frames(answer, call), call.plan, headers)

    async def count_tokens(self, request: web.Request) -> web.StreamResponse:
        """Answer ``POST /v1/messages/count_tokens``."""
        return await self._reply(
            request,
            _ANTHROPIC,
            lambda call: count_tokens_body(anthropic_prompt(call.body)),
        )

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        """Answer ``POST /v1/embeddings``."""
        return await self._reply(
            request, _OPENAI, lambda call: embeddings_body(call.body, call.choice.model)
        )

    async def _reply(
        self, request: web.Request, wire: _Wire, make: Callable[[_Call], bytes]
    ) -> web.StreamResponse:
        call = await self._admit(request, wire)
        if not isinstance(call, _Call):
            return call
        try:
            body = make(call)
        except ValueError as exc:
            return _error(wire, call.choice, "400", str(exc))
        return _json(body, wire.headers(call.choice))

    async def models(self, request: web.Request) -> web.StreamResponse:
        """Answer ``GET /v1/models`` (recorded, never faulted)."""
        choice = self._book.choose("")
        self._record(request, None, choice, "")
        return _json(MODELS_BODY, _OPENAI.headers(choice))
