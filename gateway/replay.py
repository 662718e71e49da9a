"""Stored answers: a streamed answer assembled into one, a stored one replayed.

Beside the onion: the fresh cache, the ``@cache`` rung and idempotent replays
all keep an answer as an OpenAI ``chat.completion`` (JSON bytes) and send it
back either as it is or re-chunked into an SSE stream that matches the request
(role chunk, the content in a few chunks, the finish chunk, a usage chunk only
when the client asked for ``include_usage``; the caller writes ``[DONE]``).
"""

from __future__ import annotations

import itertools
import re
from typing import TYPE_CHECKING, Any, Final, Protocol

import msgspec

if TYPE_CHECKING:
    from providers.types import Usage

#: A stored answer's content is replayed in at most this many chunks.
MAX_CONTENT_CHUNKS: Final = 8
#: Finish reasons of a streamed answer whose text is the whole answer; a tool
#: call (``tool_calls``) or a filtered answer is not assembled from text alone.
WHOLE_FINISHES: Final = frozenset({"stop", "length"})
_ids = itertools.count(1)
_encode: Final = msgspec.json.Encoder().encode
_WORD: Final = re.compile(r"\S+\s*|\s+")


class _Message(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class _Choice(msgspec.Struct):
    message: _Message
    finish_reason: str | None = "stop"


class _Completion(msgspec.Struct):
    choices: list[_Choice] = []
    id: str = ""
    created: int = 0
    model: str = ""
    usage: dict[str, Any] | None = None
    system_fingerprint: str | None = None


_decode_completion: Final = msgspec.json.Decoder(_Completion).decode


class Ended(Protocol):
    """A stream that ended: how, and what it cost (a ``GuardedStream``)."""

    @property
    def finish_reason(self) -> str | None:
        """Return the finish reason the upstream sent."""
        ...

    @property
    def usage(self) -> Usage | None:
        """Return the usage the upstream sent, if any."""
        ...


def assemble(text: str, ended: Ended, model: str, created: float) -> bytes | None:
    """Return a finished stream as one ``chat.completion``, or None if it is not whole.

    ``text`` is everything the client received (across continuations); ``ended``
    is the stream that finished it. Only a text answer that ended on its own
    (``stop``, ``length``) is assembled: tool calls or a refusal are more than text.
    """
    finish_reason = ended.finish_reason
    if finish_reason not in WHOLE_FINISHES or not text:
        return None
    completion: dict[str, Any] = {
        "id": f"chatcmpl-fuseboxkept{next(_ids)}",
        "object": "chat.completion",
        "created": int(created),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
    }
    if ended.usage is not None:
        completion["usage"] = msgspec.to_builtins(ended.usage)
    return _encode(completion)


def _parse(body: bytes) -> tuple[_Completion, _Choice] | None:
    try:
        completion = _decode_completion(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if len(completion.choices) != 1:
        return None
    return completion, completion.choices[0]


def is_replayable(body: bytes) -> bool:
    """Tell whether ``body`` is a one-choice ``chat.completion`` (replayable)."""
    return _parse(body) is not None


def sse_frames(body: bytes, *, include_usage: bool) -> list[bytes]:
    """Return the SSE frames (without ``[DONE]``) that stream the stored ``body``.

    A body that is not a replayable completion yields no frames (callers check
    ``is_replayable`` when they load it).
    """
    parsed = _parse(body)
    if parsed is None:
        return []
    completion, choice = parsed
    base = {
        "id": completion.id or f"chatcmpl-fuseboxkept{next(_ids)}",
        "object": "chat.completion.chunk",
        "created": completion.created,
        "model": completion.model,
        "system_fingerprint": completion.system_fingerprint,
    }

    def frame(delta: dict[str, Any], finish: str | None) -> bytes:
        chunk = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + _encode({**base, "choices": [chunk]}) + b"\n\n"

    frames = [frame({"role": "assistant", "content": ""}, None)]
    frames.extend(frame(delta, None) for delta in _deltas(choice.message))
    frames.append(frame({}, choice.finish_reason or "stop"))
    if include_usage and completion.usage is not None:
        usage = {**base, "choices": [], "usage": completion.usage}
        frames.append(b"data: " + _encode(usage) + b"\n\n")
    return frames


def _deltas(message: _Message) -> list[dict[str, Any]]:
    deltas: list[dict[str, Any]] = [
        {"content": piece} for piece in content_pieces(message.content or "")
    ]
    if message.refusal:
        deltas.append({"refusal": message.refusal})
    if message.tool_calls:
        calls = [{"index": i, **call} for i, call in enumerate(message.tool_calls)]
        deltas.append({"tool_calls": calls})
    return deltas


def content_pieces(text: str, most: int = MAX_CONTENT_CHUNKS) -> list[str]:
    """Split ``text`` at word ends into at most ``most`` pieces that add up to it."""
    words = _WORD.findall(text)
    if not words:
        return []
    size = -(-len(words) // most)
    return ["".join(words[i : i + size]) for i in range(0, len(words), size)]
