"""Stored Messages answers: a streamed one assembled, a stored one replayed.

Beside the onion, the ``/v1/messages`` twin of ``gateway.replay``: the fresh
cache, the ``@cache`` rung and idempotent replays keep a Messages answer as an
Anthropic ``message`` (JSON bytes), and send it back as it is or as the events
of one streamed message (``message_start``, per block ``content_block_start``,
``content_block_delta``*, ``content_block_stop``, then ``message_delta`` and
``message_stop``).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Final

import msgspec

from gateway.messages_out import STOP_REASONS, event, message_usage
from gateway.replay import WHOLE_FINISHES, content_pieces

if TYPE_CHECKING:
    from gateway.replay import Ended

Json = dict[str, Any]
_encode: Final = msgspec.json.Encoder().encode
_decode_json: Final = msgspec.json.Decoder(dict[str, Any]).decode
_ids = itertools.count(1)
#: Blocks whose ``input`` streams as ``input_json_delta``.
_TOOL_BLOCKS: Final = frozenset({"tool_use", "server_tool_use", "mcp_tool_use"})


def assemble(text: str, ended: Ended, model: str) -> bytes | None:
    """Return a finished text stream as one ``message``, or None if it is not whole.

    ``text`` is everything the client received (across continuations); ``ended``
    is the stream that finished it, with an OpenAI finish reason (``stop`` or
    ``length``: anything else is more than text).
    """
    finish_reason = ended.finish_reason
    if finish_reason not in WHOLE_FINISHES or not text:
        return None
    message = {
        "id": f"msg_fuseboxkept{next(_ids)}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": STOP_REASONS[finish_reason],
        "stop_sequence": None,
        "usage": message_usage(ended.usage),
    }
    return _encode(message)


def _parse(body: bytes) -> Json | None:
    try:
        message = _decode_json(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    content = message.get("content")
    if message.get("type") != "message" or not isinstance(content, list):
        return None
    if not all(isinstance(block, dict) and block.get("type") for block in content):
        return None
    return message


def is_replayable(body: bytes) -> bool:
    """Tell whether ``body`` is a Messages ``message`` (replayable)."""
    return _parse(body) is not None


def events(body: bytes) -> list[bytes]:
    """Return the SSE events that stream the stored ``message`` in ``body``.

    A body that is not a replayable message yields no events (callers check
    ``is_replayable`` when they load it).
    """
    message = _parse(body)
    if message is None:
        return []
    usage = message.get("usage") or message_usage(None)
    start = {
        **message,
        "id": message.get("id") or f"msg_fuseboxkept{next(_ids)}",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }
    out = [event("message_start", {"message": start})]
    for index, block in enumerate(message["content"]):
        out += _block(index, block)
    end = {
        "stop_reason": message.get("stop_reason") or "end_turn",
        "stop_sequence": message.get("stop_sequence"),
    }
    final_usage = {"output_tokens": int(usage.get("output_tokens") or 0)}
    out.append(event("message_delta", {"delta": end, "usage": final_usage}))
    out.append(event("message_stop", {}))
    return out


def _block(index: int, block: Json) -> list[bytes]:
    """Return one content block as its start, its deltas and its stop."""
    kind = block["type"]
    deltas: list[Json] = []
    head = block
    if kind == "text" and set(block) == {"type", "text"}:
        head = {"type": "text", "text": ""}
        deltas = [
            {"type": "text_delta", "text": piece}
            for piece in content_pieces(str(block["text"]))
        ]
    elif kind == "thinking":
        head = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [{"type": "thinking_delta", "thinking": block.get("thinking", "")}]
        if block.get("signature"):
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
    elif kind in _TOOL_BLOCKS and isinstance(block.get("input"), dict):
        head = {**block, "input": {}}
        partial = _encode(block["input"]).decode()
        deltas = [{"type": "input_json_delta", "partial_json": partial}]
    # Any other block (citations, results, redacted thinking) starts whole.
    return [
        event("content_block_start", {"index": index, "content_block": head}),
        *(event("content_block_delta", {"index": index, "delta": d}) for d in deltas),
        event("content_block_stop", {"index": index}),
    ]
