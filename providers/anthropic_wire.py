"""Pure translation between OpenAI chat completions and the Anthropic Messages API.

The innermost layer's language skills for ``kind = "anthropic"`` providers, with no
I/O: ``providers.anthropic`` sends what ``to_messages_request`` builds, turns the
answer into OpenAI JSON with ``to_chat_response`` or streams it through a
``StreamTranslator``, and maps every failure with ``map_error``.

Request fields sent upstream: system/developer messages (top-level ``system``),
user/assistant/tool messages (consecutive same-role turns merged), text, image
(data URL or http(s) URL) and file (base64 PDF) parts, ``tool_calls``,
``max_completion_tokens``/``max_tokens``, ``stop``, ``temperature`` (clamped to
[0, 1]), ``top_p``, ``tools``, ``tool_choice``, ``parallel_tool_calls``,
``response_format`` of type ``json_schema`` (as ``output_config.format``),
``user``/``safety_identifier`` (as ``metadata.user_id``) and ``stream``.

Dropped silently, having no Anthropic counterpart: ``frequency_penalty``,
``presence_penalty``, ``logit_bias``, ``logprobs``, ``top_logprobs``, ``seed``,
``n`` when 1, ``response_format`` of type ``text`` or ``json_object``,
``reasoning_effort``, ``verbosity``, ``service_tier``, ``store``, ``metadata``,
``modalities``, ``audio``, ``prediction``, ``web_search_options``,
``prompt_cache_key``, ``stream_options`` (Anthropic always reports usage), the
deprecated ``functions``/``function_call``, a message's ``name``, an image's
``detail``, assistant ``refusal`` parts, a tool's ``strict``, ``top_p`` when
``temperature`` is also set (current Claude models accept only one), whitespace-only
``stop`` entries and text blocks, and a ``user`` that looks like an e-mail address
or a phone number (Anthropic wants an opaque id).

Rejected with ``UpstreamBadRequestError`` (``param`` set): ``n`` > 1, audio parts,
``file_id`` references, non-function tools, ``allowed_tools``/custom
``tool_choice``, ``function``-role and unknown-role messages, malformed messages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final, NamedTuple

import msgspec

from providers._http import redact
from providers.errors import (
    UpstreamAuthError,
    UpstreamBadRequestError,
    UpstreamContextLengthError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRateLimitError,
    UpstreamUnavailableError,
)
from providers.retry_after import parse_retry_after
from providers.types import ChatRequest, ChatResponse, Usage

if TYPE_CHECKING:
    from providers.sse import SSEEvent

# --------------------------------------------------------------------------- request

_encode = msgspec.json.Encoder().encode
_decode_any = msgspec.json.Decoder().decode
_MAX_USER_ID: Final = 256
_PHONE_DIGITS: Final = 7
_PHONE_CHARS: Final = frozenset("0123456789+-(). ")
_TOOL_CHOICES: Final[Mapping[str, str]] = {
    "auto": "auto",
    "required": "any",
    "none": "none",
}


class MessagesRequest(NamedTuple):
    """A Messages API body and what the answer's start must not repeat."""

    body: dict[str, Any]
    #: Whitespace stripped from the end of the final assistant turn (Anthropic
    #: rejects it); the continuation's matching leading whitespace is dropped so
    #: the client, who already has it, never sees it twice.
    join_ws: str


