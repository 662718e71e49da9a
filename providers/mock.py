"""The built-in simulated model: deterministic answers, no network.

Innermost layer for ``kind = "mock"`` providers: the demo and tests use it. The
answer is a fixed function of the prompt, streamed word by word, ``latency_s``
apart, with honest usage counts; assistant prefill is continued exactly.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from typing import TYPE_CHECKING, Any, Final

import msgspec

from providers.embedding import mock_embeddings
from providers.types import ChatRequest, ChatResponse, Usage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

_WORDS: Final = [
    "resilience",
    "means",
    "one",
    "failing",
    "provider",
    "degrades",
    "one",
    "feature",
    "and",
    "never",
    "the",
    "whole",
    "service",
    "so",
    "every",
    "call",
    "carries",
    "a",
    "deadline",
    "a",
    "breaker",
    "and",
    "a",
    "fallback",
]
_encode = msgspec.json.Encoder().encode
_ids = itertools.count(1)


def _text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def answer_for(messages: list[Any]) -> str:
    """Return the full deterministic answer to a conversation."""
    last_user = next(
        (
            _text_of(m.get("content"))
            for m in reversed(messages)
            if m.get("role") == "user"
        ),
        "",
    )
    seed = int.from_bytes(hashlib.sha256(last_user.encode()).digest()[:4], "big")
    count = 6 + seed % 6
    words = [_WORDS[(seed + i * 7) % len(_WORDS)] for i in range(count)]
    echo = " ".join(last_user.split()[:4])
    return f"You said: {echo}. " + " ".join(words).capitalize() + "."


def _prompt_tokens(messages: list[Any]) -> int:
    return sum(len(_text_of(m.get("content")).split()) + 3 for m in messages)


def continuation(full: str, prefill: str) -> str:
    """Return what follows ``prefill`` in ``full`` (the whole answer if it diverged)."""
    if full.startswith(prefill):
        return full[len(prefill) :]
    stripped = prefill.rstrip()
    if full.startswith(stripped):
        return full[len(stripped) :].lstrip()
    return full


class MockProvider:
    """A simulated model that needs nothing installed and never fails."""

    kind = "mock"

    def __init__(
        self,
        name: str,
        *,
        latency_s: float = 0.0,
        prefill: bool = True,
        wall: Callable[[], float] | None = None,
    ) -> None:
        """Build the simulator; ``wall`` gives the ``created`` timestamp."""
        self.name = name
        self.supports_prefill = prefill
        self._latency_s = latency_s
        self._wall = wall or _wall

    def _answer(self, request: ChatRequest) -> tuple[str, Usage]:
        messages = list(request.payload.get("messages") or [])
        text = continuation(answer_for(messages), request.prefill)
        prompt = _prompt_tokens(messages) + len(request.prefill.split())
        done = len(text.split())
        return text, Usage(
            prompt_tokens=prompt, completion_tokens=done, total_tokens=prompt + done
        )

    async def complete(self, request: ChatRequest, /) -> ChatResponse:
        """Answer at once (after ``latency_s``) with a whole completion."""
        if self._latency_s:
            await asyncio.sleep(self._latency_s)
        text, usage = self._answer(request)
        body = {
            "id": f"chatcmpl-mock{next(_ids)}",
            "object": "chat.completion",
            "created": int(self._wall()),
            "model": request.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": usage,
        }
        return ChatResponse(body=_encode(body), model=request.model, usage=usage)

    async def open_stream(self, request: ChatRequest, /) -> MockStream:
        """Start a stream; the first word is ready when this returns."""
        if self._latency_s:
            await asyncio.sleep(self._latency_s)
        text, usage = self._answer(request)
        return MockStream(request, text, usage, int(self._wall()), self._latency_s)

    async def embed(self, request: ChatRequest, /) -> ChatResponse:
        """Return deterministic unit vectors hashed from each input."""
        if self._latency_s:
            await asyncio.sleep(self._latency_s)
        return mock_embeddings(request.payload, request.model)

    async def aclose(self) -> None:
        """Nothing to close."""


class MockStream:
    """The simulated stream: one chunk per word."""

    def __init__(
        self,
        request: ChatRequest,
        text: str,
        usage: Usage,
        created: int,
        latency_s: float,
    ) -> None:
        """Prepare the chunks of ``text``."""
        self.model = request.model
        self.text = ""
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self._final_usage = usage
        self._include_usage = request.include_usage
        self._latency_s = latency_s
        self._base = {
            "id": f"chatcmpl-mock{next(_ids)}",
            "object": "chat.completion.chunk",
            "created": created,
            "model": request.model,
        }
        words = text.split(" ")
        self._pieces = [w if i == 0 else " " + w for i, w in enumerate(words) if w or i]

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + _encode({**self._base, "choices": [choice]}) + b"\n\n"

    async def __aiter__(self) -> AsyncIterator[bytes]:
        """Yield the role chunk, one chunk per word, the finish and usage chunks."""
        yield self._chunk({"role": "assistant", "content": ""})
        for i, piece in enumerate(self._pieces):
            if i and self._latency_s:
                await asyncio.sleep(self._latency_s / 4)
            self.text += piece
            yield self._chunk({"content": piece})
        self.finish_reason = "stop"
        yield self._chunk({}, "stop")
        self.usage = self._final_usage
        if self._include_usage:
            usage = {**self._base, "choices": [], "usage": self._final_usage}
            yield b"data: " + _encode(usage) + b"\n\n"

    async def aclose(self) -> None:
        """Nothing to release."""


def _wall() -> float:
    import datetime as dt  # noqa: PLC0415

    return dt.datetime.now(dt.UTC).timestamp()
