"""Client-facing wire structs: decode and check a chat request, build static answers.

Structs here are lenient (unknown fields allowed): OpenAI-compatible upstreams
get the client's JSON back with only ``model`` rewritten.
"""

from __future__ import annotations

import itertools
import re
from typing import Annotated, Any, Final, Literal

import msgspec

from policies.clock import SystemClock
from providers.errors import InvalidRequestError

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
_clock = SystemClock()
_ids = itertools.count(1)
_encode: Final = msgspec.json.Encoder().encode
_decode_json: Final = msgspec.json.Decoder(dict[str, Any]).decode
_PATH: Final = re.compile(r" - at `\$\.?(.*)`$")


class Message(msgspec.Struct):
    """One chat message; only ``role`` is checked, the rest is forwarded."""

    role: Role
    content: str | list[Any] | None = None


class StreamOptions(msgspec.Struct):
    """``stream_options``."""

    include_usage: bool | None = None


class ChatBody(msgspec.Struct):
    """The fields of a chat request the gateway itself reads."""

    model: str
    messages: Annotated[list[Message], msgspec.Meta(min_length=1)]
    stream: bool | None = False
    stream_options: StreamOptions | None = None


def decode_chat(body: bytes) -> tuple[dict[str, Any], ChatBody]:
    """Decode and check a chat-completions body.

    Raises:
        InvalidRequestError: with ``param`` naming the offending field.
    """
    try:
        payload = _decode_json(body)
    except msgspec.ValidationError as exc:
        raise InvalidRequestError("the request body must be a JSON object") from exc
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(
            f"the request body is not valid JSON: {exc}", code="invalid_json"
        ) from exc
    try:
        chat = msgspec.convert(payload, ChatBody)
    except msgspec.ValidationError as exc:
        raise _field_error(str(exc)) from exc
    if chat.stream is None:
        chat.stream = False
    return payload, chat


def _field_error(message: str) -> InvalidRequestError:
    match = _PATH.search(message)
    param = match.group(1) if match else None
    text = _PATH.sub("", message)
    if text.startswith("Object missing required field"):
        field = text.rpartition("`")[0].rpartition("`")[2]
        param = f"{param}.{field}" if param else field
        return InvalidRequestError(
            f"missing required parameter: `{param}`",
            param=param,
            code="missing_required_parameter",
        )
    where = f" at `{param}`" if param else ""
    return InvalidRequestError(f"invalid parameter{where}: {text}", param=param)


def _completion_id() -> str:
    return f"chatcmpl-fusebox{next(_ids)}"


def static_completion(alias: str, text: str) -> bytes:
    """Return a whole ``chat.completion`` answering ``text`` as the alias."""
    return _encode(
        {
            "id": _completion_id(),
            "object": "chat.completion",
            "created": int(_clock.wall()),
            "model": alias,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }
    )


def static_stream(alias: str, text: str) -> list[bytes]:
    """Return the SSE frames (without ``[DONE]``) of ``text`` as one streamed answer."""
    base = {
        "id": _completion_id(),
        "object": "chat.completion.chunk",
        "created": int(_clock.wall()),
        "model": alias,
    }

    def frame(delta: dict[str, Any], finish: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + _encode({**base, "choices": [choice]}) + b"\n\n"

    return [
        frame({"role": "assistant", "content": ""}, None),
        frame({"content": text}, None),
        frame({}, "stop"),
    ]