class _InvalidError(Exception):
    """A client field that Anthropic cannot take; becomes UpstreamBadRequestError."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def to_messages_request(
    request: ChatRequest,
    *,
    max_tokens_default: int,
    deployment: str,
    stream: bool,
    sampling: bool = True,
) -> MessagesRequest:
    """Translate one chat-completions attempt into a Messages API body.

    Args:
        request: The attempt; ``request.model`` is the upstream model id.
        max_tokens_default: ``max_tokens`` when the client set none.
        deployment: ``provider/model``, named on errors.
        stream: Ask for an SSE stream.
        sampling: Send ``temperature``/``top_p`` (off for models that refuse them).

    Returns:
        The body and the whitespace the answer must not repeat.

    Raises:
        UpstreamBadRequestError: A field Anthropic cannot serve (``param`` names it).
    """
    payload = request.payload
    try:
        _check_unsupported(payload)
        system, messages = _convert_messages(payload.get("messages"))
        if request.prefill:
            _add_prefill(messages, request.prefill)
        join_ws = _strip_final_assistant(messages)
        body: dict[str, Any] = {
            "model": request.model,
            "max_tokens": _max_tokens(payload, max_tokens_default),
            "messages": messages,
        }
        if system:
            body["system"] = system
        if sampling:
            _add_sampling(payload, body)
        _add_stop(payload, body)
        _add_tools(payload, body)
        _add_output_format(payload, body)
        _add_metadata(payload, body)
    except _InvalidError as exc:
        raise UpstreamBadRequestError(
            f"upstream {deployment} cannot serve this request: {exc}",
            deployment=deployment,
            upstream_type="invalid_request_error",
            param=exc.param,
        ) from exc
    if stream:
        body["stream"] = True
    return MessagesRequest(body, join_ws)


def _check_unsupported(payload: Mapping[str, Any]) -> None:
    n = payload.get("n")
    if isinstance(n, int) and n > 1:
        raise _InvalidError("Anthropic returns one choice; n > 1 is not supported", "n")


def _convert_messages(
    raw: object,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if not isinstance(raw, list):
        raise _InvalidError("messages must be a list", "messages")
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _InvalidError("a message must be an object", where)
        role = message.get("role")
        if role in {"system", "developer"}:
            system.extend(_system_blocks(message.get("content"), where))
        elif role == "user":
            _append(turns, "user", _user_blocks(message.get("content"), where))
        elif role == "assistant":
            _append(turns, "assistant", _assistant_blocks(message, where))
        elif role == "tool":
            _append(turns, "user", [_tool_result(message, where)])
        else:
            raise _InvalidError(f"role {role!r} is not supported", f"{where}.role")
    return system, turns


def _append(
    turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]
) -> None:
    """Add blocks as a turn, merged into the previous turn of the same role."""
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": blocks})


def _parts(content: object, where: str) -> list[Any]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return content
    raise _InvalidError(
        "content must be a string or a list of parts", f"{where}.content"
    )


def _text_block(part: Mapping[str, Any], where: str) -> dict[str, Any] | None:
    text = part.get("text")
    if not isinstance(text, str):
        raise _InvalidError("a text part needs a string `text`", where)
    if not text.strip():
        return None
    block: dict[str, Any] = {"type": "text", "text": text}
    if part.get("cache_control"):
        block["cache_control"] = part["cache_control"]
    return block


def _system_blocks(content: object, where: str) -> list[dict[str, Any]]:
    blocks = []
    for j, part in enumerate(_parts(content, where)):
        at = f"{where}.content[{j}]"
        if not isinstance(part, dict) or part.get("type") != "text":
            raise _InvalidError("system messages take text parts only", at)
        block = _text_block(part, at)
        if block is not None:
            blocks.append(block)
    return blocks


def _user_blocks(content: object, where: str) -> list[dict[str, Any]]:
    blocks = []
    for j, part in enumerate(_parts(content, where)):
        block = _part_block(part, f"{where}.content[{j}]")
        if block is not None:
            blocks.append(block)
    return blocks


def _part_block(part: object, where: str) -> dict[str, Any] | None:
    if not isinstance(part, dict):
        raise _InvalidError("a content part must be an object", where)
    kind = part.get("type")
    if kind == "text":
        return _text_block(part, where)
    if kind == "image_url":
        return _image_block(part.get("image_url"), f"{where}.image_url")
    if kind == "file":
        return _file_block(part.get("file"), f"{where}.file")
    raise _InvalidError(
        f"content parts of type {kind!r} are not supported", f"{where}.type"
    )


def _data_url(url: str, where: str) -> tuple[str, str]:
    """Split ``data:<mime>;base64,<data>`` into its media type and data."""
    header, comma, data = url.removeprefix("data:").partition(",")
    media = header.split(";", 1)[0]
    if not comma or not header.endswith(";base64") or not media or not data:
        raise _InvalidError("expected a base64 data URL", where)
    return media, data


def _image_block(image: object, where: str) -> dict[str, Any]:
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise _InvalidError("an image part needs a `url`", where)
    if url.startswith("data:"):
        media, data = _data_url(url, where)
        source = {"type": "base64", "media_type": media, "data": data}
    elif url.startswith(("https://", "http://")):
        source = {"type": "url", "url": url}
    else:
        raise _InvalidError("image URLs must be data: or http(s): URLs", where)
    return {"type": "image", "source": source}


def _file_block(file: object, where: str) -> dict[str, Any]:
    data = file.get("file_data") if isinstance(file, dict) else None
    if not isinstance(data, str) or not data:
        raise _InvalidError("only inline `file_data` is supported, not file ids", where)
    if data.startswith("data:"):
        media, data = _data_url(data, where)
    else:
        media = "application/pdf"
    source = {"type": "base64", "media_type": media, "data": data}
    return {"type": "document", "source": source}


def _assistant_blocks(message: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    blocks = []
    for j, part in enumerate(_parts(message.get("content"), where)):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            block = _text_block(part, at)
            if block is not None:
                blocks.append(block)
        elif kind != "refusal":
            raise _InvalidError("assistant messages take text parts only", at)
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise _InvalidError("tool_calls must be a list", f"{where}.tool_calls")
    blocks.extend(
        _tool_use(call, f"{where}.tool_calls[{j}]") for j, call in enumerate(calls)
    )
    return blocks


def _tool_use(call: object, where: str) -> dict[str, Any]:
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        raise _InvalidError("a tool call needs a `function`", where)
    function = call["function"]
    name = function.get("name")
    ident = call.get("id")
    if not isinstance(name, str) or not isinstance(ident, str) or not name or not ident:
        raise _InvalidError("a tool call needs an `id` and a `function.name`", where)
    return {
        "type": "tool_use",
        "id": ident,
        "name": name,
        "input": _parse_arguments(function.get("arguments")),
    }


def _parse_arguments(arguments: object) -> dict[str, Any]:
    """Return the call's arguments as an object; invalid JSON becomes ``{}``."""
    if isinstance(arguments, dict):
        return arguments
    if isinstance(arguments, str) and arguments:
        try:
            parsed = _decode_any(arguments)
        except msgspec.DecodeError:
            return {}
        if isinstance(parsed, dict):
            return parsed
    return {}


