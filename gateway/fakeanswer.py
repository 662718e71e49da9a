"""What the fake upstream answers: a pure function of the conversation.

Outside the onion: test equipment, used by ``gateway.fakewire`` (which spells
the answer in each wire format) and by tests that need the expected text.

The answer depends on the conversation before any trailing assistant turn,
never on the model or the wire format, so a stream cut on one upstream can be
continued on another and still add up to the same text:

* a tool result as the last turn -> ``"Tool said: <result>"``;
* tools offered and a user turn last -> one call to the first tool with
  ``{"query": "<last user text>"}``;
* otherwise ``"Echo: <last user text>"``;

text answers padded or truncated to ``words`` words. A trailing assistant turn
is a prefill: only the rest of the full answer is produced. Token counts are
word counts. An embedding is a unit vector hashed from the text.
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
from typing import Any, Final

import msgspec

Json = dict[str, Any]

#: Words in an answer unless the ``words<n>`` modifier says otherwise.
WORDS: Final = 8
#: Dimension of the embedding vectors unless the request asks for ``dimensions``.
EMBEDDING_DIMS: Final = 8

_FILLER: Final = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "elit")
_TOKEN: Final = re.compile(r"\s*\S+|\s+")
_encode = msgspec.json.Encoder().encode


def split_tokens(text: str) -> list[str]:
    """Split ``text`` into word tokens that carry their leading whitespace."""
    return _TOKEN.findall(text)


def pad_words(text: str, words: int = WORDS) -> str:
    """Return the first ``words`` words of ``text``, padded with filler words."""
    parts = text.split()[:words]
    parts.extend(_FILLER[i % len(_FILLER)] for i in range(words - len(parts)))
    return " ".join(parts)


def echo_text(user_text: str, words: int = WORDS) -> str:
    """Return the full answer to a conversation whose last user text is given."""
    return pad_words(f"Echo: {user_text}", words)


def tool_text(result: str, words: int = WORDS) -> str:
    """Return the full answer to a conversation that ends with a tool result."""
    return pad_words(f"Tool said: {result}", words)


def tool_arguments(user_text: str) -> str:
    """Return the JSON arguments of the tool call made for ``user_text``."""
    return _encode({"query": user_text}).decode()


class Prompt(msgspec.Struct, frozen=True, kw_only=True):
    """What the fake reads from a request: the parts that decide the answer."""

    words: int
    user_text: str = ""
    tool_result: str | None = None
    #: The trailing assistant turn's text, or None when the user spoke last.
    prefill: str | None = None
    #: The tool to call, when tools were offered and a user turn is last.
    tool_name: str | None = None
    max_tokens: int | None = None


class ToolCall(msgspec.Struct, frozen=True):
    """The one tool call the fake makes."""

    id: str
    name: str
    arguments: str
    input: Json


class Answer(msgspec.Struct, frozen=True, kw_only=True):
    """What was produced: text tokens (or argument fragments) and the finish."""

    tokens: list[str]
    finish: str
    prompt_tokens: int
    tool: ToolCall | None = None

    @property
    def text(self) -> str:
        """Return the produced text (the arguments, for a tool call)."""
        return "".join(self.tokens)


def make_answer(prompt: Prompt, words: int = WORDS) -> Answer:
    """Return the deterministic answer to ``prompt``."""
    if prompt.tool_name is not None:
        arguments = tool_arguments(prompt.user_text)
        digest = hashlib.blake2s(arguments.encode(), digest_size=8).hexdigest()
        call = ToolCall(
            digest, prompt.tool_name, arguments, {"query": prompt.user_text}
        )
        return Answer(
            tokens=split_tokens(arguments),
            finish="tool_calls",
            prompt_tokens=prompt.words,
            tool=call,
        )
    if prompt.tool_result is not None:
        full = tool_text(prompt.tool_result, words)
    else:
        full = echo_text(prompt.user_text, words)
    # The gateway strips trailing whitespace off a prefill; slicing at its
    # length puts that whitespace back at the head of the continuation.
    if prompt.prefill and full.startswith(prompt.prefill):
        full = full[len(prompt.prefill) :]
    tokens = split_tokens(full)
    limit = prompt.max_tokens
    if limit is not None and len(tokens) > limit:
        return Answer(
            tokens=tokens[:limit], finish="length", prompt_tokens=prompt.words
        )
    return Answer(tokens=tokens, finish="stop", prompt_tokens=prompt.words)


def _text_of(content: object, sep: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return sep.join(
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") == "text"
            and isinstance(part.get("text"), str)
        )
    return ""


def count_words(node: object) -> int:
    """Count the words of every text and content string inside ``node``."""
    if isinstance(node, str):
        return len(node.split())
    if isinstance(node, list):
        return sum(count_words(item) for item in node)
    if isinstance(node, dict):
        return count_words(node.get("content")) + count_words(node.get("text"))
    return 0


def _messages(body: Json) -> list[Json]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty array")
    if not all(isinstance(m, dict) for m in messages):
        raise ValueError("each message must be an object")
    return messages


def _split_prefill(messages: list[Json]) -> tuple[list[Json], str | None]:
    if messages[-1].get("role") == "assistant":
        return messages[:-1], _text_of(messages[-1].get("content"), "")
    return messages, None


def _last_user_text(history: list[Json]) -> str:
    for message in reversed(history):
        if message.get("role") == "user":
            text = _text_of(message.get("content"), " ")
            if text:
                return text
    return ""


def _first_tool(tools: object) -> str | None:
    if not isinstance(tools, list) or not tools or not isinstance(tools[0], dict):
        return None
    tool = tools[0]
    function = tool.get("function")
    name = function.get("name") if isinstance(function, dict) else tool.get("name")
    return name if isinstance(name, str) else None


def _limit(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def openai_prompt(body: Json) -> Prompt:
    """Read a chat-completions request; raise ValueError if it is malformed."""
    messages = _messages(body)
    history, prefill = _split_prefill(messages)
    last = history[-1] if history else {}
    role = last.get("role")
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    return Prompt(
        words=count_words(messages),
        user_text=_last_user_text(history),
        tool_result=_text_of(last.get("content"), " ") if role == "tool" else None,
        prefill=prefill,
        tool_name=_first_tool(body.get("tools")) if role == "user" else None,
        max_tokens=_limit(limit),
    )


def _tool_result(message: Json) -> str | None:
    content = message.get("content")
    if message.get("role") != "user" or not isinstance(content, list):
        return None
    results = [
        b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"
    ]
    return _text_of(results[-1].get("content"), " ") if results else None


def anthropic_prompt(body: Json) -> Prompt:
    """Read a Messages request; raise ValueError if it is malformed."""
    messages = _messages(body)
    history, prefill = _split_prefill(messages)
    last = history[-1] if history else {}
    result = _tool_result(last)
    wants_tool = last.get("role") == "user" and result is None
    return Prompt(
        words=count_words(body.get("system")) + count_words(messages),
        user_text=_last_user_text(history),
        tool_result=result,
        prefill=prefill,
        tool_name=_first_tool(body.get("tools")) if wants_tool else None,
        max_tokens=_limit(body.get("max_tokens")),
    )


def embedding_bytes(text: str, dims: int = EMBEDDING_DIMS) -> bytes:
    """Return the unit vector for ``text`` as little-endian float32 bytes."""
    raw = struct.unpack(f"<{dims}I", hashlib.shake_256(text.encode()).digest(4 * dims))
    values = [v / 2**31 - 1.0 for v in raw]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return struct.pack(f"<{dims}f", *(v / norm for v in values))


def embedding_vector(text: str, dims: int = EMBEDDING_DIMS) -> list[float]:
    """Return the vector for ``text`` as floats (exactly the float32 values)."""
    return list(struct.unpack(f"<{dims}f", embedding_bytes(text, dims)))


def embedding_inputs(value: object) -> list[str]:
    """Return the texts of an embeddings ``input``; raise ValueError if invalid."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return list(value)
        if all(isinstance(v, int) for v in value):
            return [" ".join(map(str, value))]
        if all(isinstance(v, list) for v in value):
            return [" ".join(map(str, v)) for v in value]
    raise ValueError("'input' must be a string, an array of strings or token arrays")
