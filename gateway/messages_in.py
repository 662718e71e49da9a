"""Anthropic Messages requests translated for OpenAI-compatible deployments.

Outermost layer, beside ``gateway.messages``: an Anthropic client's request
reaches an OpenAI-compatible (or mock) rung as chat completions. Translated:
``system`` (a first system message), user and assistant turns (text, base64 and
URL images, base64 PDF and plain-text documents, ``tool_use`` as
``tool_calls``, ``tool_result`` as ``tool`` messages), ``max_tokens`` (as
``max_completion_tokens``), ``stop_sequences``, ``temperature``, ``top_p``,
``tools``, ``tool_choice`` (and ``disable_parallel_tool_use``),
``metadata.user_id`` (as ``user``) and ``stream``.

Dropped, having no chat-completions counterpart: ``top_k``, ``thinking`` and
thinking blocks in the history, ``cache_control``, ``citations``,
``service_tier``, ``container``, ``context_management``, ``output_config``,
``inference_geo``. Refused with ``InvalidRequestError`` (``param`` set), which
keeps the request on Anthropic rungs: server tools, other block and source
types the translation cannot carry.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from providers.errors import InvalidRequestError

Json = dict[str, Any]
_encode: Final = msgspec.json.Encoder().encode
_TOOL_CHOICES: Final = {"auto": "auto", "any": "required", "none": "none"}
_SKIPPED_BLOCKS: Final = frozenset({"thinking", "redacted_thinking"})
#: Top-level fields copied as they are.
_SAME: Final = ("temperature", "top_p", "stream")


def to_chat_payload(body: Json) -> Json:
    """Return the chat-completions payload for a Messages request.

    Raises:
        InvalidRequestError: Something the translation cannot carry.
    """
    messages = _system(body.get("system"))
    for i, turn in enumerate(body.get("messages") or []):
        messages += _turn(turn, f"messages.{i}")
    payload: Json = {"model": body.get("model"), "messages": messages}
    payload |= {k: body[k] for k in _SAME if body.get(k) is not None}
    if isinstance(body.get("max_tokens"), int):
        payload["max_completion_tokens"] = body["max_tokens"]
    if body.get("stop_sequences"):
        payload["stop"] = body["stop_sequences"]
    _add_tools(body, payload)
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        payload["user"] = metadata["user_id"]
    return payload


def _system(system: object) -> list[Json]:
    if isinstance(system, str):
        return [{"role": "system", "content": system}] if system else []
    if isinstance(system, list):
        texts = [b.get("text", "") for b in system if isinstance(b, dict)]
        return [{"role": "system", "content": "\n".join(texts)}] if texts else []
    return []


def _turn(turn: object, where: str) -> list[Json]:
    if not isinstance(turn, dict):
        raise InvalidRequestError(f"`{where}` must be an object", param=where)
    content = turn.get("content")
    blocks = (
        [{"type": "text", "text": content}] if isinstance(content, str) else content
    )
    if not isinstance(blocks, list):
        raise InvalidRequestError(f"`{where}.content` is invalid", param=where)
    if turn.get("role") == "assistant":
        return _assistant(blocks, where)
    return _user(blocks, where)


def _user(blocks: list[Any], where: str) -> list[Json]:
    """Return tool messages first (they answer the previous turn), then the rest."""
    tools: list[Json] = []
    parts: list[Json] = []
    for i, block in enumerate(blocks):
        at = f"{where}.content.{i}"
        kind = _kind(block, at)
        if kind == "tool_result":
            result, extra = _tool_result(block, at)
            tools.append(result)
            parts += extra
        elif kind not in _SKIPPED_BLOCKS:
            parts.append(_part(block, kind, at))
    user = [{"role": "user", "content": parts}] if parts else []
    return tools + user


def _assistant(blocks: list[Any], where: str) -> list[Json]:
    texts: list[str] = []
    calls: list[Json] = []
    for i, block in enumerate(blocks):
        at = f"{where}.content.{i}"
        kind = _kind(block, at)
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            arguments = _encode(block.get("input") or {}).decode()
            function = {"name": block.get("name"), "arguments": arguments}
            calls.append(
                {"id": block.get("id"), "type": "function", "function": function}
            )
        elif kind not in _SKIPPED_BLOCKS:
            raise _cannot(f"`{kind}` blocks in an assistant turn", at)
    message: Json = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return [message] if texts or calls else []


def _kind(block: object, at: str) -> str:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise InvalidRequestError(f"`{at}` must be a content block", param=at)
    kind: str = block["type"]
    return kind


def _part(block: Json, kind: str, at: str) -> Json:
    if kind == "text":
        return {"type": "text", "text": str(block.get("text", ""))}
    if kind == "image":
        return _image(block.get("source"), at)
    if kind == "document":
        return _document(block, at)
    raise _cannot(f"`{kind}` blocks", at)


def _image(source: object, at: str) -> Json:
    if isinstance(source, dict) and source.get("type") == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
        return {"type": "image_url", "image_url": {"url": url}}
    if isinstance(source, dict) and source.get("type") == "url":
        return {"type": "image_url", "image_url": {"url": source.get("url")}}
    raise _cannot("this image source", f"{at}.source")


def _document(block: Json, at: str) -> Json:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "text" and isinstance(source, dict):
        return {"type": "text", "text": str(source.get("data", ""))}
    if kind == "base64" and isinstance(source, dict):
        media = source.get("media_type", "application/pdf")
        file = {
            "filename": str(block.get("title") or "document.pdf"),
            "file_data": f"data:{media};base64,{source.get('data')}",
        }
        return {"type": "file", "file": file}
    raise _cannot("this document source", f"{at}.source")


def _tool_result(block: Json, at: str) -> tuple[Json, list[Json]]:
    """Return the tool message, and the images it carried (for the user turn)."""
    content = block.get("content")
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
    texts: list[str] = []
    images: list[Json] = []
    for i, part in enumerate(parts if isinstance(parts, list) else []):
        kind = _kind(part, f"{at}.content.{i}")
        if kind == "text":
            texts.append(str(part.get("text", "")))
        else:
            images.append(_part(part, kind, f"{at}.content.{i}"))
    text = "\n".join(texts)
    if block.get("is_error"):
        text = f"Error: {text}"
    message = {
        "role": "tool",
        "tool_call_id": block.get("tool_use_id"),
        "content": text,
    }
    return message, images


def _add_tools(body: Json, payload: Json) -> None:
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        payload["tools"] = [_tool(t, f"tools.{i}") for i, t in enumerate(tools)]
    choice = body.get("tool_choice")
    if not isinstance(choice, dict):
        return
    kind = choice.get("type")
    if kind == "tool":
        payload["tool_choice"] = {
            "type": "function",
            "function": {"name": choice.get("name")},
        }
    elif kind in _TOOL_CHOICES:
        payload["tool_choice"] = _TOOL_CHOICES[kind]
    if choice.get("disable_parallel_tool_use") and "tools" in payload:
        payload["parallel_tool_calls"] = False


def _tool(tool: object, at: str) -> Json:
    if not isinstance(tool, dict) or tool.get("type") not in {None, "custom"}:
        raise _cannot("server tools", at)
    function: Json = {
        "name": tool.get("name"),
        "parameters": tool.get("input_schema") or {"type": "object", "properties": {}},
    }
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _cannot(what: str, at: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"{what} cannot be sent to an OpenAI-compatible deployment (`{at}`)",
        param=at,
        code="untranslatable",
    )