def _tool_result(message: Mapping[str, Any], where: str) -> dict[str, Any]:
    ident = message.get("tool_call_id")
    if not isinstance(ident, str) or not ident:
        raise _InvalidError(
            "a tool message needs a `tool_call_id`", f"{where}.tool_call_id"
        )
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": ident}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    else:
        parts = _user_blocks(content, where)
        if parts:
            block["content"] = parts
    return block


def _add_prefill(turns: list[dict[str, Any]], prefill: str) -> None:
    """Continue the final assistant text, or start a final assistant turn."""
    last = turns[-1] if turns else None
    if last is not None and last["role"] == "assistant":
        block = last["content"][-1]
        if block["type"] == "text":
            block["text"] += prefill
            return
    _append(turns, "assistant", [{"type": "text", "text": prefill}])


def _strip_final_assistant(turns: list[dict[str, Any]]) -> str:
    """Strip trailing whitespace off a final assistant turn; return what was cut."""
    cut = ""
    while turns and turns[-1]["role"] == "assistant":
        blocks = turns[-1]["content"]
        block = blocks[-1]
        if block["type"] != "text":
            break
        text: str = block["text"]
        kept = text.rstrip()
        cut = text[len(kept) :] + cut
        if kept:
            block["text"] = kept
            break
        blocks.pop()
        if not blocks:
            turns.pop()
    return cut


def _max_tokens(payload: Mapping[str, Any], default: int) -> int:
    value = payload.get("max_completion_tokens")
    if value is None:
        value = payload.get("max_tokens")
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return default


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _add_sampling(payload: Mapping[str, Any], body: dict[str, Any]) -> None:
    temperature = _number(payload.get("temperature"))
    top_p = _number(payload.get("top_p"))
    if temperature is not None:
        # OpenAI allows up to 2; Anthropic's range is [0, 1].
        body["temperature"] = min(max(temperature, 0.0), 1.0)
    elif top_p is not None:
        body["top_p"] = top_p


def _add_stop(payload: Mapping[str, Any], body: dict[str, Any]) -> None:
    stop = payload.get("stop")
    candidates = [stop] if isinstance(stop, str) else stop
    if not isinstance(candidates, list):
        return
    sequences = [s for s in candidates if isinstance(s, str) and s.strip()]
    if sequences:
        body["stop_sequences"] = sequences


