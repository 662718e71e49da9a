"""Embeddings answers: checked just enough, passed on as they came.

Innermost layer for ``/v1/embeddings``: an OpenAI-compatible upstream's JSON
goes back to the client unchanged (float lists or base64, whichever the client
asked for), after a check that it is an embeddings list; the mock provider's
deterministic vectors are made here too.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from typing import Any, Final

import msgspec

from providers.errors import UpstreamBadRequestError, UpstreamProtocolError
from providers.types import ChatResponse, Usage

#: Dimensions of a mock embedding unless the request asks for ``dimensions``.
MOCK_DIMENSIONS: Final = 16
_MAX_DIMENSIONS: Final = 4096
_encode: Final = msgspec.json.Encoder().encode


class _Embeddings(msgspec.Struct, gc=False):
    data: list[Any]
    model: str = ""
    usage: Usage | None = None


_decode_embeddings: Final = msgspec.json.Decoder(_Embeddings).decode


def read_embeddings(body: bytes, deployment: str, model: str) -> ChatResponse:
    """Return an upstream's embeddings JSON as is, once it looks like one."""
    try:
        answer = _decode_embeddings(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise UpstreamProtocolError(
            f"upstream {deployment} sent a body that is not an embeddings list",
            deployment=deployment,
        ) from exc
    return ChatResponse(body=body, model=answer.model or model, usage=answer.usage)


def mock_vector(text: str, dimensions: int) -> bytes:
    """Return a unit vector hashed from ``text``, as little-endian float32 bytes."""
    digest = hashlib.shake_256(text.encode()).digest(4 * dimensions)
    raw = struct.unpack(f"<{dimensions}I", digest)
    values = [v / 2**31 - 1.0 for v in raw]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return struct.pack(f"<{dimensions}f", *(v / norm for v in values))


def mock_embeddings(payload: dict[str, Any], model: str) -> ChatResponse:
    """Answer an embeddings request deterministically (the ``mock`` provider)."""
    texts = _texts(payload.get("input"), f"mock/{model}")
    dimensions = payload.get("dimensions", MOCK_DIMENSIONS)
    if not isinstance(dimensions, int) or not 1 <= dimensions <= _MAX_DIMENSIONS:
        raise _bad(
            f"mock/{model}",
            "`dimensions` must be an integer from 1 to 4096",
            "dimensions",
        )
    as_base64 = payload.get("encoding_format") == "base64"
    data = []
    for index, text in enumerate(texts):
        packed = mock_vector(text, dimensions)
        vector: object = (
            base64.b64encode(packed).decode()
            if as_base64
            else list(struct.unpack(f"<{dimensions}f", packed))
        )
        data.append({"object": "embedding", "index": index, "embedding": vector})
    tokens = sum(len(t.split()) for t in texts)
    usage = Usage(prompt_tokens=tokens, total_tokens=tokens)
    body = {"object": "list", "model": model, "data": data, "usage": usage}
    return ChatResponse(body=_encode(body), model=model, usage=usage)


def _texts(value: object, deployment: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return [str(v) for v in value]
        if all(isinstance(v, int) for v in value):
            return [" ".join(map(str, value))]
        if all(isinstance(v, list) for v in value):
            return [" ".join(map(str, v)) for v in value]
    raise _bad(deployment, "`input` must be a string, strings or token arrays", "input")


def _bad(deployment: str, message: str, param: str) -> UpstreamBadRequestError:
    return UpstreamBadRequestError(
        message, deployment=deployment, status=400, param=param
    )