def _add_tools(payload: Mapping[str, Any], body: dict[str, Any]) -> None:
    tools = payload.get("tools")
    if not tools:
        return
    if not isinstance(tools, list):
        raise _InvalidError("tools must be a list", "tools")
    body["tools"] = [_tool(tool, f"tools[{i}]") for i, tool in enumerate(tools)]
    choice = _tool_choice(payload.get("tool_choice"))
    if payload.get("parallel_tool_calls") is False:
        choice = choice or {"type": "auto"}
        if choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
    if choice is not None:
        body["tool_choice"] = choice


def _tool(tool: object, where: str) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type", "function") != "function":
        raise _InvalidError("only function tools are supported", f"{where}.type")
    function = tool.get("function")
    if not isinstance(function, dict):
        raise _InvalidError("a function tool needs a `function`", f"{where}.function")
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise _InvalidError("a tool needs a `function.name`", f"{where}.function.name")
    schema = function.get("parameters") or {"type": "object", "properties": {}}
    out: dict[str, Any] = {"name": name, "input_schema": schema}
    if function.get("description"):
        out["description"] = function["description"]
    if tool.get("cache_control"):
        out["cache_control"] = tool["cache_control"]
    return out


def _tool_choice(choice: object) -> dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, str) and choice in _TOOL_CHOICES:
        return {"type": _TOOL_CHOICES[choice]}
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str) and name:
            return {"type": "tool", "name": name}
    raise _InvalidError("this tool_choice is not supported", "tool_choice")


def _add_output_format(payload: Mapping[str, Any], body: dict[str, Any]) -> None:
    fmt = payload.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return
    spec = fmt.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise _InvalidError("json_schema needs a `schema`", "response_format")
    body["output_config"] = {"format": {"type": "json_schema", "schema": schema}}


def _looks_personal(user: str) -> bool:
    """Tell whether ``user`` looks like an e-mail address or a phone number."""
    if "@" in user:
        return True
    digits = sum(ch.isdigit() for ch in user)
    return digits >= _PHONE_DIGITS and all(ch in _PHONE_CHARS for ch in user)


def _add_metadata(payload: Mapping[str, Any], body: dict[str, Any]) -> None:
    user = payload.get("user") or payload.get("safety_identifier")
    if (
        isinstance(user, str)
        and 0 < len(user) <= _MAX_USER_ID
        and not _looks_personal(user)
    ):
        body["metadata"] = {"user_id": user}


def swallow_ws(pending: str, text: str) -> tuple[str, str]:
    """Drop the start of ``text`` that repeats the whitespace ``pending``.

    Returns:
        The whitespace still pending (``""`` once other text arrived) and what is
        left of ``text`` to deliver.
    """
    limit = min(len(pending), len(text))
    i = 0
    while i < limit and text[i] == pending[i]:
        i += 1
    if i < len(text):
        return "", text[i:]
    return pending[i:], ""


# -------------------------------------------------------------------------- response


class _AnthropicUsage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class _Block(msgspec.Struct, gc=False):
    type: str
    text: str = ""
    id: str = ""
    name: str = ""
    input: msgspec.Raw = msgspec.Raw()


class _Message(msgspec.Struct):
    id: str
    model: str
    content: list[_Block]
    type: str = "message"
    stop_reason: str | None = None
    usage: _AnthropicUsage = msgspec.field(default_factory=_AnthropicUsage)


class _WireFunction(msgspec.Struct):
    name: str
    arguments: str


class _WireToolCall(msgspec.Struct, kw_only=True):
    id: str
    type: str = "function"
    function: _WireFunction


class _WireMessage(msgspec.Struct, kw_only=True):
    role: str = "assistant"
    content: str | None
    refusal: None = None
    tool_calls: list[_WireToolCall] | msgspec.UnsetType = msgspec.UNSET


class _WireChoice(msgspec.Struct, kw_only=True):
    index: int = 0
    message: _WireMessage
    finish_reason: str
    logprobs: None = None


class _WireUsage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: dict[str, int]


class _WireCompletion(msgspec.Struct, kw_only=True):
    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[_WireChoice]
    usage: _WireUsage


_decode_message = msgspec.json.Decoder(_Message).decode

#: Anthropic ``stop_reason`` -> OpenAI ``finish_reason`` (anything else: "stop").
FINISH_REASONS: Final[Mapping[str, str]] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "model_context_window_exceeded": "length",
}


def _usage(raw: _AnthropicUsage) -> Usage:
    """Convert usage: cache writes and reads are part of the prompt (DESIGN §7)."""
    cached = raw.cache_read_input_tokens or 0
    prompt = (raw.input_tokens or 0) + (raw.cache_creation_input_tokens or 0) + cached
    completion = raw.output_tokens or 0
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details={"cached_tokens": cached},
    )


def _wire_usage(usage: Usage) -> _WireUsage:
    return _WireUsage(
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.total_tokens,
        usage.prompt_tokens_details or {"cached_tokens": 0},
    )


def _arguments(raw: msgspec.Raw) -> str:
    """Return a tool input as the JSON string OpenAI puts in ``arguments``."""
    text = bytes(raw).decode()
    return text if text and text != "null" else "{}"


def to_chat_response(
    body: bytes, *, created: int, join_ws: str, deployment: str
) -> ChatResponse:
    """Translate a Messages API answer into an OpenAI ``chat.completion``.

    Raises:
        UpstreamProtocolError: ``body`` is not a Messages API answer.
    """
    try:
        message = _decode_message(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise UpstreamProtocolError(
            f"upstream {deployment} sent a body that is not a Messages answer",
            deployment=deployment,
        ) from exc
    if message.type != "message":
        raise UpstreamProtocolError(
            f"upstream {deployment} sent a {message.type!r} object, not a message",
            deployment=deployment,
        )
    texts = [block.text for block in message.content if block.type == "text"]
    calls = [
        _WireToolCall(
            id=block.id,
            function=_WireFunction(block.name, _arguments(block.input)),
        )
        for block in message.content
        if block.type == "tool_use"
    ]
    text = "".join(texts)
    if join_ws:
        text = swallow_ws(join_ws, text)[1]
    usage = _usage(message.usage)
    choice = _WireChoice(
        message=_WireMessage(content=text or None, tool_calls=calls or msgspec.UNSET),
        finish_reason=FINISH_REASONS.get(message.stop_reason or "", "stop"),
    )
    completion = _WireCompletion(
        id="chatcmpl-" + message.id,
        created=created,
        model=message.model,
        choices=[choice],
        usage=_wire_usage(usage),
    )
    return ChatResponse(body=_encode(completion), model=message.model, usage=usage)


# ------------------------------------------------------------------------- streaming


class StreamEventError(Exception):
    """The upstream stream failed: an error event, a malformed event or its end."""

    def __init__(
        self,
        what: str,
        *,
        upstream_type: str | None = None,
        detail: str = "",
        protocol: bool = False,
    ) -> None:
        """Describe the failure (``what`` completes "upstream X ...")."""
        super().__init__(what)
        self.what = what
        self.upstream_type = upstream_type
        self.detail = detail
        self.protocol = protocol


class _StartMessage(msgspec.Struct, gc=False):
    id: str = ""
    model: str = ""
    usage: _AnthropicUsage | None = None


class _Delta(msgspec.Struct, gc=False):
    type: str = ""
    text: str = ""
    partial_json: str = ""
    stop_reason: str | None = None


class _ErrorBody(msgspec.Struct, gc=False):
    type: str | None = None
    message: str | None = None


class _Event(msgspec.Struct, gc=False):
    type: str = ""
    index: int = 0
    message: _StartMessage | None = None
    content_block: _Block | None = None
    delta: _Delta | None = None
    usage: _AnthropicUsage | None = None
    error: _ErrorBody | None = None


class _ChunkHead(msgspec.Struct, kw_only=True):
    id: str
    object: str = "chat.completion.chunk"
    created: int
    model: str


class _ToolBlock:
    """A streamed ``tool_use`` block: its OpenAI index and whether args arrived."""

    __slots__ = ("has_args", "index", "input")

    def __init__(self, index: int, raw_input: msgspec.Raw) -> None:
        self.index = index
        self.input = raw_input
        self.has_args = False


_decode_event = msgspec.json.Decoder(_Event).decode
_NOTHING: Final[list[bytes]] = []
_ROLE_DELTA: Final = b'{"role":"assistant","content":""}'
_CONTENT_OPEN: Final = b'{"content":'
_OPEN_CHOICES: Final = b',"choices":[{"index":0,"delta":'
_OPEN_FINISH: Final = b',"logprobs":null,"finish_reason":'
_STARTERS: Final = frozenset({"message_start", "error"})

_Handler = Callable[["StreamTranslator", _Event], list[bytes]]


class StreamTranslator:
    r"""Turn Anthropic stream events, one at a time, into OpenAI chunk frames.

    Every frame is ``data: {chat.completion.chunk}\n\n``; all share one id,
    ``created`` and model. Tool calls are numbered over tool blocks only, from
    0. The finish chunk (and the usage chunk, when asked for) comes at
    ``message_stop``; ``[DONE]`` is never produced.
    """

    def __init__(
        self, *, model: str, created: int, include_usage: bool, join_ws: str = ""
    ) -> None:
        """Start a translation; ``model`` stands until ``message_start`` names one."""
        self.model = model
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        #: Content (text, a tool call or the end) has been translated.
        self.has_content = False
        #: ``message_stop`` arrived: the answer is whole.
        self.is_done = False
        self._created = created
        self._include_usage = include_usage
        self._join_ws = join_ws
        self._parts: list[str] = []
        self._started = False
        self._head = b""
        self._prefix = b""
        self._end = b"}\n\n"
        self._suffix = b""
        self._content_prefix = b""
        self._content_suffix = b""
        self._stop_reason: str | None = None
        self._tools: dict[int, _ToolBlock] = {}
        self._tool_count = 0
        self._raw_usage = _AnthropicUsage()

    @property
    def text(self) -> str:
        """Return the content text translated so far."""
        if len(self._parts) > 1:
            self._parts[:] = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    @text.setter
    def text(self, value: str) -> None:
        self._parts = [value] if value else []

    def translate(self, event: SSEEvent) -> list[bytes]:
        """Return the client frames for one upstream event.

        Raises:
            StreamEventError: An error event, a malformed event, or events out of order.
        """
        if self.is_done or event.event == "ping":
            return _NOTHING
        try:
            decoded = _decode_event(event.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise StreamEventError("sent a malformed event", protocol=True) from exc
        kind = decoded.type or event.event
        handler = self._HANDLERS.get(kind)
        if handler is None:
            return _NOTHING  # new event types may appear; Anthropic says to ignore them
        if not self._started and kind not in _STARTERS:
            raise StreamEventError(f"sent {kind} before message_start", protocol=True)
        return handler(self, decoded)

    def _frame(self, delta: bytes) -> bytes:
        return self._prefix + delta + self._suffix

    def _text(self, text: str) -> list[bytes]:
        if self._join_ws:
            self._join_ws, text = swallow_ws(self._join_ws, text)
        if not text:
            return _NOTHING
        self._parts.append(text)
        self.has_content = True
        return [self._content_prefix + _encode(text) + self._content_suffix]

    def _args_frame(self, index: int, fragment: str) -> bytes:
        delta = b'{"tool_calls":[{"index":%d,"function":{"arguments":%b}}]}' % (
            index,
            _encode(fragment),
        )
        return self._frame(delta)

    def _on_message_start(self, event: _Event) -> list[bytes]:
        if self._started:
            return _NOTHING
        self._started = True
        message = event.message or _StartMessage()
        self.model = message.model or self.model
        head = _ChunkHead(
            id="chatcmpl-" + (message.id or str(self._created)),
            created=self._created,
            model=self.model,
        )
        self._head = b"data: " + _encode(head)[:-1]
        self._prefix = self._head + _OPEN_CHOICES
        if self._include_usage:
            self._end = b',"usage":null}\n\n'
        self._suffix = _OPEN_FINISH + b"null}]" + self._end
        self._content_prefix = self._prefix + _CONTENT_OPEN
        self._content_suffix = b"}" + self._suffix
        if message.usage is not None:
            self._merge_usage(message.usage)
        return [self._frame(_ROLE_DELTA)]

    def _on_block_start(self, event: _Event) -> list[bytes]:
        block = event.content_block
        if block is None:
            return _NOTHING
        if block.type == "text":
            return self._text(block.text)
        if block.type != "tool_use":
            return _NOTHING  # thinking and server-tool blocks have no OpenAI form
        tool = _ToolBlock(self._tool_count, block.input)
        self._tool_count += 1
        self._tools[event.index] = tool
        self._join_ws = ""
        self.has_content = True
        call = {
            "index": tool.index,
            "id": block.id,
            "type": "function",
            "function": {"name": block.name, "arguments": ""},
        }
        return [self._frame(_encode({"tool_calls": [call]}))]

    def _on_block_delta(self, event: _Event) -> list[bytes]:
        delta = event.delta
        if delta is None:
            return _NOTHING
        if delta.type == "text_delta":
            return self._text(delta.text)
        if delta.type == "input_json_delta" and delta.partial_json:
            tool = self._tools.get(event.index)
            if tool is not None:
                tool.has_args = True
                return [self._args_frame(tool.index, delta.partial_json)]
        return _NOTHING

    def _on_block_stop(self, event: _Event) -> list[bytes]:
        tool = self._tools.pop(event.index, None)
        if tool is None or tool.has_args:
            return _NOTHING
        return [self._args_frame(tool.index, _arguments(tool.input))]

    def _on_message_delta(self, event: _Event) -> list[bytes]:
        if event.delta is not None and event.delta.stop_reason is not None:
            self._stop_reason = event.delta.stop_reason
        if event.usage is not None:
            self._merge_usage(event.usage)
        return _NOTHING

    def _on_message_stop(self, _event: _Event) -> list[bytes]:
        self.is_done = True
        self.has_content = True
        self._join_ws = ""
        reason = FINISH_REASONS.get(self._stop_reason or "", "stop")
        self.finish_reason = reason
        frames = [
            self._prefix + b"{}" + _OPEN_FINISH + _encode(reason) + b"}]" + self._end
        ]
        if self._include_usage:
            usage = _wire_usage(self.usage or _usage(self._raw_usage))
            frames.append(
                self._head + b',"choices":[],"usage":' + _encode(usage) + b"}\n\n"
            )
        return frames

    def _on_error(self, event: _Event) -> list[bytes]:
        error = event.error or _ErrorBody()
        kind = error.type or "api_error"
        detail = error.message or ""
        raise StreamEventError(
            f"sent an error event ({kind}): {detail}",
            upstream_type=kind,
            detail=detail,
        )

    def _merge_usage(self, update: _AnthropicUsage) -> None:
        """Fold in counts; ``message_delta`` counts are cumulative, so they replace."""
        raw = self._raw_usage
        for field in _USAGE_FIELDS:
            value = getattr(update, field)
            if value is not None:
                setattr(raw, field, value)
        self.usage = _usage(raw)

    _HANDLERS: ClassVar[Mapping[str, _Handler]] = {
        "content_block_delta": _on_block_delta,
        "content_block_start": _on_block_start,
        "content_block_stop": _on_block_stop,
        "message_start": _on_message_start,
        "message_delta": _on_message_delta,
        "message_stop": _on_message_stop,
        "error": _on_error,
    }


_USAGE_FIELDS: Final = _AnthropicUsage.__struct_fields__


# ---------------------------------------------------------------------------- errors


class _ErrorEnvelope(msgspec.Struct):
    error: _ErrorBody | None = None


_decode_error = msgspec.json.Decoder(_ErrorEnvelope).decode

#: The HTTP status Anthropic uses for each error type (for in-stream errors).
ERROR_TYPE_STATUS: Final[Mapping[str, int]] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "conflict_error": 409,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
_CONTEXT_HINTS: Final = (
    "prompt is too long",
    "context window",
    "context length",
    "context limit",
)
_SAMPLING_NAMES: Final = ("temperature", "top_p")
_SAMPLING_VERDICTS: Final = ("deprecated", "not supported", "cannot both", "only one")
_HTTP_PAYMENT_REQUIRED: Final = 402
_HTTP_NOT_FOUND: Final = 404
_HTTP_RATE_LIMITED: Final = 429
_HTTP_SERVER_ERROR: Final = 500
_RETRYABLE_4XX: Final = frozenset({408, 409})
_AUTH_STATUSES: Final = frozenset({401, _HTTP_PAYMENT_REQUIRED, 403, _HTTP_NOT_FOUND})
_CLIENT_STATUSES: Final = frozenset({400, 413, 422})


def map_status_error(
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    deployment: str,
    secret: str | None,
    now_wall: float,
) -> UpstreamError:
    """Decode an Anthropic error answer and map it with ``map_error``."""
    try:
        error = _decode_error(body).error or _ErrorBody()
    except (msgspec.DecodeError, msgspec.ValidationError):
        error = _ErrorBody()  # not JSON (a proxy's HTML page): judged by status alone
    return map_error(
        status,
        error.type,
        error.message or "",
        headers,
        deployment=deployment,
        secret=secret,
        now_wall=now_wall,
    )


def map_error(
    status: int,
    error_type: str | None,
    message: str,
    headers: Mapping[str, str],
    *,
    deployment: str,
    secret: str | None,
    now_wall: float,
) -> UpstreamError:
    """Map an Anthropic failure into the taxonomy: the one place statuses become errors.

    401, 402, 403, 404 and billing errors: ``UpstreamAuthError``; 429:
    ``UpstreamRateLimitError``; 5xx (529 included), 408, 409:
    ``UpstreamUnavailableError``; 400, 413, 422: ``UpstreamContextLengthError``
    when the prompt does not fit, else ``UpstreamBadRequestError``; anything
    else: ``UpstreamProtocolError``.

    Args:
        status: The HTTP status (for an in-stream error event, its type's status).
        error_type: Anthropic's ``error.type``, kept as ``upstream_code``.
        message: Anthropic's message; redacted, and never shown for 401/403.
        headers: Response headers, for ``retry-after``.
        deployment: ``provider/model``.
        secret: The API key, removed from any text.
        now_wall: Unix time, for HTTP-date ``retry-after`` values.
    """
    text = redact(message, secret) or f"HTTP {status}"
    where = f"upstream {deployment}"
    if status == _HTTP_RATE_LIMITED:
        return UpstreamRateLimitError(
            f"{where} is rate limited: {text}",
            deployment=deployment,
            status=status,
            upstream_code=error_type,
            retry_after_s=parse_retry_after(headers, now_wall),
        )
    if status in _AUTH_STATUSES or error_type == "billing_error":
        return UpstreamAuthError(
            _auth_message(where, status, error_type, text),
            deployment=deployment,
            status=status,
            upstream_code=error_type,
        )
    if status >= _HTTP_SERVER_ERROR or status in _RETRYABLE_4XX:
        return UpstreamUnavailableError(
            f"{where} failed with {status} ({error_type or 'no error type'}): {text}",
            deployment=deployment,
            status=status,
            upstream_code=error_type,
        )
    if status in _CLIENT_STATUSES:
        return _client_error(status, error_type, text, deployment)
    return UpstreamProtocolError(
        f"{where} answered with unexpected status {status}",
        deployment=deployment,
        status=status,
        upstream_code=error_type,
    )


def _auth_message(where: str, status: int, error_type: str | None, text: str) -> str:
    if status == _HTTP_NOT_FOUND:  # Anthropic's text names the model, no secret
        return f"{where} does not know this model or path (404): {text}"
    if status == _HTTP_PAYMENT_REQUIRED or error_type == "billing_error":
        return f"{where} refused the request for billing reasons ({status})"
    kind = f" {error_type}" if error_type else ""
    return f"{where} rejected the gateway's credentials ({status}{kind})"


def _client_error(
    status: int, error_type: str | None, text: str, deployment: str
) -> UpstreamError:
    lowered = text.lower()
    if any(hint in lowered for hint in _CONTEXT_HINTS):
        return UpstreamContextLengthError(
            f"upstream {deployment}: {text}",
            deployment=deployment,
            status=status,
            upstream_code=error_type,
        )
    # Anthropic prefixes the offending field: "messages.1.content: ...".
    head, colon, _ = text.partition(": ")
    param = head if colon and head and " " not in head else None
    return UpstreamBadRequestError(
        text,
        deployment=deployment,
        status=status,
        upstream_code=error_type,
        upstream_type=error_type,
        param=param,
    )


def map_event_error(
    error_type: str | None,
    message: str,
    *,
    deployment: str,
    secret: str | None,
    now_wall: float,
) -> UpstreamError:
    """Map an in-stream ``event: error`` that arrived before any content."""
    status = ERROR_TYPE_STATUS.get(error_type or "", _HTTP_SERVER_ERROR)
    return map_error(
        status,
        error_type,
        message,
        {},
        deployment=deployment,
        secret=secret,
        now_wall=now_wall,
    )


def rejects_sampling(error: UpstreamError) -> bool:
    """Tell whether a 400 says the model refuses ``temperature``/``top_p``."""
    if not isinstance(error, UpstreamBadRequestError):
        return False
    text = error.message.lower()
    return any(name in text for name in _SAMPLING_NAMES) and any(
        verdict in text for verdict in _SAMPLING_VERDICTS
    )
